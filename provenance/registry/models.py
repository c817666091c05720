"""Typed SQLAlchemy 2.0 models of the lineage registry.

One :class:`Generation` row per call to ``generate`` (the full recipe, the model and the plugins that ran)
and one :class:`Asset` row per image written (its hashes, watermark id, perceptual hash and signed C2PA
manifest store).

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
    "UTCDateTime",
    "new_id",
    "utcnow",
    "IMAGE_FORMATS",
    "WATERMARK_BITS",
    "MAX_SEED",
]

#: image formats an asset may have
IMAGE_FORMATS = ("png", "jpeg", "webp")
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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    requester: Mapped[str] = mapped_column(String(255))
    model_id: Mapped[str] = mapped_column(String(1024))
    #: sha256 hex of the model weights
    model_hash: Mapped[str] = mapped_column(String(64))
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
    """One image written by a generation."""

    __tablename__ = "assets"
    __table_args__ = (
        UniqueConstraint("generation_id", "batch_index"),
        CheckConstraint("format IN ('png', 'jpeg', 'webp')", name="format"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    generation_id: Mapped[str] = mapped_column(ForeignKey("generations.id"), index=True)
    batch_index: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: sha256 hex of the file as written
    sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    #: 48-bit id embedded by the invisible watermark
    watermark_id: Mapped[int] = mapped_column(BigInteger, unique=True, index=True)
    watermark_method: Mapped[str] = mapped_column(String(64))
    #: 64-bit perceptual hash as 16 hex characters
    phash: Mapped[str] = mapped_column(String(16), index=True)
    format: Mapped[str] = mapped_column(String(8))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    #: absolute path the file was written to
    path: Mapped[str] = mapped_column(Text)
    manifest_label: Mapped[str] = mapped_column(String(255), unique=True, index=True)
    #: the signed C2PA manifest store, kept so it can be re-attached to a stripped copy
    manifest_store: Mapped[bytes] = mapped_column(LargeBinary)

    generation: Mapped[Generation] = relationship(back_populates="assets", lazy="joined")

    @validates("id")
    def _validate_id(self, key: str, value: str) -> str:
        return _check_hex(f"asset.{key}", value, 32)

    @validates("sha256")
    def _validate_sha256(self, key: str, value: str) -> str:
        return _check_hex(f"asset.{key}", value, 64)

    @validates("phash")
    def _validate_phash(self, key: str, value: str) -> str:
        return _check_hex(f"asset.{key}", value, 16)

    @validates("seed")
    def _validate_seed(self, key: str, value: int) -> int:
        return _check_range(f"asset.{key}", value, 0, MAX_SEED)

    @validates("watermark_id")
    def _validate_watermark_id(self, key: str, value: int) -> int:
        return _check_range(f"asset.{key}", value, 0, 2**WATERMARK_BITS - 1)

    @validates("format")
    def _validate_format(self, key: str, value: str) -> str:
        if value not in IMAGE_FORMATS:
            raise ValidationError(f"asset.{key}", f"must be one of {', '.join(IMAGE_FORMATS)}, got {value!r}")
        return value

    def __repr__(self) -> str:
        return (
            f"Asset(id={self.id!r}, generation_id={self.generation_id!r}, batch_index={self.batch_index!r}, "
            f"format={self.format!r}, sha256={self.sha256[:12] + '…' if self.sha256 else None!r})"
        )
