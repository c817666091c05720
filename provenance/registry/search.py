"""Search the registry's assets by prompt, model, plugin, requester, time, latest verdict and kind.

.. code-block:: python

    hits = search_assets(registry, SearchFilters(prompt="lighthouse", verdict="tampered", limit=20))

Every filter given must match (AND); hits come newest first. Only small columns are read (never the manifest
store). Indexes used: ``assets.created_at`` (order, ``since``/``until``), ``verifications.verdict`` and
``verifications.asset_id`` (``verdict``); the generation filters are checked on the joined generation rows.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, literal, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from provgen.core.errors import ValidationError
from provgen.provenance.registry import db
from provgen.provenance.registry.models import ASSET_KINDS, VERDICTS, Asset, Generation, Verification
from provgen.provenance.registry.store import Registry

__all__ = ["SearchFilters", "AssetHit", "search_assets", "parse_when", "MODEL_HASH_PREFIX"]

#: ``--model`` values that also match as a prefix of the weights' sha256 (6 to 64 hex characters)
MODEL_HASH_PREFIX = re.compile(r"[0-9a-f]{6,64}")
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
#: name of the SQLite function registered for Unicode-aware lower-casing (SQLite's lower() is ASCII only)
_SQLITE_LOWER = "provgen_lower"


def parse_when(value: str, *, upper: bool = False) -> datetime:
    """A tz-aware UTC datetime from an ISO 8601 date or datetime; naive values are taken as UTC.

    With ``upper`` the value is an inclusive upper bound, returned as the first instant after it (the
    exclusive bound :attr:`SearchFilters.before` wants): the next midnight for a bare date, so the whole day
    is included, and one microsecond later for a datetime. :raises ValueError: not an ISO date or datetime.
    """
    text = value.strip()
    if _DATE_ONLY.fullmatch(text):
        try:
            moment = datetime.combine(date.fromisoformat(text), time(0), tzinfo=UTC)
        except ValueError as error:
            raise ValueError(f"{value!r} is not a valid date: {error}") from None
        return moment + timedelta(days=1) if upper else moment
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an ISO 8601 date or datetime (e.g. 2026-05-01, 2026-05-01T13:30, "
            "2026-05-01T13:30:00+02:00)"
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment + timedelta(microseconds=1) if upper else moment


@dataclass(frozen=True)
class SearchFilters:
    """What to look for; every field left ``None`` matches everything.

    ``since`` is inclusive and ``before`` exclusive (both tz-aware), on the asset's ``created_at``.
    """

    #: case-insensitive substring of the generation's prompt (``%`` and ``_`` are literal)
    prompt: str | None = None
    #: exact ``model_id``, or a prefix (6+ hex characters) of ``model_hash``
    model: str | None = None
    #: name of a plugin that took part in the generation (exact)
    plugin: str | None = None
    #: the generation's requester (exact)
    user: str | None = None
    since: datetime | None = None
    before: datetime | None = None
    #: verdict of the asset's most recent recorded verification
    verdict: str | None = None
    #: ``generated`` or ``external``
    kind: str | None = None
    limit: int = 50

    def __post_init__(self) -> None:
        if self.verdict is not None and self.verdict not in VERDICTS:
            raise ValidationError("verdict", f"must be one of {', '.join(VERDICTS)}, got {self.verdict!r}")
        if self.kind is not None and self.kind not in ASSET_KINDS:
            raise ValidationError("kind", f"must be one of {', '.join(ASSET_KINDS)}, got {self.kind!r}")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ValidationError("limit", f"must be a positive integer, got {self.limit!r}")
        for name in ("since", "before"):
            moment = getattr(self, name)
            if moment is not None and (moment.tzinfo is None or moment.utcoffset() is None):
                raise ValidationError(name, f"must be a tz-aware datetime, got {moment!r}")


@dataclass(frozen=True)
class AssetHit:
    """One asset found, with its generation's main fields and its latest verification (if any)."""

    id: str
    kind: str
    created_at: datetime
    sha256: str
    format: str
    path: str | None
    generation_id: str | None
    batch_index: int | None
    requester: str | None
    model_id: str | None
    model_hash: str | None
    prompt: str | None
    plugins: list[str] | None
    #: verdict and time of the asset's most recent recorded verification
    verdict: str | None
    verified_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (times in ISO 8601 UTC with microseconds)."""
        data = asdict(self)
        for key in ("created_at", "verified_at"):
            if data[key] is not None:
                data[key] = data[key].astimezone(UTC).isoformat(timespec="microseconds")
        return data


def _latest_verification(column: Any) -> Any:
    """The correlated subquery "``column`` of the asset's newest verification" (index ``asset_id``)."""
    return (
        select(column)
        .where(Verification.asset_id == Asset.id)
        .order_by(Verification.created_at.desc(), Verification.id.desc())
        .limit(1)
        .correlate(Asset)
        .scalar_subquery()
    )


def _lower_unicode(session: Session) -> Any:
    """A SQL function that lower-cases like Python, made available on this session's connection."""
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return func.lower
    raw = connection.connection.driver_connection
    raw.create_function(_SQLITE_LOWER, 1, lambda text: None if text is None else text.lower(), deterministic=True)
    return getattr(func, _SQLITE_LOWER)


def _plugin_filter(dialect: str, name: str) -> ColumnElement[bool]:
    """``name`` is the ``"name"`` of one element of the generation's ``plugins`` JSON list (exact match)."""
    if dialect == "sqlite":
        element = func.json_each(Generation.plugins).table_valued("value").alias("plugin")
        return exists(
            select(literal(1)).select_from(element).where(func.json_extract(element.c.value, "$.name") == name)
        )
    if dialect == "postgresql":
        element = func.json_array_elements(Generation.plugins).table_valued("value").alias("plugin")
        return exists(select(literal(1)).select_from(element).where(element.c.value.op("->>")("name") == name))
    raise ValidationError("plugin", f"plugin search is not supported on {dialect}")  # pragma: no cover


def _statement(session: Session, filters: SearchFilters) -> Select[Any]:
    dialect = session.connection().dialect.name
    verdict = _latest_verification(Verification.verdict)
    statement = (
        select(
            Asset.id,
            Asset.kind,
            Asset.created_at,
            Asset.sha256,
            Asset.format,
            Asset.path,
            Asset.generation_id,
            Asset.batch_index,
            Generation.requester,
            Generation.model_id,
            Generation.model_hash,
            Generation.prompt,
            Generation.plugins,
            verdict.label("verdict"),
            _latest_verification(Verification.created_at).label("verified_at"),
        )
        .outerjoin(Generation, Generation.id == Asset.generation_id)
        .order_by(Asset.created_at.desc(), Asset.id.desc())
        .limit(filters.limit)
    )
    criteria: list[ColumnElement[bool]] = []
    if filters.prompt is not None:
        if dialect == "postgresql":
            criteria.append(Generation.prompt.icontains(filters.prompt, autoescape=True))
        else:
            lower = _lower_unicode(session)
            criteria.append(lower(Generation.prompt).contains(filters.prompt.lower(), autoescape=True))
    if filters.model is not None:
        wanted = filters.model.strip()
        if MODEL_HASH_PREFIX.fullmatch(wanted.lower()):
            criteria.append(
                (Generation.model_id == wanted) | Generation.model_hash.startswith(wanted.lower(), autoescape=True)
            )
        else:
            criteria.append(Generation.model_id == wanted)
    if filters.plugin is not None:
        criteria.append(_plugin_filter(dialect, filters.plugin))
    if filters.user is not None:
        criteria.append(Generation.requester == filters.user)
    if filters.since is not None:
        criteria.append(Asset.created_at >= filters.since)
    if filters.before is not None:
        criteria.append(Asset.created_at < filters.before)
    if filters.kind is not None:
        criteria.append(Asset.kind == filters.kind)
    if filters.verdict is not None:
        # The verdict index narrows to assets ever given this verdict; the newest one must still have it.
        ever = select(Verification.asset_id).where(Verification.verdict == filters.verdict)
        criteria.append(and_(Asset.id.in_(ever), verdict == filters.verdict))
    return statement.where(*criteria) if criteria else statement


def search_assets(registry: Registry, filters: SearchFilters) -> list[AssetHit]:
    """Assets matching every filter in ``filters``, newest first, at most ``filters.limit``.

    :raises RegistryError: the database failed.
    """
    try:
        with registry.session() as session:
            rows = session.execute(_statement(session, filters)).all()
    except DBAPIError as exc:
        raise db.translate_error(exc, registry.engine, "searching the registry") from exc
    return [
        AssetHit(
            id=row.id,
            kind=row.kind,
            created_at=row.created_at,
            sha256=row.sha256,
            format=row.format,
            path=row.path,
            generation_id=row.generation_id,
            batch_index=row.batch_index,
            requester=row.requester,
            model_id=row.model_id,
            model_hash=row.model_hash,
            prompt=row.prompt,
            plugins=None if row.plugins is None else [str(p.get("name")) for p in row.plugins if isinstance(p, dict)],
            verdict=row.verdict,
            verified_at=_utc(row.verified_at),
        )
        for row in rows
    ]


def _utc(value: Any) -> datetime | None:
    """The scalar subquery bypasses ``UTCDateTime``: SQLite hands back a string, PostgreSQL an aware datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
