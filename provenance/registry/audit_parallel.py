"""Verify the audit chain with several processes: the same checks as :func:`audit.verify`, split in slices.

Hashing is pure-Python work, so threads would share one core; processes do not. The entries are cut into
``seq`` ranges (:func:`audit.link_slice`, joined by :func:`audit.merge_link_slices`) and the records into
id ranges per record type (:func:`audit.record_slice`). Every worker opens its own connection:

* PostgreSQL: the parent opens a ``REPEATABLE READ`` transaction, exports its snapshot
  (``pg_export_snapshot()``), and every worker reads in that same snapshot: writers may keep writing.
* SQLite: each worker reads in its own snapshot; the entries are bounded by the newest ``seq`` the parent saw,
  and each record slice reads a record and its entries in one transaction, so a concurrent writer cannot
  show up as a problem.

Workers are spawned (not forked: the parent holds database connections that a child must not touch) and cost
about half a second each to start, so :func:`workers_for` keeps small registries serial. Spawning imports the
caller's ``__main__`` module again in each worker: a script that verifies with ``workers > 1`` needs the usual
``if __name__ == "__main__":`` guard (the ``provgen`` command has it).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, func, select
from sqlalchemy.pool import NullPool

from provgen.provenance.registry import audit, db
from provgen.provenance.registry.models import AuditEntry

__all__ = ["MIN_ENTRIES_PER_WORKER", "workers_for", "verify"]

#: below this many entries per extra worker, starting a process costs more than it saves
MIN_ENTRIES_PER_WORKER = 100_000
#: record id ranges per worker and record type (more, smaller tasks even out the load)
_ID_RANGES_PER_WORKER = 2


def workers_for(engine: Engine, entries: int, requested: int | None = None) -> int:
    """How many processes to verify ``entries`` entries with: ``requested`` if given, else one per CPU core
    (at most 8) while each gets at least :data:`MIN_ENTRIES_PER_WORKER`; 1 for in-memory SQLite."""
    database = engine.url.database or ""
    if engine.dialect.name == "sqlite" and (database in ("", ":memory:") or database.startswith("file:")):
        return 1
    if requested is not None:
        return max(1, requested)
    return max(1, min(os.cpu_count() or 1, 8, entries // MIN_ENTRIES_PER_WORKER))


def entry_count(conn: Connection) -> int:
    return conn.execute(select(func.max(AuditEntry.seq))).scalar() or 0


def verify(
    engine: Engine, *, workers: int, records: bool = True, checkpoints: Iterable[Any] = ()
) -> audit.ChainReport:
    """:func:`audit.verify` over ``workers`` processes (``workers`` >= 2; see :func:`workers_for`)."""
    url = engine.url.render_as_string(hide_password=False)  # to the workers only, never printed
    report = audit.ChainReport()
    with _snapshot(engine) as (conn, snapshot):
        top = entry_count(conn)
        bounds = [1 + top * k // workers for k in range(workers)] + [top + 1]
        link_tasks = [("links", url, snapshot, (lo, hi)) for lo, hi in zip(bounds, bounds[1:], strict=False)]
        cuts = _hex_cuts(workers * _ID_RANGES_PER_WORKER)
        record_tasks = [
            ("records", url, snapshot, (record_type, lo, hi))
            for record_type in audit.AUDIT_TYPES
            for lo, hi in zip(cuts, cuts[1:], strict=False)
        ]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            started = time.perf_counter()
            list(pool.map(_warm_up, range(workers)))  # start every worker (and its imports) before timing
            t0 = time.perf_counter()
            report.seconds["startup"] = round(t0 - started, 4)
            slices = list(pool.map(_run, link_tasks))
            audit.merge_link_slices(conn, slices, report)
            t1 = time.perf_counter()
            report.seconds["chain"] = round(t1 - t0, 4)
            if records:
                for count, problems in pool.map(_run, record_tasks):
                    report.records += count
                    for problem in problems:
                        report.add(problem)
                report.seconds["records"] = round(time.perf_counter() - t1, 4)
        audit.check_checkpoints(conn, checkpoints, report)
    return report


def _hex_cuts(parts: int) -> list[str | None]:
    """``parts`` + 1 bounds that cut lowercase hex ids into ranges of about equal size (uuid4 ids are uniform):
    None, "1000", "2000", ..., None."""
    width = 4
    return [None] + [f"{(16**width) * k // parts:0{width}x}" for k in range(1, parts)] + [None]


@contextmanager
def _snapshot(engine: Engine) -> Any:
    """A connection in a read transaction, and the id of its exported snapshot (PostgreSQL) or None."""
    if engine.dialect.name != "postgresql":
        with engine.connect() as conn:
            yield conn, None
        return
    with engine.connect() as base:
        conn = base.execution_options(isolation_level="REPEATABLE READ")
        snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
        yield conn, snapshot


def _warm_up(_: int) -> None:
    time.sleep(0.05)  # long enough that the pool starts a process for each call


_ENGINES: dict[str, Engine] = {}


def _worker_engine(url: str) -> Engine:
    if url not in _ENGINES:
        if url.startswith("postgresql"):
            # no pool, no pre-ping: the snapshot must be the first statement of the worker's transaction
            _ENGINES[url] = create_engine(url, poolclass=NullPool)
        else:
            _ENGINES[url] = db.make_engine(url)
    return _ENGINES[url]


def _run(task: tuple[str, str, str | None, tuple[Any, ...]]) -> Any:
    kind, url, snapshot, args = task
    engine = _worker_engine(url)
    with engine.connect() as conn:
        if snapshot is not None:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        if kind == "links":
            return audit.link_slice(conn, *args)
        return audit.record_slice(conn, *args)
