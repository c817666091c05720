"""Typed SQLAlchemy 2.0 models of the lineage registry.

One :class:`Generation` row per call to ``generate`` (the full recipe, the model and the plugins that ran);
one :class:`Asset` row per image written (its hashes, watermark id, perceptual hash and signed C2PA manifest
store) or per external input image (``kind="external"``); :class:`LineageEdge` rows between assets
(``parentOf``/``inputTo`` with a role); :class:`Verification` rows for every recorded ``provgen verify``;
:class:`Refusal` rows for requests a policy plugin refused; :class:`BatchJob` rows, one per job key of
``provgen batch`` (what makes a re-run skip what is done); the append-only hash chain :class:`AuditEntry`
over all of those; and signed :class:`Checkpoint` rows of the chain head.

The schema is owned by the Alembic revisions in ``migrations/versions``; ``Base.metadata.create_all`` is for
tests only. After changing a model, autogenerate a revision (see ``migrations/alembic.ini``) and review it.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from provgen.core.errors import ValidationError

__all__ = [
    "Base",
    "Generation",
    "Asset",
    "LineageEdge",
    "Verification",
    "Refusal",
    "AuditEntry",
    "Checkpoint",
    "AUDITED",
    "FINGERPRINT_KINDS",
    "Fingerprint",
    "BatchJob",
    "JOB_STATUSES",
    "UTCDateTime",
    "new_id",
    "utcnow",
    "IMAGE_FORMATS",
    "WATERMARK_BITS",
    "MAX_SEED",
]

#: image formats a generated asset may have (external inputs may have any format Pillow reads)
IMAGE_FORMATS = ("png", "jpeg", "webp")
#: what an asset row describes: an image provgen wrote, or an input image it was given
ASSET_KINDS = ("generated", "external")
#: C2PA ingredient relationships, used as lineage edge relations
RELATIONS = ("parentOf", "inputTo", "componentOf")
#: verdicts of ``provgen verify``
VERDICTS = ("verified", "recovered", "tampered", "unknown")
#: the 64-bit pHash is also stored as four 16-bit bands, each indexed: multi-index hashing (pigeonhole: two
#: hashes within Hamming distance d share a band within distance d // 4), so nearest lookups never scan
PHASH_BANDS = 4
#: width of a watermark id in bits
WATERMARK_BITS = 48
#: largest seed (seeds are 0..2**63-1, a signed 64-bit column)
MAX_SEED = 2**63 - 1

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _check_hex(field: str, value: str, length: int) -> str:
    if not isinstance(value, str) or len(value) != length or not re.fullmatch(r"[0-9a-f]+", value):
        raise ValidationError(field, f"must be {length} lowercase hex characters, got {value!r}")
    return value


def _check_range(field: str, value: int, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValidationError(field, f"must be an integer in {low}..{high}, got {value!r}")
    return value


def new_id() -> str:
    """A fresh primary key: 32 lowercase hex characters of a uuid4."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """The current time, tz-aware in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always hands back tz-aware UTC datetimes.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones and returns naive values, which are UTC
    because only UTC is ever written. Naive datetimes are refused on the way in, so no local time sneaks in.
    Migrations render this type as plain ``sa.DateTime(timezone=True)`` (see ``migrations/env.py``).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: registry timestamps must be tz-aware (use UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the registry; the naming convention keeps constraint names stable everywhere."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Generation(Base):
    """One generation request and everything needed to reproduce it."""

    __tablename__ = "generations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    requester: Mapped[str] = mapped_column(String(255), index=True)
    model_id: Mapped[str] = mapped_column(String(1024), index=True)
    #: sha256 hex of the model weights
    model_hash: Mapped[str] = mapped_column(String(64), index=True)
    pipeline_class: Mapped[str] = mapped_column(String(255))
    scheduler: Mapped[str] = mapped_column(String(255))
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str | None] = mapped_column(Text)
    #: base seed, 0..2**63-1
    seed: Mapped[int] = mapped_column(BigInteger)
    num_inference_steps: Mapped[int] = mapped_column(Integer)
    guidance_scale: Mapped[float]
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    num_images: Mapped[int] = mapped_column(Integer)
    #: the full recipe, JSON
    recipe: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: plugins that took part: ``[{"name": ..., "version": ...}]``
    plugins: Mapped[list[dict[str, Any]]] = mapped_column(JSON)

    # Bounded by num_images, so a plain list loaded eagerly (usable after the session is closed).
    assets: Mapped[list[Asset]] = relationship(
        back_populates="generation",
        order_by="Asset.batch_index",
        cascade="all, delete-orphan",
        lazy="selectin",
    )

    @validates("id")
    def _validate_id(self, key: str, value: str) -> str:
        return _check_hex(f"generation.{key}", value, 32)

    @validates("model_hash")
    def _validate_model_hash(self, key: str, value: str) -> str:
        return _check_hex(f"generation.{key}", value, 64)

    @validates("seed")
    def _validate_seed(self, key: str, value: int) -> int:
        return _check_range(f"generation.{key}", value, 0, MAX_SEED)

    def __repr__(self) -> str:
        return (
            f"Generation(id={self.id!r}, model_id={self.model_id!r}, seed={self.seed!r}, "
            f"num_images={self.num_images!r}, created_at={self.created_at!r})"
        )


class Asset(Base):
    """One image: written by a generation (``kind="generated"``) or given to one as input (``"external"``).

    Generated assets have every column; external ones have their hashes, format, size and source (``path``:
    a file path or URI) and no generation, watermark or manifest of ours.
    """

    __tablename__ = "assets"
    __table_args__ = (
        UniqueConstraint("generation_id", "batch_index"),
        CheckConstraint("kind IN ('generated', 'external')", name="kind"),
        CheckConstraint(
            "kind = 'external' OR (format IN ('png', 'jpeg', 'webp') AND generation_id IS NOT NULL "
            "AND batch_index IS NOT NULL AND seed IS NOT NULL AND watermark_id IS NOT NULL "
            "AND watermark_method IS NOT NULL AND manifest_label IS NOT NULL AND manifest_store IS NOT NULL)",
            name="generated_complete",
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16), default="generated", server_default="generated")
    generation_id: Mapped[str | None] = mapped_column(ForeignKey("generations.id"), index=True)
    batch_index: Mapped[int | None] = mapped_column(Integer)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    #: sha256 hex of the file as written (or as given, for inputs)
    sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    #: 48-bit id embedded by the invisible watermark
    watermark_id: Mapped[int | None] = mapped_column(BigInteger, unique=True, index=True)
    watermark_method: Mapped[str | None] = mapped_column(String(64))
    #: 64-bit perceptual hash as 16 hex characters (None for an input Pillow cannot read)
    phash: Mapped[str | None] = mapped_column(String(16), index=True)
    #: ``phash`` split into four 16-bit bands (most significant first), set from ``phash`` automatically
    phash_0: Mapped[int | None] = mapped_column(Integer, index=True)
    phash_1: Mapped[int | None] = mapped_column(Integer, index=True)
    phash_2: Mapped[int | None] = mapped_column(Integer, index=True)
    phash_3: Mapped[int | None] = mapped_column(Integer, index=True)
    format: Mapped[str] = mapped_column(String(16))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    #: absolute path the file was written to (inputs: the path or URI it came from, if known)
    path: Mapped[str | None] = mapped_column(Text)
    manifest_label: Mapped[str | None] = mapped_column(String(255), unique=True, index=True)
    #: the signed C2PA manifest store, kept so it can be re-attached to a stripped copy
    manifest_store: Mapped[bytes | None] = mapped_column(LargeBinary)

    generation: Mapped[Generation | None] = relationship(back_populates="assets", lazy="joined")

    @validates("id")
    def _validate_id(self, key: str, value: str) -> str:
        return _check_hex(f"asset.{key}", value, 32)

    @validates("sha256")
    def _validate_sha256(self, key: str, value: str) -> str:
        return _check_hex(f"asset.{key}", value, 64)

    @validates("phash")
    def _validate_phash(self, key: str, value: str | None) -> str | None:
        bands = phash_bands(None if value is None else _check_hex(f"asset.{key}", value, 16))
        for index, band in enumerate(bands):
            setattr(self, f"phash_{index}", band)
        return value

    @validates("seed")
    def _validate_seed(self, key: str, value: int | None) -> int | None:
        return None if value is None else _check_range(f"asset.{key}", value, 0, MAX_SEED)

    @validates("watermark_id")
    def _validate_watermark_id(self, key: str, value: int | None) -> int | None:
        return None if value is None else _check_range(f"asset.{key}", value, 0, 2**WATERMARK_BITS - 1)

    @validates("kind")
    def _validate_kind(self, key: str, value: str) -> str:
        if value not in ASSET_KINDS:
            raise ValidationError(f"asset.{key}", f"must be one of {', '.join(ASSET_KINDS)}, got {value!r}")
        return value

    @validates("format")
    def _validate_format(self, key: str, value: str) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9]{1,16}", value):
            raise ValidationError(f"asset.{key}", f"must be a lowercase format name such as png, got {value!r}")
        return value

    def __repr__(self) -> str:
        return (
            f"Asset(id={self.id!r}, generation_id={self.generation_id!r}, batch_index={self.batch_index!r}, "
            f"format={self.format!r}, sha256={self.sha256[:12] + '…' if self.sha256 else None!r})"
        )


def phash_bands(phash: str | None) -> tuple[int | None, ...]:
    """The four 16-bit bands of a 64-bit pHash (16 hex characters), most significant first."""
    if phash is None:
        return (None,) * PHASH_BANDS
    value = int(phash, 16)
    return tuple((value >> (16 * (PHASH_BANDS - 1 - i))) & 0xFFFF for i in range(PHASH_BANDS))


class LineageEdge(Base):
    """``parent`` was used to make ``child``: ``parentOf`` (the image edited) or ``inputTo`` (a conditioning
    input), with the role it played (``init_image``, ``mask``, ``controlnet``, ``ip_adapter``, ...)."""

    __tablename__ = "lineage_edges"
    __table_args__ = (
        UniqueConstraint("parent_id", "child_id", "role"),
        CheckConstraint("relation IN ('parentOf', 'inputTo', 'componentOf')", name="relation"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    parent_id: Mapped[str] = mapped_column(ForeignKey("assets.id"), index=True)
    child_id: Mapped[str] = mapped_column(ForeignKey("assets.id"), index=True)
    #: the generation that used ``parent`` to make ``child``
    generation_id: Mapped[str | None] = mapped_column(ForeignKey("generations.id"), index=True)
    relation: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(64))

    # Not navigated by provgen; declared so that a flush inserts the assets before the edges pointing at them.
    parent: Mapped[Asset] = relationship(foreign_keys=[parent_id], lazy="raise")
    child: Mapped[Asset] = relationship(foreign_keys=[child_id], lazy="raise")
    generation: Mapped[Generation | None] = relationship(lazy="raise")

    @validates("relation")
    def _validate_relation(self, key: str, value: str) -> str:
        if value not in RELATIONS:
            raise ValidationError(f"edge.{key}", f"must be one of {', '.join(RELATIONS)}, got {value!r}")
        return value

    def __repr__(self) -> str:
        return f"LineageEdge({self.parent_id!r} -{self.relation}/{self.role}-> {self.child_id!r})"


class Verification(Base):
    """One file checked by ``provgen verify``: its verdict, the evidence and the asset it resolved to."""

    __tablename__ = "verifications"
    __table_args__ = (
        CheckConstraint("verdict IN ('verified', 'recovered', 'tampered', 'unknown')", name="verdict"),
        # the newest verdict of an asset (``registry search --verdict``)
        Index("ix_verifications_asset_id_created_at", "asset_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    requester: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    verdict: Mapped[str] = mapped_column(String(16), index=True)
    #: how the record was found: manifest, sha256, watermark, fingerprint or None
    match: Mapped[str | None] = mapped_column(String(16))
    asset_id: Mapped[str | None] = mapped_column(ForeignKey("assets.id"), index=True)
    #: the full report, JSON
    report: Mapped[dict[str, Any]] = mapped_column(JSON)

    # declared for flush order only (see LineageEdge)
    asset: Mapped[Asset | None] = relationship(lazy="raise")

    @validates("verdict")
    def _validate_verdict(self, key: str, value: str) -> str:
        if value not in VERDICTS:
            raise ValidationError(f"verification.{key}", f"must be one of {', '.join(VERDICTS)}, got {value!r}")
        return value


class Refusal(Base):
    """A request that a policy plugin refused (hook ``check_policy``): who asked what, and why not."""

    __tablename__ = "refusals"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    requester: Mapped[str] = mapped_column(String(255), index=True)
    #: the plugin that refused
    plugin: Mapped[str] = mapped_column(String(255), index=True)
    reason: Mapped[str] = mapped_column(Text)
    prompt: Mapped[str] = mapped_column(Text)
    #: the whole request, JSON (``GenerationRequest.to_dict()``)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)

    @validates("id")
    def _validate_id(self, key: str, value: str) -> str:
        return _check_hex(f"refusal.{key}", value, 32)

    def __repr__(self) -> str:
        return f"Refusal(id={self.id!r}, plugin={self.plugin!r}, requester={self.requester!r})"


#: the fingerprint kinds an asset may have besides its pHash (which lives on the asset row, in indexed bands)
FINGERPRINT_KINDS = ("dhash",)


class Fingerprint(Base):
    """A further perceptual hash of an asset: ``dhash`` (imagehash's 64-bit difference hash, 16 hex digits).

    Verification confirms a pHash candidate with it (see ``Registry.match_fingerprint``). It lives in its own
    table, not on the asset row, so that adding a hash kind never changes an audited asset record; assets
    registered before this table simply have none.
    """

    __tablename__ = "fingerprints"
    __table_args__ = (UniqueConstraint("asset_id", "kind"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    asset_id: Mapped[str] = mapped_column(ForeignKey("assets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(64))
    #: not loaded (lazy="raise"); it tells the unit of work to insert the asset before its fingerprints
    asset: Mapped[Asset] = relationship(lazy="raise")

    @validates("id")
    def _validate_id(self, key: str, value: str) -> str:
        return _check_hex(f"fingerprint.{key}", value, 32)

    @validates("kind")
    def _validate_kind(self, key: str, value: str) -> str:
        if value not in FINGERPRINT_KINDS:
            raise ValidationError(f"fingerprint.{key}", f"must be one of {', '.join(FINGERPRINT_KINDS)}, got {value!r}")
        return value

    @validates("value")
    def _validate_value(self, key: str, value: str) -> str:
        return _check_hex(f"fingerprint.{key}", value, 16)

    def __repr__(self) -> str:
        return f"Fingerprint(asset_id={self.asset_id!r}, kind={self.kind!r}, value={self.value!r})"


#: states of a batch job: ``done`` (its generation is registered) or ``failed`` (with the reason)
JOB_STATUSES = ("done", "failed")


class BatchJob(Base):
    """One job of ``provgen batch``, by its idempotency key: done (with its generation) or failed (with why).

    A ``done`` row is inserted, or a ``failed`` row turned ``done``, in the same transaction as the generation's
    records, and ``job_key`` is unique: a job is registered at most once, whatever crashes or runs in parallel.
    ``request_sha256`` is the hash of the request the key was first used for, so a client ``job_id`` reused for
    a different request is refused instead of skipped.
    """

    __tablename__ = "batch_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    #: the client's ``job_id``, or ``sha256:`` + the hash of the request
    job_key: Mapped[str] = mapped_column(String(255), unique=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)
    #: the generation that did the job (``done``); ``None`` while it has only failed
    generation_id: Mapped[str | None] = mapped_column(ForeignKey("generations.id"), index=True)
    #: why the last attempt failed (kept when a later attempt succeeds)
    reason: Mapped[str | None] = mapped_column(Text)
    #: attempts recorded so far (failures, plus the one that succeeded)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    #: the request as JSON (``GenerationRequest.to_dict()``, or the raw line when it did not parse)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)

    # declared for flush order only (see LineageEdge)
    generation: Mapped[Generation | None] = relationship(lazy="raise")

    @validates("id")
    def _validate_id(self, key: str, value: str) -> str:
        return _check_hex(f"batch_job.{key}", value, 32)

    @validates("request_sha256")
    def _validate_request_sha256(self, key: str, value: str) -> str:
        return _check_hex(f"batch_job.{key}", value, 64)

    @validates("job_key")
    def _validate_job_key(self, key: str, value: str) -> str:
        if not isinstance(value, str) or not value or len(value) > 255:
            raise ValidationError(f"batch_job.{key}",
                                  f"must be a non-empty string of at most 255 characters, got {value!r}")
        return value

    @validates("status")
    def _validate_status(self, key: str, value: str) -> str:
        if value not in JOB_STATUSES:
            raise ValidationError(f"batch_job.{key}", f"must be one of {', '.join(JOB_STATUSES)}, got {value!r}")
        return value

    def __repr__(self) -> str:
        return f"BatchJob(job_key={self.job_key!r}, status={self.status!r}, generation_id={self.generation_id!r})"


class AuditEntry(Base):
    """One entry of the append-only audit log, a hash chain over every record written.

    ``record_hash`` is the sha256 of the record's canonical JSON as stored; ``entry_hash`` the sha256 of this
    entry's canonical JSON (time, type, id, action, record hash) and ``prev_hash``, the previous entry's hash
    (64 zeros for the first). ``seq`` numbers entries 1, 2, 3, ... See ``provgen.provenance.registry.audit``.
    """

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_record", "record_type", "record_id", "seq"),)

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: ``generation``, ``asset``, ``edge``, ``verification``, ``refusal``, ``fingerprint`` or ``job``
    record_type: Mapped[str] = mapped_column(String(32))
    record_id: Mapped[str] = mapped_column(String(64))
    #: ``insert`` or ``update`` (records are never deleted)
    action: Mapped[str] = mapped_column(String(16))
    record_hash: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64), unique=True)


class Checkpoint(Base):
    """A signed statement of the audit chain head: "entry ``seq`` had hash ``head_hash`` at ``created_at``"."""

    __tablename__ = "checkpoints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    head_hash: Mapped[str] = mapped_column(String(64))
    #: the exact bytes signed: canonical JSON of registry, seq, head_hash, created_at
    payload: Mapped[str] = mapped_column(Text)
    #: JOSE name of the signature algorithm (ES256, ES384, ES512, PS256, EdDSA)
    algorithm: Mapped[str] = mapped_column(String(16))
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    #: PEM chain of the signer, leaf first
    certificate_chain: Mapped[str] = mapped_column(Text)
    signer: Mapped[str] = mapped_column(String(512))


#: record type name -> model, for every table the audit log covers
AUDITED: dict[str, type[Base]] = {
    "generation": Generation,
    "asset": Asset,
    "edge": LineageEdge,
    "verification": Verification,
    "refusal": Refusal,
    "fingerprint": Fingerprint,
    "job": BatchJob,
}
