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

import re
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import Engine, or_, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, joinedload, selectinload, sessionmaker

from provgen.core.errors import NotFoundError, RegistryError, ValidationError
from provgen.provenance.registry import db
from provgen.provenance.registry.models import WATERMARK_BITS, Asset, Base, Generation, new_id

__all__ = ["Registry", "open_registry"]

_HEX_PREFIX = re.compile(r"[0-9a-f]{8,32}")
_PHASH = re.compile(r"[0-9a-f]{16}")
#: ids per IN (...) when resolving ties; keeps statements small on every backend
_IN_CHUNK = 500
_M = TypeVar("_M", Asset, Generation)


def open_registry(url: str, *, upgrade: bool = True) -> Registry:
    """Connect to the registry at ``url``, migrate it to the newest schema and return it.

    :param url: ``sqlite:///PATH`` or ``postgresql+psycopg://USER:PASSWORD@HOST/DB``.
    :param upgrade: migrate an older (or blank) database; with ``False`` such a database is an error.
    :raises RegistryError: unreachable, unsupported URL, made by a newer provgen, or not at the newest schema.
    """
    engine = db.make_engine(url)
    try:
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except DBAPIError as exc:
            raise db.translate_error(
                exc, engine, "connecting to the registry", _connect_hint(engine)
            ) from exc
        if upgrade:
            db.upgrade(engine)
        else:
            _require_head(engine)
    except BaseException:
        engine.dispose()
        raise
    return Registry(engine)


def _connect_hint(engine: Engine) -> str:
    if engine.dialect.name == "sqlite":
        return "check that the path is a provgen registry (an SQLite file) and that it can be written"
    return "check the URL, and that the server is running and accepts this user"


def _require_head(engine: Engine) -> None:
    current, head = db.ensure_known_revision(engine), db.head_revision()
    if current == head:
        return
    state = f"at schema revision {current!r}" if current else "blank (no registry tables)"
    raise RegistryError(
        f"the registry `{db.mask_url(engine.url)}` is {state} but this provgen needs {head!r}; "
        "open it with upgrade=True to migrate it"
    )


class Registry:
    """An open lineage registry. Thread-safe; make one per process and :meth:`close` it when done."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: the database URL with the password masked (safe to print)
        self.url = db.mask_url(engine.url)
        self._sessions = sessionmaker(bind=engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(bind=db.write_engine(engine), expire_on_commit=False)

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

    @contextmanager
    def _reading(self, doing: str) -> Iterator[Session]:
        try:
            with self._sessions() as session:
                yield session
        except DBAPIError as exc:
            raise db.translate_error(exc, self.engine, doing) from exc

    def close(self) -> None:
        """Close every pooled connection. Objects already loaded stay usable."""
        self.engine.dispose()

    # -- ids ---------------------------------------------------------------------------------------

    def new_ids(self) -> tuple[str, int]:
        """``(asset_id, watermark_id)`` not used yet: a uuid4 hex and a random non-zero 48-bit integer.

        0 and 2**48-1 (all bits equal) are never drawn: decoders tend to read them from unmarked images.
        """
        for _ in range(16):
            asset_id = new_id()
            watermark_id = secrets.randbelow(2**WATERMARK_BITS - 2) + 1
            with self._reading("drawing new asset ids from the registry") as session:
                taken = session.scalar(
                    select(Asset.id)
                    .where(or_(Asset.id == asset_id, Asset.watermark_id == watermark_id))
                    .limit(1)
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
        with self._reading(f"looking up {what} {wanted} in the registry") as session:
            found = session.scalars(stmt.order_by(model.id).limit(6)).unique().all()
        if not found:
            raise NotFoundError(f"no {what} `{key}` in the registry `{self.url}`")
        if len(found) > 1:
            listed = ", ".join(row.id for row in found[:5]) + (", ..." if len(found) > 5 else "")
            raise NotFoundError(
                f"{what} id prefix `{key}` is ambiguous, it matches {listed}; give more characters"
            )
        return found[0]

    def _find_asset(self, doing: str, *criteria: Any) -> Asset | None:
        with self._reading(doing) as session:
            return session.scalars(select(Asset).options(*_eager(Asset)).where(*criteria)).unique().first()

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
        """
        target = phash.lower() if isinstance(phash, str) else ""
        if not _PHASH.fullmatch(target):
            raise ValidationError("phash", f"must be 16 hex characters (a 64-bit pHash), got {phash!r}")
        if isinstance(max_distance, bool) or not isinstance(max_distance, int) or not 0 <= max_distance <= 64:
            raise ValidationError("max_distance", f"must be an integer in 0..64, got {max_distance!r}")
        wanted = int(target, 16)
        best, tied = max_distance + 1, []
        # A full scan of (id, phash) only, streamed in batches: fine up to a few million assets.
        # TODO(scale): replace with an index, multi-index hashing (split the 64 bits into max_distance+1
        # chunks, look up exact chunk matches through indexed columns, verify candidates) with the scale work.
        with self._reading("searching perceptual hashes in the registry") as session:
            rows = session.execute(select(Asset.id, Asset.phash).execution_options(yield_per=10_000))
            for asset_id, asset_phash in rows:
                distance = (int(asset_phash, 16) ^ wanted).bit_count()
                if distance > max_distance:
                    continue
                if distance < best:
                    best, tied = distance, [asset_id]
                elif distance == best:
                    tied.append(asset_id)
            if not tied:
                return None
            newest: Asset | None = None
            for chunk in _chunks(tied, _IN_CHUNK):
                stmt = (
                    select(Asset)
                    .options(*_eager(Asset))
                    .where(Asset.id.in_(chunk))
                    .order_by(Asset.created_at.desc(), Asset.id.desc())
                    .limit(1)
                )
                candidate = session.scalars(stmt).unique().first()
                if candidate is not None and (
                    newest is None or (candidate.created_at, candidate.id) > (newest.created_at, newest.id)
                ):
                    newest = candidate
        return (newest, best) if newest is not None else None

    # -- output ------------------------------------------------------------------------------------

    def asset_summary(self, asset: Asset) -> dict[str, Any]:
        """A JSON-ready dict of ``asset`` and its generation (no manifest bytes; times in ISO 8601 UTC)."""
        generation = asset.generation
        return {
            "id": asset.id,
            "created_at": _iso(asset.created_at),
            "generation_id": asset.generation_id,
            "batch_index": asset.batch_index,
            "seed": asset.seed,
            "sha256": asset.sha256,
            "watermark_id": f"{asset.watermark_id:012x}",  # 48 bits as 12 hex digits, as everywhere in the CLI
            "watermark_method": asset.watermark_method,
            "phash": asset.phash,
            "format": asset.format,
            "width": asset.width,
            "height": asset.height,
            "size_bytes": asset.size_bytes,
            "path": asset.path,
            "manifest_label": asset.manifest_label,
            "manifest_store_size": len(asset.manifest_store),
            "generation": {
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
                "recipe": generation.recipe,
                "plugins": generation.plugins,
                "asset_ids": [sibling.id for sibling in generation.assets],
            },
        }


def _eager(model: type[Base]) -> list[Any]:
    """Loader options that make the relationships usable after the session has closed."""
    if model is Asset:
        return [joinedload(Asset.generation).selectinload(Generation.assets)]
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
