"""The lineage registry: open it, write generations and assets in a transaction, look assets up.

.. code-block:: python

    registry = open_registry("sqlite:///~/.provgen/registry.sqlite")
    asset_id, watermark_id = registry.new_ids()
    with registry.transaction() as session:
        session.add(Generation(..., assets=[Asset(id=asset_id, watermark_id=watermark_id, ...)]))
    registry.find_by_watermark(watermark_id)

Every database failure leaves as :class:`~provgen.core.errors.RegistryError`, a missing record as
:class:`~provgen.core.errors.NotFoundError`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, TypeVar

from sqlalchemy import ARRAY, ColumnElement, Engine, Integer, and_, any_, bindparam, or_, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, joinedload, selectinload, sessionmaker

from provgen.core.errors import NotFoundError, RegistryError, ValidationError
from provgen.provenance.registry import audit, db
from provgen.provenance.registry.models import (
    PHASH_BANDS,
    WATERMARK_BITS,
    Asset,
    Base,
    Fingerprint,
    Generation,
    LineageEdge,
    Verification,
    new_id,
    phash_bands,
)

__all__ = ["Registry", "open_registry", "FingerprintMatch"]

_HEX_PREFIX = re.compile(r"[0-9a-f]{8,32}")
_PHASH = re.compile(r"[0-9a-f]{16}")
#: ids per IN (...) when resolving ties; keeps statements small on every backend
_IN_CHUNK = 500
#: largest per-band radius searched through the band indexes (697 values per band at 3)
_MAX_BAND_RADIUS = 3
_M = TypeVar("_M", Asset, Generation)
_T = TypeVar("_T")


def open_registry(url: str, *, upgrade: bool | Literal["blank"] = True) -> Registry:
    """Connect to the registry at ``url``, migrate it to the newest schema and return it.

    :param url: ``sqlite:///PATH`` or ``postgresql+psycopg://USER:PASSWORD@HOST/DB``.
    :param upgrade: ``True`` migrates an older (or blank) database; ``"blank"`` creates the tables in a blank
        database but refuses an older one (what the CLI does: a shared registry is migrated on purpose, with
        ``provgen registry migrate``); ``False`` refuses both.
    :raises RegistryError: unreachable, unsupported URL, made by a newer provgen, or not at the newest schema.
    """
    engine = db.make_engine(url)
    try:
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except DBAPIError as exc:
            raise db.translate_error(exc, engine, "connecting to the registry", _connect_hint(engine)) from exc
        if upgrade is True or (upgrade == "blank" and db.ensure_known_revision(engine) is None):
            db.upgrade(engine)
        else:
            _require_head(engine, hint="run `provgen registry migrate`" if upgrade == "blank" else "")
    except BaseException:
        engine.dispose()
        raise
    return Registry(engine)


def _connect_hint(engine: Engine) -> str:
    if engine.dialect.name == "sqlite":
        return "check that the path is a provgen registry (an SQLite file) and that it can be written"
    return "check the URL, and that the server is running and accepts this user"


def _require_head(engine: Engine, hint: str = "") -> None:
    current, head = db.ensure_known_revision(engine), db.head_revision()
    if current == head:
        return
    state = f"at schema revision {current!r}" if current else "blank (no registry tables)"
    raise RegistryError(
        f"the registry `{db.mask_url(engine.url)}` is {state} but this provgen needs {head!r}; "
        + (hint or "open it with upgrade=True to migrate it")
    )


class Registry:
    """An open lineage registry. Thread-safe; make one per process and :meth:`close` it when done."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: the database URL with the password masked (safe to print)
        self.url = db.mask_url(engine.url)
        self._sessions = sessionmaker(bind=engine, expire_on_commit=False)
        # The finders run in autocommit: each is one statement, and it saves the BEGIN and ROLLBACK round trips
        # (on PostgreSQL a lookup is otherwise four round trips with the pool's pre-ping).
        #: the engine of :meth:`read` (on a server: its own pool, see ``db.read_engine``)
        self.read_engine = db.read_engine(engine)
        self._quick_sessions = sessionmaker(bind=self.read_engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(bind=db.write_engine(engine), expire_on_commit=False)
        for factory in (self._sessions, self._quick_sessions, self._write_sessions):
            audit.install(factory)  # every ORM write appends to the audit chain; deletes are refused

    def __repr__(self) -> str:
        return f"Registry({self.url!r})"

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- sessions ----------------------------------------------------------------------------------

    def session(self) -> Session:
        """A new session (``expire_on_commit=False``); close it, e.g. ``with registry.session() as s:``.

        Database errors raised through it are SQLAlchemy's; prefer :meth:`transaction` and the finders.
        """
        return self._sessions()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session inside one transaction: committed if the block succeeds, rolled back on any exception.

        On SQLite the write lock is taken at the start, so concurrent writers queue instead of failing midway.
        :raises RegistryError: the write was refused (e.g. duplicate sha256), or the database is locked/gone.
        """
        session = self._write_sessions()
        try:
            with session.begin():
                yield session
        except DBAPIError as exc:
            raise db.translate_error(exc, self.engine, "writing to the registry") from exc
        finally:
            session.close()

    def read(self, doing: str, query: Callable[[Session], _T], *, streamed: bool = False) -> _T:
        """``query(session)`` in a read-only session; ``streamed`` (server-side cursors, ``yield_per``) needs a
        transaction, the rest runs in autocommit.

        The autocommit engine does not ping pooled connections before use (on PostgreSQL that is a round trip
        per lookup); a connection the server has dropped (restart, idle timeout) fails instead, the pool then
        replaces all its older connections, and the read runs once more (reads are safe to repeat).
        """
        for attempt in (1, 2):
            try:
                with (self._sessions if streamed else self._quick_sessions)() as session:
                    return query(session)
            except DBAPIError as exc:
                if attempt == 1 and exc.connection_invalidated:
                    continue
                raise db.translate_error(exc, self.engine, doing) from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close every pooled connection. Objects already loaded stay usable."""
        self.read_engine.dispose()
        self.engine.dispose()

    # -- ids ---------------------------------------------------------------------------------------

    def new_ids(self) -> tuple[str, int]:
        """``(asset_id, watermark_id)`` not used yet: a uuid4 hex and a random non-zero 48-bit integer.

        0 and 2**48-1 (all bits equal) are never drawn: decoders tend to read them from unmarked images.
        """
        for _ in range(16):
            asset_id = new_id()
            watermark_id = secrets.randbelow(2**WATERMARK_BITS - 2) + 1
            taken = self.read(
                "drawing new asset ids from the registry",
                lambda session, a=asset_id, w=watermark_id: session.scalar(
                    select(Asset.id).where(or_(Asset.id == a, Asset.watermark_id == w)).limit(1)
                ),
            )
            if taken is None:
                return asset_id, watermark_id
        raise RegistryError(f"could not draw an unused asset id and watermark id in `{self.url}`")

    # -- lookups -----------------------------------------------------------------------------------

    def get_asset(self, asset_id: str) -> Asset:
        """The asset with id ``asset_id``, or the only one whose id starts with it (>= 8 hex characters).

        :raises NotFoundError: no such asset, or the prefix matches several.
        """
        return self._get(Asset, "asset", asset_id)

    def get_generation(self, generation_id: str) -> Generation:
        """The generation with id ``generation_id`` (or a unique prefix of at least 8 hex characters)."""
        return self._get(Generation, "generation", generation_id)

    def _get(self, model: type[_M], what: str, key: str) -> _M:
        wanted = key.strip().lower() if isinstance(key, str) else ""
        if not _HEX_PREFIX.fullmatch(wanted):
            raise NotFoundError(
                f"no {what} `{key}` in the registry: {what} ids are 32 hex characters "
                "(a unique prefix of at least 8 also works)"
            )
        stmt = select(model).options(*_eager(model))
        if len(wanted) == 32:
            stmt = stmt.where(model.id == wanted)
        else:
            # A range on the primary key uses its index on every backend and collation; LIKE keeps it exact.
            upper = _hex_successor(wanted)
            stmt = stmt.where(model.id >= wanted, model.id.startswith(wanted, autoescape=True))
            if upper is not None:
                stmt = stmt.where(model.id < upper)
        found = self.read(
            f"looking up {what} {wanted} in the registry",
            lambda session: session.scalars(stmt.order_by(model.id).limit(6)).unique().all(),
        )
        if not found:
            raise NotFoundError(f"no {what} `{key}` in the registry `{self.url}`")
        if len(found) > 1:
            listed = ", ".join(row.id for row in found[:5]) + (", ..." if len(found) > 5 else "")
            raise NotFoundError(f"{what} id prefix `{key}` is ambiguous, it matches {listed}; give more characters")
        return found[0]

    def _find_asset(self, doing: str, *criteria: Any) -> Asset | None:
        stmt = select(Asset).options(*_LOOKUP).where(*criteria)
        return self.read(doing, lambda session: session.scalars(stmt).first())

    # The finders return the asset with its generation, not the generation's other images: loading those
    # (``generation.assets`` raises) doubled the time of a lookup. :meth:`get_asset` and :meth:`asset_summary`
    # have them.

    def find_by_sha256(self, sha256: str) -> Asset | None:
        """The asset whose file has this sha256 (hex), or ``None``."""
        return self._find_asset("looking up a sha256 in the registry", Asset.sha256 == sha256.lower())

    def find_by_watermark(self, watermark_id: int) -> Asset | None:
        """The asset carrying this 48-bit watermark id, or ``None``."""
        return self._find_asset("looking up a watermark in the registry", Asset.watermark_id == watermark_id)

    def find_by_manifest_label(self, label: str) -> Asset | None:
        """The asset whose C2PA manifest has this label, or ``None``."""
        return self._find_asset("looking up a manifest label in the registry", Asset.manifest_label == label)

    def nearest_fingerprint(self, phash: str, max_distance: int) -> tuple[Asset, int] | None:
        """The asset whose 64-bit perceptual hash is nearest to ``phash`` (Hamming), and that distance.

        Only matches at distance ``<= max_distance`` count; ties go to the newest asset. ``None`` if none.
        Multi-index hashing: by pigeonhole a hash within distance d shares one of its four 16-bit bands with
        the target up to d // 4 flipped bits, so only rows whose band is in those small sets (indexed
        columns) are candidates (see :func:`_band_filter`); up to d = 15 no scan happens. Larger d falls back
        to a streamed scan.
        """
        target = phash.lower() if isinstance(phash, str) else ""
        if not _PHASH.fullmatch(target):
            raise ValidationError("phash", f"must be 16 hex characters (a 64-bit pHash), got {phash!r}")
        if isinstance(max_distance, bool) or not isinstance(max_distance, int) or not 0 <= max_distance <= 64:
            raise ValidationError("max_distance", f"must be an integer in 0..64, got {max_distance!r}")
        wanted = int(target, 16)
        stmt = select(Asset.id, Asset.phash).where(Asset.phash.is_not(None))
        candidates = _band_filter(target, max_distance, array=self.engine.dialect.name == "postgresql")
        if candidates is not None:
            stmt = stmt.where(candidates)
        if candidates is None:  # a scan: stream it
            stmt = stmt.execution_options(yield_per=10_000)

        def search(session: Session) -> tuple[Asset, int] | None:
            best_distance, best_ids = max_distance + 1, []
            for asset_id, asset_phash in session.execute(stmt):
                distance = (int(asset_phash, 16) ^ wanted).bit_count()
                if distance > max_distance:
                    continue
                if distance < best_distance:
                    best_distance, best_ids = distance, [asset_id]
                elif distance == best_distance:
                    best_ids.append(asset_id)
            if not best_ids:
                return None
            best_id = best_ids[0]
            if len(best_ids) > 1:  # ties go to the newest asset (then the greatest id)
                newest = [
                    (created_at, asset_id)
                    for chunk in _chunks(sorted(best_ids), _IN_CHUNK)
                    for asset_id, created_at in session.execute(
                        select(Asset.id, Asset.created_at).where(Asset.id.in_(chunk))
                    )
                ]
                best_id = max(newest)[1]
            asset = session.scalars(select(Asset).options(*_LOOKUP).where(Asset.id == best_id)).one()
            return asset, best_distance

        return self.read("searching perceptual hashes in the registry", search, streamed=candidates is None)

    def match_fingerprint(
        self, phash: str, dhash: str | None, *, max_phash: int, max_dhash: int, max_phash_alone: int
    ) -> FingerprintMatch | None:
        """The asset an edited copy most likely comes from, by perceptual hashes (see ``fingerprint_calibration``).

        A record with a stored dHash matches when its pHash is within ``max_phash`` and its dHash within
        ``max_dhash`` of the given ones; a record without one (registered before dHashes were kept), or a query
        without ``dhash``, only when its pHash is within ``max_phash_alone``. The closest pHash wins, then the
        closest dHash, then the newest asset. Candidates come from the pHash band index (no scan up to 15).
        """
        target = phash.lower() if isinstance(phash, str) else ""
        if not _PHASH.fullmatch(target):
            raise ValidationError("phash", f"must be 16 hex characters (a 64-bit pHash), got {phash!r}")
        if dhash is not None and not _PHASH.fullmatch(dhash.lower()):
            raise ValidationError("dhash", f"must be 16 hex characters (a 64-bit dHash), got {dhash!r}")
        for name, value in (("max_phash", max_phash), ("max_dhash", max_dhash), ("max_phash_alone", max_phash_alone)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 64:
                raise ValidationError(name, f"must be an integer in 0..64, got {value!r}")
        widest = max(max_phash if dhash is not None else 0, max_phash_alone)
        wanted, second = int(target, 16), int(dhash, 16) if dhash is not None else None
        stmt = select(Asset.id, Asset.phash, Asset.created_at).where(Asset.phash.is_not(None))
        candidates = _band_filter(target, widest, array=self.engine.dialect.name == "postgresql")
        stmt = stmt.where(candidates) if candidates is not None else stmt.execution_options(yield_per=10_000)

        def search(session: Session) -> FingerprintMatch | None:
            near = {}
            for asset_id, asset_phash, created_at in session.execute(stmt):
                distance = (int(asset_phash, 16) ^ wanted).bit_count()
                if distance <= widest:
                    near[asset_id] = (distance, created_at)
            if not near:
                return None
            stored: dict[str, str] = {}
            if second is not None:
                for chunk in _chunks(sorted(near), _IN_CHUNK):
                    rows = session.execute(
                        select(Fingerprint.asset_id, Fingerprint.value).where(
                            Fingerprint.kind == "dhash", Fingerprint.asset_id.in_(chunk)
                        )
                    )
                    stored.update((asset_id, value) for asset_id, value in rows)
            ranked = []
            for asset_id, (distance, created_at) in near.items():
                if asset_id in stored and second is not None:
                    other = (int(stored[asset_id], 16) ^ second).bit_count()
                    if distance <= max_phash and other <= max_dhash:
                        ranked.append((distance, other, _newest_first(created_at), asset_id))
                elif distance <= max_phash_alone:
                    ranked.append((distance, 65, _newest_first(created_at), asset_id))
            if not ranked:
                return None
            distance, other, _, best_id = min(ranked)
            asset = session.scalars(select(Asset).options(*_LOOKUP).where(Asset.id == best_id)).one()
            return FingerprintMatch(asset, distance, other if other <= 64 else None, stored.get(best_id))

        return self.read("matching perceptual hashes in the registry", search, streamed=candidates is None)

    # -- lineage, verifications, audit -------------------------------------------------------------

    def record_input(self, session: Session, *, data: bytes, path: str | None, fmt: str | None = None) -> Asset:
        """The asset for an input image given as ``data``: an existing asset with that sha256 (one of ours,
        or an input seen before), else a new ``external`` asset added to ``session``.

        ``path`` is where it came from (a file path or URI; may be None). Pixels Pillow can read get a pHash.
        """
        digest = hashlib.sha256(data).hexdigest()
        existing = session.scalars(select(Asset).where(Asset.sha256 == digest)).first()
        if existing is not None:
            return existing
        for pending in session.new:
            if isinstance(pending, Asset) and pending.sha256 == digest:
                return pending
        width = height = None
        fingerprint = None
        detected = fmt
        try:
            from PIL import Image

            from provgen.provenance.fingerprint import phash as perceptual_hash

            with Image.open(io.BytesIO(data)) as image:
                detected = detected or (image.format or "").lower() or None
                width, height = image.size
                image.load()
                fingerprint = perceptual_hash(image.convert("RGB"))
        except Exception:  # not an image Pillow reads: still recorded by hash, size and source
            pass
        asset = Asset(
            id=new_id(),
            kind="external",
            sha256=digest,
            format=(detected or "bin")[:16],
            width=width,
            height=height,
            size_bytes=len(data),
            path=path,
            phash=fingerprint,
        )
        session.add(asset)
        return asset

    def record_verification(self, report: dict[str, Any], *, requester: str) -> str:
        """Store one ``provgen verify`` report (audited like every write); returns the verification id."""
        row = Verification(
            id=new_id(),
            requester=requester,
            path=str(report.get("path", "")),
            sha256=report.get("sha256"),
            verdict=str(report.get("verdict")),
            match=report.get("match"),
            asset_id=report.get("asset_id"),
            report=report,
        )
        with self.transaction() as session:
            session.add(row)
        return row.id

    def record_refusal(self, *, plugin: str, reason: str, prompt: str, request: dict[str, Any],
                       requester: str) -> str:
        """Store one request refused by a policy plugin (audited like every write); returns the refusal id."""
        from provgen.provenance.registry.models import Refusal

        row = Refusal(id=new_id(), requester=requester, plugin=plugin, reason=reason, prompt=prompt,
                      request=request)
        with self.transaction() as session:
            session.add(row)
        return row.id

    def verify_chain(
        self, *, records: bool = True, checkpoints: Sequence[Any] = (), workers: int | Literal["auto"] = 1
    ) -> audit.ChainReport:
        """Recompute the audit chain and every record; check stored checkpoints and ``checkpoints`` (exported
        ones an auditor kept). A failed signature or a mismatch is a problem in the report.

        ``workers``: processes to spread the hashing over (default 1: this process); ``"auto"`` (what
        ``provgen registry verify`` uses) takes one per core for large registries
        (:func:`~provgen.provenance.registry.audit_parallel.workers_for`). More than one spawns processes, which
        import the caller's ``__main__`` again: guard a script's top level with ``if __name__ == "__main__":``.
        """
        from provgen.provenance.registry import audit_parallel
        from provgen.provenance.registry import checkpoints as signed

        if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ValidationError("workers", f"must be a positive integer or 'auto', got {workers!r}")
        try:
            with self.engine.connect() as conn:
                points = [*signed.load_all(conn), *checkpoints]
                entries = audit_parallel.entry_count(conn)
            valid = []
            problems = []
            for point in points:
                error = signed.check_signature(point)
                if error:
                    problems.append(
                        audit.Problem("checkpoint", point.seq, None, None, f"checkpoint {point.id}: {error}")
                    )
                else:
                    valid.append(point)
            processes = audit_parallel.workers_for(self.engine, entries, None if workers == "auto" else workers)
            if processes > 1:
                report = audit_parallel.verify(self.engine, workers=processes, records=records, checkpoints=valid)
            else:
                with self.engine.connect() as conn:
                    report = audit.verify(conn, records=records, checkpoints=valid)
            report.workers = processes
        except DBAPIError as exc:
            raise db.translate_error(exc, self.engine, "verifying the audit log of the registry") from exc
        for problem in problems:
            report.add(problem)
        report.checkpoints = [
            {
                "id": p.id,
                "seq": p.seq,
                "head_hash": p.head_hash,
                "created_at": p.created_at,
                "signer": p.signer,
                "algorithm": p.algorithm,
                "valid": p in valid
                and not any(q.kind == "checkpoint" and q.position == p.seq for q in report.problems),
            }
            for p in points
        ]
        return report

    def checkpoint(self, *, chain_pem: bytes, key_pem: bytes, alg: str) -> Any:
        """Sign the current head of the audit chain with this key and store the checkpoint."""
        from provgen.provenance.registry import checkpoints as signed

        try:
            with db.write_engine(self.engine).begin() as conn:
                return signed.create(conn, chain_pem=chain_pem, key_pem=key_pem, alg=alg, registry_url=self.url)
        except DBAPIError as exc:
            raise db.translate_error(exc, self.engine, "writing a checkpoint to the registry") from exc

    # -- output ------------------------------------------------------------------------------------

    def asset_summary(self, asset: Asset) -> dict[str, Any]:
        """A JSON-ready dict of ``asset``, its generation and its direct inputs (no manifest bytes; times in
        ISO 8601 UTC)."""
        generation = asset.generation

        def read(session: Session) -> tuple[list[str], list[dict[str, Any]]]:
            siblings: list[str] = []
            if generation is not None:
                siblings = (
                    [sibling.id for sibling in generation.assets]
                    if "assets" in generation.__dict__
                    else list(
                        session.scalars(
                            select(Asset.id).where(Asset.generation_id == generation.id).order_by(Asset.batch_index)
                        )
                    )
                )
            inputs = [
                {"asset_id": edge.parent_id, "relation": edge.relation, "role": edge.role}
                for edge in session.scalars(
                    select(LineageEdge)
                    .where(LineageEdge.child_id == asset.id)
                    .order_by(LineageEdge.role, LineageEdge.parent_id)
                )
            ]
            return siblings, inputs

        siblings, inputs = self.read("reading the inputs of an asset from the registry", read)
        return {
            "id": asset.id,
            "kind": asset.kind,
            "created_at": _iso(asset.created_at),
            "generation_id": asset.generation_id,
            "batch_index": asset.batch_index,
            "seed": asset.seed,
            "sha256": asset.sha256,
            # 48 bits as 12 hex digits, as everywhere in the CLI
            "watermark_id": f"{asset.watermark_id:012x}" if asset.watermark_id is not None else None,
            "watermark_method": asset.watermark_method,
            "phash": asset.phash,
            "format": asset.format,
            "width": asset.width,
            "height": asset.height,
            "size_bytes": asset.size_bytes,
            "path": asset.path,
            "manifest_label": asset.manifest_label,
            "manifest_store_size": len(asset.manifest_store) if asset.manifest_store is not None else 0,
            "inputs": inputs,
            "generation": None
            if generation is None
            else {
                **generation_fields(generation),
                "recipe": generation.recipe,
                "asset_ids": siblings,
            },
        }


def generation_fields(generation: Generation) -> dict[str, Any]:
    """A JSON-ready dict of a generation's own columns except the recipe (times in ISO 8601 UTC)."""
    return {
        "id": generation.id,
        "created_at": _iso(generation.created_at),
        "requester": generation.requester,
        "model_id": generation.model_id,
        "model_hash": generation.model_hash,
        "pipeline_class": generation.pipeline_class,
        "scheduler": generation.scheduler,
        "prompt": generation.prompt,
        "negative_prompt": generation.negative_prompt,
        "seed": generation.seed,
        "num_inference_steps": generation.num_inference_steps,
        "guidance_scale": generation.guidance_scale,
        "width": generation.width,
        "height": generation.height,
        "num_images": generation.num_images,
        "plugins": generation.plugins,
    }


@dataclass(frozen=True)
class FingerprintMatch:
    """What :meth:`Registry.match_fingerprint` found: the asset and the Hamming distances to its hashes."""

    asset: Asset
    phash_distance: int
    #: None when the record has no dHash (the match rests on the pHash alone)
    dhash_distance: int | None
    record_dhash: str | None


def _newest_first(moment: datetime) -> float:
    return -moment.timestamp()


#: loader options of the finders: the asset and its generation in one SELECT (see the note above find_by_sha256)
_LOOKUP = [joinedload(Asset.generation).raiseload(Generation.assets)]


def _eager(model: type[Base]) -> list[Any]:
    """Loader options that make the relationships usable after the session has closed."""
    if model is Asset:  # one query (the siblings joined too, not a second SELECT): lookups ~30% faster
        return [joinedload(Asset.generation).joinedload(Generation.assets).joinedload(Asset.generation)]
    return [selectinload(Generation.assets)]


def _hex_successor(prefix: str) -> str | None:
    """The smallest hex string of the same length greater than every string starting with ``prefix``."""
    value = int(prefix, 16) + 1
    if value >= 16 ** len(prefix):
        return None
    return f"{value:0{len(prefix)}x}"


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _band_filter(target: str, max_distance: int, *, array: bool = False) -> ColumnElement[bool] | None:
    """The rows that can be within ``max_distance`` of ``target``, as conditions on the indexed pHash bands;
    ``None`` when the balls would be too large to help (scan everything).

    The four band distances sum to the distance, so (pigeonhole) some band is within r = d // 4. Tighter, for
    r >= 1: some band is within r - 1, or none is, and then every band is within d - 3r (each is >= r and
    they sum to <= d). The tighter form hands far fewer rows to Python (at d = 8: balls of 17 values per
    band, plus the rare rows with all four bands within 2, instead of balls of 137 values: about 8x fewer
    candidates) and is used while its larger radius stays within ``_MAX_BAND_RADIUS``.
    """
    radius = max_distance // PHASH_BANDS
    if radius > _MAX_BAND_RADIUS:
        return None
    bands = phash_bands(target)
    columns = [getattr(Asset, f"phash_{index}") for index in range(PHASH_BANDS)]

    def within(r: int) -> list[ColumnElement[bool]]:
        if array:  # PostgreSQL: one array parameter per band (`= ANY(...)`), not hundreds of IN parameters that
            # SQLAlchemy renders and psycopg re-parses on every query (halves the lookup time at 300k assets)
            return [
                column == any_(bindparam(None, list(_ball16(band, r)), type_=ARRAY(Integer)))
                for column, band in zip(columns, bands, strict=True)
            ]
        return [column.in_(_ball16(band, r)) for column, band in zip(columns, bands, strict=True)]

    slack = max_distance - (PHASH_BANDS - 1) * radius
    if radius >= 1 and slack <= _MAX_BAND_RADIUS:
        return or_(*within(radius - 1), and_(*within(slack)))
    return or_(*within(radius))


@functools.lru_cache(maxsize=4096)
def _ball16(value: int, radius: int) -> tuple[int, ...]:
    """Every 16-bit value within Hamming distance ``radius`` of ``value``."""
    out = [value]
    for flips in range(1, radius + 1):
        for bits in itertools.combinations(range(16), flips):
            mask = 0
            for bit in bits:
                mask |= 1 << bit
            out.append(value ^ mask)
    return tuple(out)
