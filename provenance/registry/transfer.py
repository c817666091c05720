"""Export the whole registry for an auditor, and import such an export into another registry.

The format (``provgen-registry/1``, JSON Lines, UTF-8) is documented in ``docs/registry_export.md``:

* line 1, a header: ``{"type": "header", "format": "provgen-registry/1", "schema_revision": ..., "exported_at":
  ..., "counts": {...}, "head": {"seq": ..., "entry_hash": ...}}``;
* then, in audit-log order, each audit entry (``"type": "audit"``), followed by the record it inserted
  (``generation``, ``asset``, ``edge`` or ``verification``, its row as stored *now*) and by the signed
  checkpoints of that entry (``checkpoint``); so parents come before children;
* then records the audit log never saw (a tampered registry's), and checkpoints past the head, if any.

Every line has every column of its table; bytes are base64, times ISO 8601 UTC with microseconds. Audit
entries and checkpoints are copied verbatim, so an imported registry verifies with the same head hash.

:func:`import_jsonl` writes with Core inserts (never ORM sessions, which would append new audit entries) in
one transaction; it refuses, writing nothing, a file that is not an export, is corrupt or truncated, whose
chain does not extend the target's, whose ids collide with the target's, or after which the chain does not
verify. Importing a newer export of the same registry adds just what is new (the target's chain is a prefix
of the file's); importing the same file again changes nothing.

Both directions stream: export reads with ``yield_per`` and writes line by line; import reads line by line
and inserts in batches.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    JSON,
    Connection,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    String,
    Table,
    TypeDecorator,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from provgen.core.errors import RegistryError
from provgen.provenance.registry import audit, db
from provgen.provenance.registry.models import AUDITED, AuditEntry, Checkpoint, utcnow
from provgen.provenance.registry.store import Registry

__all__ = ["FORMAT", "RECORD_TYPES", "ImportResult", "export_jsonl", "import_jsonl"]

#: value of the header's ``format``
FORMAT = "provgen-registry/1"
#: line ``type`` -> table, in the order a batch is inserted (parents first)
RECORD_TYPES: dict[str, Table] = {
    **{name: model.__table__ for name, model in AUDITED.items()},  # type: ignore[misc]
    "audit": AuditEntry.__table__,  # type: ignore[dict-item]
    "checkpoint": Checkpoint.__table__,  # type: ignore[dict-item]
}
#: rows read (export) or written (import) per round trip
BATCH = 1000
_IN_CHUNK = 500
_MAX_PROBLEMS_SHOWN = 5


# -- values ---------------------------------------------------------------------------------------------


def _kind(column: Any) -> type:
    """How a column travels: datetime (ISO text), bytes (base64), int, float, str or object (JSON, as is)."""
    kind = column.type.impl if isinstance(column.type, TypeDecorator) else column.type
    for sql_type, python in (
        (DateTime, datetime),
        (LargeBinary, bytes),
        (JSON, object),
        (Integer, int),
        (Float, float),
        (String, str),
    ):
        if isinstance(kind, sql_type):
            return python
    raise TypeError(f"no export encoding for column {column} of type {column.type!r}")  # a new column type


def _kinds(table: Table) -> dict[str, tuple[type, bool]]:
    """column name -> (python type, nullable)."""
    return {column.name: (_kind(column), bool(column.nullable)) for column in table.columns}


_KINDS = {name: _kinds(table) for name, table in RECORD_TYPES.items()}


def _encode(record_type: str, row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": record_type}
    for name in _KINDS[record_type]:
        value = row[name]
        if isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat(timespec="microseconds")
        elif isinstance(value, (bytes, bytearray, memoryview)):
            value = base64.b64encode(bytes(value)).decode("ascii")
        out[name] = value
    return out


def _line(data: Mapping[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"


class _BadLine(Exception):
    """A line that cannot be imported; the message says why (the caller adds the line number)."""


def _decode(record_type: str, data: Mapping[str, Any]) -> dict[str, Any]:
    kinds = _KINDS[record_type]
    extra = sorted(set(data) - set(kinds) - {"type"})
    missing = sorted(set(kinds) - set(data))
    if extra or missing:
        parts = ([f"unknown field(s) {', '.join(extra)}"] if extra else []) + (
            [f"missing field(s) {', '.join(missing)}"] if missing else []
        )
        raise _BadLine(f"{record_type} record: {'; '.join(parts)}")
    row: dict[str, Any] = {}
    for name, (kind, nullable) in kinds.items():
        value = data[name]
        if value is None:
            if not nullable:
                raise _BadLine(f"{record_type}.{name} is null")
        elif kind is datetime:
            value = _datetime(record_type, name, value)
        elif kind is bytes:
            if not isinstance(value, str):
                raise _BadLine(f"{record_type}.{name} must be base64 text")
            try:
                value = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise _BadLine(f"{record_type}.{name} is not valid base64") from None
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _BadLine(f"{record_type}.{name} must be an integer, got {value!r}")
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _BadLine(f"{record_type}.{name} must be a number, got {value!r}")
            value = float(value)
        elif kind is str:
            if not isinstance(value, str):
                raise _BadLine(f"{record_type}.{name} must be a string, got {value!r}")
        row[name] = value
    return row


def _datetime(record_type: str, name: str, value: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or moment.utcoffset() is None:
        raise _BadLine(f"{record_type}.{name} must be an ISO 8601 time with a UTC offset, got {value!r}")
    return moment.astimezone(UTC)


# -- export ---------------------------------------------------------------------------------------------


def _revision(conn: Connection) -> str | None:
    heads = MigrationContext.configure(conn).get_current_heads()
    return heads[0] if len(heads) == 1 else None


def export_jsonl(registry: Registry, out: IO[str], *, batch: int = BATCH) -> dict[str, int]:
    """Write the whole registry to ``out`` as ``provgen-registry/1`` JSON Lines, one consistent snapshot.

    Returns the number of lines written per record type (the header's ``counts``).
    :raises RegistryError: the database failed.
    """
    try:
        with registry.engine.connect() as conn:
            if conn.dialect.name == "postgresql":  # one snapshot for every statement (SQLite: the transaction)
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            counts = {
                name: int(conn.scalar(select(func.count()).select_from(table)) or 0)
                for name, table in RECORD_TYPES.items()
            }
            head_seq, head_hash = audit.head(conn)
            out.write(
                _line(
                    {
                        "type": "header",
                        "format": FORMAT,
                        "schema_revision": _revision(conn),
                        "exported_at": utcnow().isoformat(timespec="microseconds"),
                        "counts": counts,
                        "head": {"seq": head_seq, "entry_hash": head_hash},
                    }
                )
            )
            for record_type, row in _export_rows(conn, batch):
                out.write(_line(_encode(record_type, row)))
    except DBAPIError as exc:
        raise db.translate_error(exc, registry.engine, "exporting the registry") from exc
    return counts


def _stream(conn: Connection, statement: Any, batch: int) -> Iterator[Any]:
    # statement-level: Connection.execution_options() would change every later statement on ``conn``
    return iter(conn.execute(statement.execution_options(yield_per=batch)).mappings())


def _rows_by_id(conn: Connection, table: Table, ids: list[Any]) -> dict[Any, Mapping[str, Any]]:
    key = table.primary_key.columns.values()[0]
    found: dict[Any, Mapping[str, Any]] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        for row in conn.execute(select(table).where(key.in_(ids[start : start + _IN_CHUNK]))).mappings():
            found[row[key.name]] = row
    return found


def _export_rows(conn: Connection, batch: int) -> Iterator[tuple[str, Mapping[str, Any]]]:
    log = RECORD_TYPES["audit"]
    points_table = RECORD_TYPES["checkpoint"]
    points = _stream(
        conn, select(points_table).order_by(points_table.c.seq, points_table.c.created_at, points_table.c.id), batch
    )
    point = next(points, None)
    entries = conn.execute(select(log).order_by(log.c.seq).execution_options(yield_per=batch)).mappings()
    for part in entries.partitions():
        wanted: dict[str, list[str]] = {}
        for entry in part:
            if entry["action"] == "insert" and entry["record_type"] in AUDITED:
                wanted.setdefault(entry["record_type"], []).append(entry["record_id"])
        rows = {name: _rows_by_id(conn, RECORD_TYPES[name], ids) for name, ids in wanted.items()}
        for entry in part:
            yield "audit", entry
            if entry["action"] == "insert" and entry["record_type"] in AUDITED:
                row = rows[entry["record_type"]].pop(entry["record_id"], None)
                if row is not None:  # None: deleted behind the log's back; the import's check will say so
                    yield entry["record_type"], row
            while point is not None and point["seq"] <= entry["seq"]:
                yield "checkpoint", point
                point = next(points, None)
    for name in AUDITED:  # records the log never saw: exported as they are, the import's check reports them
        table = RECORD_TYPES[name]
        logged = exists().where(log.c.record_type == name, log.c.record_id == table.c.id, log.c.action == "insert")
        for row in _stream(conn, select(table).where(~logged).order_by(table.c.created_at, table.c.id), batch):
            yield name, row
    while point is not None:
        yield "checkpoint", point
        point = next(points, None)


# -- import ---------------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    """What an import did."""

    source: str
    #: rows inserted per record type (``audit`` = audit entries)
    inserted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECORD_TYPES, 0))
    #: records already in the target that the file has in a newer version (updated to it)
    updated: dict[str, int] = field(default_factory=lambda: dict.fromkeys(AUDITED, 0))
    #: records and checkpoints already in the target, unchanged
    unchanged: int = 0
    #: audit entries of the file the target already had
    entries_known: int = 0
    #: the target's chain head before and after
    previous_head_seq: int = 0
    head_seq: int = 0
    head_hash: str = audit.GENESIS
    #: records checked against the chain after the import
    records_verified: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Pending:
    number: int
    record_type: str
    row: dict[str, Any]
    #: True: the record's insert entry is one the target already has (it should be there)
    known: bool


class _Importer:
    """Checks and inserts the lines of one file into ``conn`` (inside the caller's transaction)."""

    def __init__(self, conn: Connection, source: str, header: Mapping[str, Any], batch: int) -> None:
        self.conn, self.source, self.header, self.batch = conn, source, header, batch
        self.head_seq, self.head_hash = audit.head(conn)
        self.result = ImportResult(source=source, previous_head_seq=self.head_seq)
        self.seen = dict.fromkeys(RECORD_TYPES, 0)
        self.next_seq = 1
        self.last_entry: dict[str, Any] | None = None
        #: (record_type, record_id, seq) of the insert entry on the line just read
        self.insert_entry: tuple[str, str, int] | None = None
        self.pending: list[_Pending] = []
        #: (line, seq, entry_hash) of entries the registry should have, not yet compared with its log
        self.known_entries: list[tuple[int, int, str]] = []

    def error(self, number: int | str, message: str) -> RegistryError:
        return RegistryError(f"{self.source}, line {number}: {message}; nothing was imported")

    def add(self, number: int, data: Mapping[str, Any]) -> None:
        record_type = data.get("type")
        if record_type == "header":
            raise self.error(number, "a second header (two exports concatenated?)")
        if record_type not in RECORD_TYPES:
            raise self.error(number, f"unknown record type {record_type!r}")
        try:
            row = _decode(record_type, data)
        except _BadLine as bad:
            raise self.error(number, str(bad)) from None
        self.seen[record_type] += 1
        insert_entry, self.insert_entry = self.insert_entry, None
        if record_type == "audit":
            self._entry(number, row)
            return
        known = False
        if record_type in AUDITED and insert_entry is not None and insert_entry[:2] == (record_type, row["id"]):
            known = insert_entry[2] <= self.head_seq
        self._queue(_Pending(number, record_type, row, known))

    def _entry(self, number: int, row: dict[str, Any]) -> None:
        seq = row["seq"]
        if seq != self.next_seq:
            raise self.error(
                number,
                f"audit entry {seq} where entry {self.next_seq} was expected (the log must be complete and in order)",
            )
        self.next_seq += 1
        self.last_entry = row
        if row["action"] == "insert":
            self.insert_entry = (row["record_type"], row["record_id"], seq)
        if seq <= self.head_seq:
            self.result.entries_known += 1
            self.known_entries.append((number, seq, row["entry_hash"]))
            if seq == self.head_seq:
                self._check_known_entries()  # the rest of the file extends the registry's chain, or not
            elif len(self.known_entries) >= self.batch:
                self.flush()
            return
        if seq == self.head_seq + 1 and row["prev_hash"] != self.head_hash:
            raise self._not_extending(number, seq)
        self._queue(_Pending(number, "audit", row, False))

    def _check_known_entries(self) -> None:
        """The file's entries that the registry should already have must be the registry's, hash for hash."""
        known, self.known_entries = self.known_entries, []
        if not known:
            return
        log = RECORD_TYPES["audit"]
        stored = dict(
            self.conn.execute(
                select(log.c.seq, log.c.entry_hash).where(log.c.seq.between(known[0][1], known[-1][1]))
            ).all()
        )
        for number, seq, entry_hash in known:
            if stored.get(seq) != entry_hash:
                raise self._not_extending(number, seq)

    def _not_extending(self, number: int, seq: int) -> RegistryError:
        if self.head_seq == 0:
            return self.error(number, "the file's audit log does not start at the beginning of a chain")
        return self.error(
            number,
            f"the file's audit chain does not extend the registry's: the registry's entry "
            f"{self.head_seq} has hash {self.head_hash[:16]}…, the file's chain differs at "
            f"entry {seq} (an export of another registry, or of a rewritten one)",
        )

    def _queue(self, item: _Pending) -> None:
        self.pending.append(item)
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        self._check_known_entries()  # before anything is written: a foreign chain is refused as such
        pending, self.pending = self.pending, []
        for record_type, table in RECORD_TYPES.items():
            items = [item for item in pending if item.record_type == record_type]
            if items:
                self._write(record_type, table, items)

    def _write(self, record_type: str, table: Table, items: list[_Pending]) -> None:
        key = table.primary_key.columns.values()[0].name
        existing = {} if record_type == "audit" else _rows_by_id(self.conn, table, [i.row[key] for i in items])
        new: list[_Pending] = []
        changed: list[_Pending] = []
        for item in items:
            current = existing.get(item.row[key])
            if current is None:
                new.append(item)
            elif record_type == "checkpoint" and _same_checkpoint(current, item.row):
                self.result.unchanged += 1
            elif item.known:
                if audit.record_hash(record_type, current) == audit.record_hash(record_type, item.row):
                    self.result.unchanged += 1
                else:
                    changed.append(item)
            else:
                raise self.error(
                    item.number,
                    f"{record_type} {item.row[key]} is new in the file but the "
                    f"registry already has a {record_type} with this id (id collision)",
                )
        try:
            if new:
                self.conn.execute(insert(table), [item.row for item in new])
            for item in changed:
                self.conn.execute(update(table).where(table.c[key] == item.row[key]).values(item.row))
        except IntegrityError as exc:
            lines = f"line {items[0].number}" if len(items) == 1 else f"lines {items[0].number}..{items[-1].number}"
            detail = " ".join(str(exc.orig or exc).split())[:300]
            raise RegistryError(
                f"{self.source}, {lines}: the registry refused the {record_type} records "
                f"({detail}); nothing was imported"
            ) from exc
        self.result.inserted[record_type] += len(new)
        if changed:
            self.result.updated[record_type] += len(changed)

    def finish(self, last_line: int) -> None:
        self.flush()
        counts = self.header["counts"]
        short = [f"{counts[name]} {name}" for name in RECORD_TYPES if self.seen[name] != counts[name]]
        if short:
            held = ", ".join(f"{self.seen[name]} {name}" for name in RECORD_TYPES if self.seen[name] != counts[name])
            raise RegistryError(
                f"{self.source} is truncated or incomplete: its header announces "
                f"{', '.join(short)} but the file holds {held} (it ends at line {last_line}); "
                "nothing was imported"
            )
        announced = self.header.get("head") or {}
        file_head = (self.last_entry or {}).get("entry_hash", audit.GENESIS)
        if announced and (announced.get("seq") != self.next_seq - 1 or announced.get("entry_hash") != file_head):
            raise RegistryError(
                f"{self.source} is corrupt: its header announces chain head {announced.get('seq')} "
                f"but its audit entries end at {self.next_seq - 1} with another hash; nothing was "
                "imported"
            )
        if self.next_seq - 1 < self.head_seq:
            raise RegistryError(
                f"{self.source}: the file's audit chain ({self.next_seq - 1} entries) does not "
                f"extend the registry's ({self.head_seq} entries): the registry is ahead of it or "
                "is another registry; nothing was imported"
            )


def _same_checkpoint(current: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    return all((bytes(current[k]) if k == "signature" else current[k]) == row[k] for k in row)


def _lines(stream: Iterable[bytes], source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, raw in enumerate(stream, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RegistryError(
                f"{source}, line {number}: not UTF-8 text (corrupt file); nothing was imported"
            ) from None
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except ValueError as error:
            end = "" if text.endswith("\n") else " (the file ends in the middle of it: truncated?)"
            if number == 1:
                raise RegistryError(f"{source} is not a provgen registry export (line 1 is not JSON)") from None
            raise RegistryError(
                f"{source}, line {number}: not valid JSON ({error}){end}; nothing was imported"
            ) from None
        if not isinstance(data, dict):
            raise RegistryError(f"{source}, line {number}: not a JSON object; nothing was imported")
        yield number, data


def _check_header(number: int, data: Mapping[str, Any], source: str) -> None:
    if number != 1 or data.get("type") != "header" or not str(data.get("format", "")).startswith("provgen-registry/"):
        raise RegistryError(f"{source} is not a provgen registry export (line {number} is not a {FORMAT} header)")
    if data["format"] != FORMAT:
        raise RegistryError(f"{source} is a {data['format']} export; this provgen reads {FORMAT}")
    counts = data.get("counts")
    if not isinstance(counts, dict) or any(
        isinstance(counts.get(n), bool) or not isinstance(counts.get(n), int) for n in RECORD_TYPES
    ):
        raise RegistryError(f"{source}, line 1: the header's counts are missing or malformed; nothing was imported")


def import_jsonl(registry: Registry, stream: Iterable[bytes], *, source: str, batch: int = BATCH) -> ImportResult:
    """Import a ``provgen-registry/1`` export read from ``stream`` (lines of bytes) into ``registry``.

    All or nothing, in one transaction: refused with :class:`RegistryError` (naming ``source`` and the line)
    if the file is not an export, is corrupt or truncated, is at another schema revision, its chain does
    not extend the registry's (the registry's log must be empty or a prefix of the file's), an id collides,
    or the registry's chain does not verify afterwards.
    """
    lines = _lines(stream, source)
    first = next(lines, None)
    if first is None:
        raise RegistryError(f"{source} is empty: not a provgen registry export")
    _check_header(*first, source)
    header = first[1]
    try:
        with db.write_engine(registry.engine).begin() as conn:
            audit.lock_chain(conn)
            revision = _revision(conn)
            if header.get("schema_revision") != revision:
                raise RegistryError(
                    f"{source} was exported at schema revision {header.get('schema_revision')!r} "
                    f"but the registry `{registry.url}` is at {revision!r}; migrate both to the same "
                    "revision (`provgen registry migrate`) first; nothing was imported"
                )
            importer = _Importer(conn, source, header, batch)
            last = 1
            for number, data in lines:
                importer.add(number, data)
                last = number
            importer.finish(last)
            report = _verify(conn)
            if not report.ok:
                shown = "; ".join(str(p) for p in report.problems[:_MAX_PROBLEMS_SHOWN])
                more = len(report.problems) - _MAX_PROBLEMS_SHOWN
                raise RegistryError(
                    f"after importing {source} the registry's audit chain does not verify, so "
                    f"nothing was imported: {shown}" + (f" (and {more} more)" if more > 0 else "")
                )
    except DBAPIError as exc:
        raise db.translate_error(exc, registry.engine, f"importing {source} into the registry") from exc
    _refresh_statistics(registry)
    result = importer.result
    result.head_seq, result.head_hash, result.records_verified = report.head_seq, report.head_hash, report.records
    return result


def _refresh_statistics(registry: Registry) -> None:
    """After a bulk load PostgreSQL plans lineage walks badly until it has statistics (1 s instead of 1 ms
    at 100k edges, docs/lineage.md), so analyse the tables the import filled. SQLite needs nothing."""
    if registry.engine.dialect.name != "postgresql":
        return
    try:
        with registry.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE generations, assets, lineage_edges, verifications, audit_log")
    except DBAPIError:
        pass  # statistics are an optimisation; the import itself is committed


def _verify(conn: Connection) -> audit.ChainReport:
    """:meth:`Registry.verify_chain` on ``conn``, so that it sees the import before it commits."""
    from provgen.provenance.registry import checkpoints as signed

    valid, problems = [], []
    for point in signed.load_all(conn):
        error = signed.check_signature(point)
        if error:
            problems.append(audit.Problem("checkpoint", point.seq, None, None, f"checkpoint {point.id}: {error}"))
        else:
            valid.append(point)
    report = audit.verify(conn, records=True, checkpoints=valid)
    for problem in problems:
        report.add(problem)
    return report
