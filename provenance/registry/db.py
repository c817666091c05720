"""Engines and schema migrations of the lineage registry.

``make_engine(url)`` builds a configured engine for SQLite or PostgreSQL (psycopg 3); ``upgrade(engine)``
runs the Alembic revisions shipped in ``migrations/`` programmatically, on the engine's own connection.
Every database error a user can meet leaves this module as a :class:`~provgen.core.errors.RegistryError`
naming the URL (password masked).
"""

from __future__ import annotations

import importlib.util
import io
import re
import sqlite3
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.pool import StaticPool

from provgen.core.errors import RegistryError

__all__ = [
    "MIGRATIONS_DIR",
    "make_engine",
    "mask_url",
    "alembic_config",
    "head_revision",
    "current_revision",
    "ensure_known_revision",
    "upgrade",
    "downgrade",
    "check",
    "translate_error",
    "read_engine",
    "write_engine",
]

#: the migrations package as a real folder (alembic's ``pkg:`` resource path is untested upstream)
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: default time a SQLite writer waits for another process's lock before giving up
SQLITE_BUSY_TIMEOUT_MS = 10_000
#: seconds to wait for a PostgreSQL server to answer before reporting it unreachable
PG_CONNECT_TIMEOUT_S = 10
#: key of the PostgreSQL advisory lock that serialises concurrent schema upgrades
_PG_UPGRADE_LOCK = zlib.crc32(b"provgen.registry.upgrade")

_SQLITE_DRIVERS = {"sqlite", "sqlite+pysqlite"}
_PG_DRIVERS = {"postgresql", "postgres", "postgresql+psycopg"}
_PASSWORD_IN_URL = re.compile(r"(://[^:/@]*:)[^@]*@")


# -- URLs -----------------------------------------------------------------------------------------------


def mask_url(url: str | URL) -> str:
    """``url`` as a string with any password replaced by ``***``; works on unparseable strings too."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return _PASSWORD_IN_URL.sub(r"\1***@", url)


def _parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise RegistryError(
            f"`{mask_url(url)}` is not a database URL; use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
        ) from None  # the parser's message would repeat the URL unmasked
    driver = parsed.drivername
    if driver in _SQLITE_DRIVERS:
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database).expanduser().resolve()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RegistryError(
                    f"cannot create the folder for the registry `{mask_url(parsed)}`: {exc}"
                ) from exc
            parsed = parsed.set(database=str(path))
        return parsed.set(drivername="sqlite")
    if driver in _PG_DRIVERS:
        if importlib.util.find_spec("psycopg") is None:
            raise RegistryError(
                f"the registry URL `{mask_url(parsed)}` needs the PostgreSQL driver psycopg 3; "
                "install it with: pip install 'provgen[postgres]'"
            )
        return parsed.set(drivername="postgresql+psycopg")
    raise RegistryError(
        f"unsupported registry URL scheme `{driver}` in `{mask_url(parsed)}`; "
        "use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB (also postgresql://, postgres://)"
    )


# -- engines --------------------------------------------------------------------------------------------


def make_engine(url: str, *, sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> Engine:
    """A configured engine for ``sqlite:///PATH`` or ``postgresql+psycopg://`` (also ``postgresql://``, ``postgres://``).

    SQLite: the parent folder is created, foreign keys are enforced, the journal is WAL (readers never block
    the writer), ``synchronous=NORMAL`` and writers wait up to ``sqlite_busy_timeout_ms`` for a lock.
    SQLAlchemy, not the sqlite3 module, emits ``BEGIN`` so that a connection with the execution option
    ``sqlite_begin="IMMEDIATE"`` takes the write lock up front (no deadlock-prone lock upgrade later).
    Connecting is lazy: an unreachable server shows up on first use (see ``open_registry``).
    """
    parsed = _parse_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.drivername == "sqlite":
        in_memory = parsed.database in (None, "", ":memory:")
        if in_memory:  # one shared in-memory database for the whole engine
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        engine = create_engine(parsed, **kwargs)
        _install_sqlite_listeners(engine, sqlite_busy_timeout_ms)
        return engine
    # A pooled connection to a server can die (restart, idle timeout): test it on checkout. A local SQLite file
    # has nothing to lose, so SQLite skips the ping (a third of a lookup's time).
    return create_engine(parsed, pool_pre_ping=True, **_server_kwargs(parsed))


def _server_kwargs(url: URL) -> dict[str, Any]:
    return {} if "connect_timeout" in url.query else {"connect_args": {"connect_timeout": PG_CONNECT_TIMEOUT_S}}


def _install_sqlite_listeners(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (see _on_begin)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            _enable_wal(cursor, busy_timeout_ms)
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "")
        if mode == "NONE":  # autocommit: each statement is its own transaction (see read_engine)
            return
        if mode not in ("", "DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
            raise ValueError(f"sqlite_begin={mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())


def _enable_wal(cursor: Any, busy_timeout_ms: int) -> None:
    """Put the database in WAL mode, retrying while another connection holds it.

    Hand-written retry because SQLite answers ``PRAGMA journal_mode=WAL`` with "database is locked" at once,
    without calling the busy handler, while another connection has the (not yet WAL) file open, e.g. when
    several processes open a brand-new registry together. Once the file is in WAL mode the pragma is a no-op.
    """
    deadline = time.monotonic() + busy_timeout_ms / 1000
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def read_engine(engine: Engine) -> Engine:
    """An engine for single-statement reads from ``engine``'s database: autocommit (no BEGIN/ROLLBACK round
    trips) and, on a server, its own pool that does not ping connections before use: the caller repeats a read
    that met a dropped connection (see ``Registry.read``)."""
    if engine.dialect.name == "sqlite":
        # not isolation_level="AUTOCOMMIT": on pysqlite that toggles the sqlite3 module's own implicit BEGIN,
        # which would clash with the explicit BEGIN this module emits
        return engine.execution_options(sqlite_begin="NONE")
    return create_engine(engine.url, pool_pre_ping=False, isolation_level="AUTOCOMMIT", **_server_kwargs(engine.url))


def write_engine(engine: Engine) -> Engine:
    """``engine`` set up for a write transaction: on SQLite it takes the write lock at BEGIN."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(sqlite_begin="IMMEDIATE")
    return engine


# -- errors ---------------------------------------------------------------------------------------------


def translate_error(exc: DBAPIError, engine: Engine, doing: str, hint: str = "") -> RegistryError:
    """A clear :class:`RegistryError` for a database error met while ``doing`` something (password masked).

    ``doing`` ends with "the registry" (e.g. "writing to the registry"); the masked URL follows it.
    """
    url = mask_url(engine.url)
    detail = _scrub(str(exc.orig) if exc.orig is not None else str(exc), engine.url).strip()
    detail = " ".join(line.strip() for line in detail.splitlines()[:2]) or type(exc).__name__
    if engine.dialect.name == "sqlite" and isinstance(exc, OperationalError) and "is locked" in detail:
        return RegistryError(
            f"{doing} `{url}` failed: another process holds the SQLite file locked (gave up waiting "
            "for it); retry when that process is done, or use PostgreSQL for many concurrent writers"
        )
    if isinstance(exc, IntegrityError):
        return RegistryError(f"{doing} `{url}` was refused, nothing was written: {detail}")
    message = f"{doing} `{url}` failed: {type(exc.orig or exc).__name__}: {detail}"
    return RegistryError(f"{message}; {hint}" if hint else message)


def _scrub(message: str, url: URL) -> str:
    if url.password and len(str(url.password)) >= 3:  # shorter ones would mangle the text, not hide much
        message = message.replace(str(url.password), "***")
    return message


# -- migrations -----------------------------------------------------------------------------------------


def alembic_config(connection: Connection | None = None, *, stdout: Any = None) -> Config:
    """An Alembic config for the shipped migrations; ``connection`` is shared with ``env.py`` when given."""
    cfg = Config(stdout=stdout if stdout is not None else io.StringIO())
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest revision this provgen knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RegistryError(f"no registry migrations found in {MIGRATIONS_DIR}; reinstall provgen")
    return head


def _current_revision(conn: Connection) -> str | None:
    heads = MigrationContext.configure(conn).get_current_heads()
    if len(heads) > 1:
        raise RegistryError(f"the registry has several schema heads {sorted(heads)}; provgen did not make it")
    return heads[0] if heads else None


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; ``None`` for a blank database."""
    try:
        with engine.connect() as conn:
            return _current_revision(conn)
    except DBAPIError as exc:
        raise translate_error(exc, engine, "reading the schema revision of the registry") from exc


def _ensure_known(conn: Connection, engine: Engine) -> str | None:
    revision = _current_revision(conn)
    if revision is None:
        return None
    script = ScriptDirectory.from_config(alembic_config())
    try:
        known = script.get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        raise RegistryError(
            f"the registry `{mask_url(engine.url)}` is at schema revision {revision!r}, which this provgen "
            f"does not know (newest here: {head_revision()!r}): it was created by a newer provgen; "
            "upgrade provgen to use it"
        )
    return revision


def ensure_known_revision(engine: Engine) -> str | None:
    """The database's revision (``None`` if blank); :class:`RegistryError` if a newer provgen created it."""
    try:
        with engine.connect() as conn:
            return _ensure_known(conn, engine)
    except DBAPIError as exc:
        raise translate_error(exc, engine, "reading the schema revision of the registry") from exc


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (default: the newest), in one transaction.

    Concurrent upgrades are serialised (SQLite: write lock at BEGIN; PostgreSQL: an advisory lock).
    Raises :class:`RegistryError` if the database was created by a newer provgen or a step fails.
    """
    _migrate(engine, "upgrading", command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the database back to ``revision`` (``"base"`` drops every table). For maintenance and tests."""
    _migrate(engine, "downgrading", command.downgrade, revision)


def _migrate(engine: Engine, doing: str, step: Callable[[Config, str], None], revision: str) -> None:
    """Run one Alembic command in a single transaction, serialised against other processes."""
    try:
        with write_engine(engine).begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_UPGRADE_LOCK})
            _ensure_known(conn, engine)
            step(alembic_config(conn), revision)
            if step is command.upgrade and _has_audit_log(conn):
                from provgen.provenance.registry.audit import backfill

                backfill(conn)  # records older than the audit log enter it once, in creation order
    except DBAPIError as exc:
        raise translate_error(exc, engine, f"{doing} the schema of the registry") from exc
    except CommandError as exc:
        raise RegistryError(f"{doing} the registry `{mask_url(engine.url)}` failed: {exc}") from exc


def _has_audit_log(conn: Connection) -> bool:
    from sqlalchemy import inspect

    return inspect(conn).has_table("audit_log")


def check(engine: Engine) -> None:
    """Raise :class:`RegistryError` if the models and the migrations have drifted apart (``alembic check``).

    The database must be at head; compare against a freshly upgraded one.
    """
    try:
        with engine.connect() as conn:
            command.check(alembic_config(conn))
    except DBAPIError as exc:
        raise translate_error(exc, engine, "checking the schema of the registry") from exc
    except CommandError as exc:  # AutogenerateDiffsDetected is a CommandError
        raise RegistryError(
            f"registry models and migrations differ on `{mask_url(engine.url)}`: {exc}"
        ) from exc
