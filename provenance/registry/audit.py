"""The registry's append-only audit log: a hash chain over every record written, and its verification.

Every insert or update of a generation, asset, lineage edge or verification appends one
:class:`~provgen.provenance.registry.models.AuditEntry` in the same transaction (ORM session events installed
by :func:`install`; bulk writers call :func:`append`). An entry stores

* ``record_hash`` = sha256 of the canonical JSON of the record *as stored* (read back from the database, so
  what is hashed is exactly what a later check reads: no float/int or time-zone surprises), and
* ``entry_hash`` = sha256 of the canonical JSON of ``[prev_hash, created_at, record_type, record_id, action,
  record_hash]``, where ``prev_hash`` is the previous entry's ``entry_hash`` (64 zeros for the first).

``seq`` numbers the entries 1, 2, 3, ...; it is not hashed: the order is the chain of ``prev_hash`` links, so a
swap of two entries shows up as *reordered* rather than as two altered entries. Appends are serialised
(SQLite: the write lock taken at BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped advisory lock), so
concurrent writers extend one linear chain.

:func:`verify` recomputes everything: the chain links and entry hashes (entries altered, deleted, reordered)
and every record against its newest entry (records changed, deleted, or inserted behind the log's back), and
checks the signed checkpoints (:mod:`provgen.provenance.registry.checkpoints`).

The canonical JSON is written here (sorted keys, no spaces, UTF-8, no NaN) because it has to be byte-stable
across versions; RFC 8785 libraries differ from it only in float formatting, and every float here is a
Python repr that round-trips.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Connection, Double, Integer, LargeBinary, String, Table, event, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from provgen.core.errors import RegistryError
from provgen.provenance.registry.models import AUDITED, AuditEntry, UTCDateTime, utcnow

__all__ = [
    "GENESIS",
    "AUDIT_TYPES",
    "canonical_json",
    "record_hash",
    "entry_hash",
    "append",
    "backfill",
    "install",
    "lock_chain",
    "head",
    "Problem",
    "ChainReport",
    "verify",
]

#: ``prev_hash`` of the first entry
GENESIS = "0" * 64
#: record types in the order their entries are appended within one flush (parents before children)
AUDIT_TYPES: tuple[str, ...] = tuple(AUDITED)
#: key of the PostgreSQL advisory lock that serialises appends to the chain
AUDIT_LOCK_KEY = zlib.crc32(b"provgen.registry.audit")
_TABLES: dict[str, Table] = {name: model.__table__ for name, model in AUDITED.items()}  # type: ignore[misc]
_TYPE_OF: dict[type, str] = {model: name for name, model in AUDITED.items()}
_IN_CHUNK = 500
#: characters JSON escapes in a string
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')
_STREAM = 20_000
#: column types whose raw driver values are what SQLAlchemy hands back (Text, BigInteger are subclasses)
_AS_IS_TYPES = (String, Integer, Double)


# -- hashing --------------------------------------------------------------------------------------------


#: one encoder for every call (``json.dumps`` with options builds a new one each time: a third of the cost)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_AS_IS = frozenset({str, int, float, bool, type(None)})


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, NaN and infinities refused."""
    return _CANONICAL.encode(value).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "sha256:" + hashlib.sha256(bytes(value)).hexdigest()
    return value


def _iso(moment: datetime) -> str:
    if moment.tzinfo is not UTC:  # values read through UTCDateTime already are
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")


def _raw_iso(value: Any) -> str:
    """:func:`_iso` of a created_at as the driver returns it: a datetime (PostgreSQL) or SQLite's stored text
    ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC, as SQLAlchemy writes it), rewritten without parsing."""
    if isinstance(value, str):
        if len(value) == 26 and value[10] == " " and value[19] == ".":
            return f"{value[:10]}T{value[11:]}+00:00"
        value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
    return _iso(value)


def _entry_hash_fast(prev_hash: str, iso: str, record_type: str, record_id: str, action: str, digest: str) -> str:
    """:func:`entry_hash` with the canonical JSON of the six strings written by hand when none needs escaping
    (always, for entries provgen wrote): same bytes, a third of the time."""
    joined = '","'.join((prev_hash, iso, record_type, record_id, action, digest))
    if _NEEDS_ESCAPE.search(joined):
        return hashlib.sha256(canonical_json([prev_hash, iso, record_type, record_id, action, digest])).hexdigest()
    return hashlib.sha256(f'["{joined}"]'.encode()).hexdigest()


def record_hash(record_type: str, row: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON of one stored record (bytes columns enter as their sha256)."""
    body = {key: value if type(value) in _AS_IS else _plain(value) for key, value in row.items()}  # most: as is
    body["@type"] = record_type
    return hashlib.sha256(canonical_json(body)).hexdigest()


def entry_hash(
    prev_hash: str, created_at: datetime, record_type: str, record_id: str, action: str, record_hash_: str
) -> str:
    """sha256 hex of one audit entry, chained to ``prev_hash``."""
    body = [prev_hash, _iso(created_at), record_type, record_id, action, record_hash_]
    return hashlib.sha256(canonical_json(body)).hexdigest()


# -- appending ------------------------------------------------------------------------------------------


def lock_chain(conn: Connection) -> None:
    """Serialise appends: PostgreSQL takes a transaction-scoped advisory lock (re-entrant); SQLite writers
    already hold the database's write lock (BEGIN IMMEDIATE, or the first INSERT of the transaction)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})


def head(conn: Connection) -> tuple[int, str]:
    """``(seq, entry_hash)`` of the newest entry; ``(0, GENESIS)`` for an empty log."""
    row = conn.execute(select(AuditEntry.seq, AuditEntry.entry_hash).order_by(AuditEntry.seq.desc()).limit(1)).first()
    return (int(row[0]), str(row[1])) if row is not None else (0, GENESIS)


def _stored_rows(conn: Connection, record_type: str, ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    table = _TABLES[record_type]
    found: dict[str, Mapping[str, Any]] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        for row in conn.execute(select(table).where(table.c.id.in_(chunk))).mappings():
            found[row["id"]] = row
    return found


def append(conn: Connection, items: Iterable[tuple[str, str, str]], *, now: datetime | None = None) -> int:
    """Append one entry per ``(record_type, record_id, action)``, hashing each record as stored.

    Call inside the transaction that wrote the records. Returns the new head ``seq``.
    """
    items = list(items)
    if not items:
        return head(conn)[0]
    lock_chain(conn)
    rows: dict[str, dict[str, Mapping[str, Any]]] = {}
    for record_type in {t for t, _, _ in items}:
        if record_type not in _TABLES:
            raise RegistryError(f"record type {record_type!r} is not audited (known: {', '.join(AUDIT_TYPES)})")
        rows[record_type] = _stored_rows(conn, record_type, sorted({i for t, i, _ in items if t == record_type}))
    seq, prev = head(conn)
    moment = now or utcnow()
    entries = []
    for record_type, record_id, action in items:
        row = rows[record_type].get(record_id)
        if row is None:
            raise RegistryError(f"cannot audit {record_type} {record_id}: it is not in the registry")
        digest = record_hash(record_type, row)
        seq += 1
        new_hash = entry_hash(prev, moment, record_type, record_id, action, digest)
        entries.append(
            {
                "seq": seq,
                "created_at": moment,
                "record_type": record_type,
                "record_id": record_id,
                "action": action,
                "record_hash": digest,
                "prev_hash": prev,
                "entry_hash": new_hash,
            }
        )
        prev = new_hash
    conn.execute(insert(AuditEntry.__table__), entries)
    return seq


def backfill(conn: Connection) -> int:
    """Append entries for records that predate the audit log (after the upgrade that created it).

    Only when the log is empty; records go in creation order, generations before their assets.
    Returns the number of entries appended.
    """
    if head(conn)[0]:
        return 0
    items: list[tuple[str, str, str]] = []
    for record_type in AUDIT_TYPES:
        table = _TABLES[record_type]
        for (record_id,) in conn.execute(select(table.c.id).order_by(table.c.created_at, table.c.id)):
            items.append((record_type, record_id, "insert"))
    if items:
        append(conn, items)
    return len(items)


def install(factory: sessionmaker[Session]) -> None:
    """Audit every ORM flush of sessions made by ``factory``; refuse deletes of audited records."""

    @event.listens_for(factory, "before_flush")
    def _refuse_deletes(session: Session, flush_context: Any, instances: Any) -> None:
        for obj in session.deleted:
            if type(obj) in _TYPE_OF:
                raise RegistryError(
                    f"the registry is append-only: {_TYPE_OF[type(obj)]} {getattr(obj, 'id', '?')} cannot be "
                    "deleted (revoke it instead)"
                )

    @event.listens_for(factory, "after_flush")
    def _append(session: Session, flush_context: Any) -> None:
        items = [(_TYPE_OF[type(obj)], obj.id, "insert") for obj in session.new if type(obj) in _TYPE_OF]
        items += [
            (_TYPE_OF[type(obj)], obj.id, "update")
            for obj in session.dirty
            if type(obj) in _TYPE_OF and session.is_modified(obj, include_collections=False)
        ]
        if items:
            order = {name: index for index, name in enumerate(AUDIT_TYPES)}
            items.sort(key=lambda item: (order[item[0]], item[1]))
            append(session.connection(), items)


# -- verification ---------------------------------------------------------------------------------------


@dataclass
class Problem:
    """One thing wrong with the registry.

    ``kind``: ``changed`` (a record differs from what was logged), ``deleted`` (a logged record, or log
    entries, are gone), ``inserted`` (a record the log never saw), ``reordered`` (log entries moved),
    ``altered`` (a log entry's own hash does not match it), ``broken`` (a link of the chain is wrong),
    ``checkpoint`` (a signed checkpoint does not match the chain or its signature fails).
    """

    kind: str
    #: position (``seq``) in the audit log, where there is one
    position: int | None
    record_type: str | None
    record_id: str | None
    detail: str

    def __str__(self) -> str:
        where = f"position {self.position}" if self.position is not None else "not in the log"
        what = f"{self.record_type} {self.record_id}" if self.record_id else "audit log"
        return f"{self.kind}: {what} ({where}): {self.detail}"


@dataclass
class ChainReport:
    ok: bool = True
    entries: int = 0
    records: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    #: processes that did the hashing
    workers: int = 1

    def add(self, problem: Problem) -> None:
        self.ok = False
        self.problems.append(problem)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _order_by_id(conn: Connection, column: Any) -> Any:
    # Both streams of the merge must be in the same order as Python's str comparison: bytewise ("C").
    return column.collate("C") if conn.dialect.name == "postgresql" else column


def _stream(conn: Connection, statement: Any) -> Iterator[Any]:
    return iter(conn.execution_options(yield_per=_STREAM).execute(statement))


@dataclass
class LinkSlice:
    """What one pass over the audit entries with ``lo <= seq < hi`` found (see :func:`link_slice`)."""

    entries: int = 0
    #: deleted gaps and altered entries inside the slice
    problems: list[Problem] = field(default_factory=list)
    #: links to the previous entry that do not match it: (seq, prev_hash, record_type, record_id)
    broken: list[tuple[int, str, str, str]] = field(default_factory=list)
    #: (seq, prev_hash, record_type, record_id) of the first entry, (seq, entry_hash) of the last
    first: tuple[int, str, str, str] | None = None
    last: tuple[int, str] | None = None


def link_slice(conn: Connection, lo: int = 1, hi: int | None = None) -> LinkSlice:
    """Check the entries with ``lo <= seq < hi`` (all from ``lo`` when ``hi`` is None): each entry against its
    own hash, each link against the entry before it in the slice, and the positions for gaps. The first
    entry's link and a gap before it are for :func:`merge_link_slices`, which sees the neighbouring slice."""
    # Raw driver rows (no result processing): this loop is the hot path of `registry verify`.
    sql = (
        "SELECT seq, created_at, record_type, record_id, action, record_hash, prev_hash, entry_hash "
        f"FROM audit_log WHERE seq >= {int(lo)}" + (f" AND seq < {int(hi)}" if hi is not None else "") + " ORDER BY seq"
    )
    out = LinkSlice()
    rows = iter(conn.execution_options(yield_per=_STREAM).exec_driver_sql(sql))
    head = next(rows, None)
    if head is None:
        return out
    out.first = (head[0], head[6], head[2], head[3])
    expected_seq, last_hash = head[0], head[6]
    problems, broken = out.problems, out.broken
    entries = 0
    for seq, created_at, record_type, record_id, action, rec_hash, prev_hash, stored_hash in itertools.chain(
        (head,), rows
    ):
        entries += 1
        if seq != expected_seq:
            if seq > expected_seq:
                span = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}..{seq - 1}"
                problems.append(
                    Problem(
                        "deleted",
                        expected_seq,
                        None,
                        None,
                        f"audit entries at positions {span} are missing (deleted from the log)",
                    )
                )
            expected_seq = seq
        computed = _entry_hash_fast(prev_hash, _raw_iso(created_at), record_type, record_id, action, rec_hash)
        if computed != stored_hash:
            problems.append(
                Problem(
                    "altered",
                    seq,
                    record_type,
                    record_id,
                    "the audit entry does not match its own hash (the entry was edited)",
                )
            )
        if prev_hash != last_hash:
            broken.append((seq, prev_hash, record_type, record_id))
        last_hash = stored_hash
        expected_seq += 1
    out.entries = entries
    out.last = (expected_seq - 1, last_hash)
    return out


def merge_link_slices(conn: Connection, slices: Sequence[LinkSlice], report: ChainReport) -> None:
    """Join the slices of :func:`link_slice`, in ``seq`` order, into ``report``: the links and gaps between
    them, then what the broken links mean (entries moved, or an earlier entry replaced)."""
    last_seq, last_hash = 0, GENESIS
    broken: list[tuple[int, str, str, str]] = []
    for part in slices:
        if part.first is None or part.last is None:
            continue
        seq, prev_hash, record_type, record_id = part.first
        if seq > last_seq + 1:
            span = f"{last_seq + 1}" if seq == last_seq + 2 else f"{last_seq + 1}..{seq - 1}"
            detail = f"audit entries at positions {span} are missing (deleted from the log)"
            report.add(Problem("deleted", last_seq + 1, None, None, detail))
        if prev_hash != last_hash:
            broken.append(part.first)
        for problem in part.problems:
            report.add(problem)
        broken.extend(part.broken)
        report.entries += part.entries
        last_seq, last_hash = part.last
    report.head_seq, report.head_hash = last_seq, last_hash
    if not broken:
        return
    wanted = {prev for _, prev, _, _ in broken}
    where: dict[str, int] = {}
    cols = AuditEntry.__table__.c
    for seq, stored_hash in _stream(conn, select(cols.seq, cols.entry_hash).order_by(cols.seq)):
        if stored_hash in wanted:
            where[stored_hash] = seq
    reported = {p.position for p in report.problems}
    for seq, prev, record_type, record_id in broken:
        if prev in where and where[prev] != seq - 1:
            report.add(
                Problem(
                    "reordered",
                    seq,
                    record_type,
                    record_id,
                    f"the entry was chained after position {where[prev]}, not {seq - 1} (entries were moved)",
                )
            )
        elif seq in reported or (seq - 1) in reported:
            continue  # a gap or an altered entry just before explains the broken link
        else:
            report.add(
                Problem(
                    "broken",
                    seq,
                    record_type,
                    record_id,
                    f"the link to position {seq - 1} is wrong (an earlier entry was replaced)",
                )
            )


def record_slice(
    conn: Connection, record_type: str, id_lo: str | None = None, id_hi: str | None = None
) -> tuple[int, list[Problem]]:
    """Check the ``record_type`` records with ``id_lo <= id < id_hi`` (bounds optional) against their newest
    audit entries: (records read, problems). Ids are lowercase hex, compared bytewise."""
    cols = AuditEntry.__table__.c
    table = _TABLES[record_type]
    logged_stmt = select(cols.record_id, cols.seq, cols.record_hash).where(cols.record_type == record_type)
    stored_stmt = select(table)
    for bound, column in ((id_lo, "lo"), (id_hi, "hi")):
        if bound is None:
            continue
        logged_col, stored_col = _order_by_id(conn, cols.record_id), _order_by_id(conn, table.c.id)
        if column == "lo":
            logged_stmt, stored_stmt = logged_stmt.where(logged_col >= bound), stored_stmt.where(stored_col >= bound)
        else:
            logged_stmt, stored_stmt = logged_stmt.where(logged_col < bound), stored_stmt.where(stored_col < bound)
    logged = _raw_stream(conn, logged_stmt.order_by(_order_by_id(conn, cols.record_id), cols.seq))
    stored = _raw_stream(conn, stored_stmt.order_by(_order_by_id(conn, table.c.id)))
    hasher = _RawRecordHasher(conn, record_type)
    problems: list[Problem] = []
    records = 0
    for record_id, last, row in _merge(_newest_per_id(logged), stored):
        if row is not None:
            records += 1
        if last is None:
            problems.append(
                Problem(
                    "inserted",
                    None,
                    record_type,
                    record_id,
                    "the record is not in the audit log (written behind the registry's back)",
                )
            )
        elif row is None:
            problems.append(
                Problem("deleted", last[0], record_type, record_id, "the logged record is gone from its table")
            )
        elif hasher(row) != last[1]:
            problems.append(
                Problem(
                    "changed",
                    last[0],
                    record_type,
                    record_id,
                    "the record differs from what the audit log recorded",
                )
            )
    return records, problems


def _raw_stream(conn: Connection, statement: Any) -> Iterator[Any]:
    """Rows as the driver returns them (no SQLAlchemy result processing: half the time of a re-hash)."""
    sql = statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    return iter(conn.execution_options(yield_per=_STREAM).exec_driver_sql(str(sql)))


class _RawRecordHasher:
    """:func:`record_hash` of a raw driver row of ``record_type``'s table: each column is turned into what
    SQLAlchemy would have handed back (and :func:`_plain` then made of it) before hashing, so the digest is the
    same; ``tests/test_audit.py`` compares both on every column type of every audited table."""

    def __init__(self, conn: Connection, record_type: str) -> None:
        self.record_type = record_type
        table = _TABLES[record_type]
        self.names = list(table.c.keys())
        if self.names[0] != "id":
            raise AssertionError(f"{table.name}: the id must be the first column (the merge reads row[0])")
        self.convert: list[tuple[int, Any]] = []
        for index, column in enumerate(table.c):
            kind = column.type
            if isinstance(kind, UTCDateTime):
                self.convert.append((index, _raw_iso))
            elif isinstance(kind, LargeBinary):
                self.convert.append((index, _plain))
            elif isinstance(kind, JSON):
                if conn.dialect.name == "sqlite":  # stored as text; psycopg hands back parsed JSON already
                    self.convert.append((index, json.loads))
            elif not isinstance(kind, _AS_IS_TYPES):  # a new column type: decide how it reads back raw
                raise AssertionError(f"{table.name}.{column.name}: no raw conversion for {kind!r}")

    def __call__(self, row: Sequence[Any]) -> str:
        values = list(row)
        for index, convert in self.convert:
            if values[index] is not None:
                values[index] = convert(values[index])
        body = dict(zip(self.names, values, strict=True))
        body["@type"] = self.record_type
        return hashlib.sha256(_CANONICAL.encode(body).encode()).hexdigest()


def _newest_per_id(rows: Iterator[Any]) -> Iterator[tuple[str, tuple[int, str]]]:
    current: str | None = None
    newest: tuple[int, str] = (0, "")
    for record_id, seq, digest in rows:
        if record_id != current:
            if current is not None:
                yield current, newest
            current = record_id
        newest = (seq, digest)
    if current is not None:
        yield current, newest


def _merge(
    logged: Iterator[tuple[str, tuple[int, str]]], stored: Iterator[Any]
) -> Iterator[tuple[str, tuple[int, str] | None, Any]]:
    """Merge two id-ordered streams: (id, newest entry or None, row or None)."""
    sentinel = object()
    a = next(logged, sentinel)
    b = next(stored, sentinel)
    while a is not sentinel or b is not sentinel:
        a_id = a[0] if a is not sentinel else None  # type: ignore[index]
        b_id = b[0] if b is not sentinel else None  # type: ignore[index]  (id is the first column)
        if b_id is None or (a_id is not None and a_id < b_id):
            yield a_id, a[1], None  # type: ignore[index,misc]
            a = next(logged, sentinel)
        elif a_id is None or b_id < a_id:
            yield b_id, None, b
            b = next(stored, sentinel)
        else:
            yield a_id, a[1], b  # type: ignore[index]
            a, b = next(logged, sentinel), next(stored, sentinel)


def verify(conn: Connection, *, records: bool = True, checkpoints: Iterable[Any] = ()) -> ChainReport:
    """Recompute the chain (and, with ``records``, every record against it) and check ``checkpoints``.

    ``checkpoints`` are objects with ``seq``, ``head_hash`` and ``id`` (already signature-checked, see
    :mod:`provgen.provenance.registry.checkpoints`); each must still match the entry at its ``seq``.
    """
    report = ChainReport()
    t0 = time.perf_counter()
    merge_link_slices(conn, [link_slice(conn)], report)
    t1 = time.perf_counter()
    report.seconds["chain"] = round(t1 - t0, 4)
    if records:
        for record_type in AUDIT_TYPES:
            count, problems = record_slice(conn, record_type)
            report.records += count
            for problem in problems:
                report.add(problem)
        report.seconds["records"] = round(time.perf_counter() - t1, 4)
    check_checkpoints(conn, checkpoints, report)
    return report


def check_checkpoints(conn: Connection, checkpoints: Iterable[Any], report: ChainReport) -> None:
    """Each checkpoint (``seq``, ``head_hash``, ``id``; signature already checked) must match its entry."""
    for point in checkpoints:
        stored = conn.execute(select(AuditEntry.entry_hash).where(AuditEntry.seq == point.seq)).scalar()
        if stored != point.head_hash:
            report.add(
                Problem(
                    "checkpoint",
                    point.seq,
                    None,
                    None,
                    f"checkpoint {point.id} signed entry {point.seq} with hash {point.head_hash[:16]}…, "
                    f"the log now has {str(stored)[:16] + '…' if stored else 'no such entry'}: "
                    "the log was rewritten after the checkpoint",
                )
            )
