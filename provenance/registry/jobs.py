"""Batch job records: which job keys are done (with which generation and assets), which failed and why.

``provgen batch`` gives every request a job key (the client's ``job_id`` or a hash of the request). The
provenance layer calls :func:`claim` inside the transaction that registers the generation, so the ``done``
row commits with the generation or not at all; the unique ``job_key`` (and, on PostgreSQL, a row lock on a
``failed`` row) keeps two runs from both registering one job. :func:`states` is the pre-check a (re-)run uses
to skip what is done; :func:`record_failure` keeps the reason of a failed attempt in its own transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from provgen.core.errors import JobAlreadyDone, RegistryError
from provgen.provenance.registry.models import Asset, BatchJob, utcnow

if TYPE_CHECKING:
    from provgen.provenance.registry.store import Registry

__all__ = ["JobState", "claim", "states", "record_failure"]

#: job keys per ``IN (...)`` of :func:`states`
_IN_CHUNK = 500


@dataclass(frozen=True)
class JobState:
    """What the registry knows of one job key."""

    job_key: str
    status: str
    request_sha256: str
    generation_id: str | None
    reason: str | None
    attempts: int
    #: the job's assets (``done``), in batch order
    asset_ids: tuple[str, ...] = ()


def claim(session: Session, *, job_key: str, request_sha256: str, request: dict[str, Any],
          generation_id: str) -> None:
    """Mark ``job_key`` done by ``generation_id`` inside the caller's transaction (the one that registers the
    generation); flushes at once so a conflict surfaces before any file is moved into place.

    :raises JobAlreadyDone: the key is done already (by this or a concurrent run).
    """
    row = session.scalar(select(BatchJob).where(BatchJob.job_key == job_key).with_for_update())
    if row is not None and row.status == "done":
        raise JobAlreadyDone(job_key, row.generation_id)
    if row is None:
        session.add(BatchJob(job_key=job_key, request_sha256=request_sha256, status="done",
                             generation_id=generation_id, attempts=1, request=request))
    else:  # failed before: this attempt succeeded (the old reason stays, for the record)
        row.status, row.generation_id, row.attempts = "done", generation_id, row.attempts + 1
        row.request_sha256, row.request, row.updated_at = request_sha256, request, utcnow()
    try:
        session.flush()
    except IntegrityError as error:  # a concurrent run inserted the same key first (PostgreSQL; SQLite queues)
        if "job_key" in str(error.orig) or "batch_jobs" in str(error.orig):
            raise JobAlreadyDone(job_key) from error
        raise


def states(registry: Registry, job_keys: Iterable[str]) -> dict[str, JobState]:
    """The recorded state of each of ``job_keys`` that has one (unknown keys are absent)."""
    keys = list(dict.fromkeys(job_keys))

    def read(session: Session) -> dict[str, JobState]:
        found: dict[str, JobState] = {}
        for start in range(0, len(keys), _IN_CHUNK):
            rows = session.scalars(select(BatchJob).where(BatchJob.job_key.in_(keys[start : start + _IN_CHUNK])))
            jobs = list(rows)
            generations = [job.generation_id for job in jobs if job.generation_id]
            assets: dict[str, list[str]] = {}
            if generations:
                for generation_id, asset_id in session.execute(
                    select(Asset.generation_id, Asset.id)
                    .where(Asset.generation_id.in_(generations))
                    .order_by(Asset.generation_id, Asset.batch_index)
                ):
                    assets.setdefault(generation_id, []).append(asset_id)
            for job in jobs:
                found[job.job_key] = JobState(job.job_key, job.status, job.request_sha256, job.generation_id,
                                              job.reason, job.attempts,
                                              tuple(assets.get(job.generation_id or "", ())))
        return found

    return registry.read("reading batch jobs from the registry", read)


def record_failure(registry: Registry, *, job_key: str, request_sha256: str, request: dict[str, Any],
                   reason: str) -> JobState:
    """Record a failed attempt of ``job_key`` (audited); a key that is done stays done. Returns the state."""
    for attempt in (1, 2):
        try:
            with registry.transaction() as session:
                row = session.scalar(select(BatchJob).where(BatchJob.job_key == job_key).with_for_update())
                if row is None:
                    row = BatchJob(job_key=job_key, request_sha256=request_sha256, status="failed", reason=reason,
                                   attempts=1, request=request)
                    session.add(row)
                elif row.status == "failed":
                    row.reason, row.attempts, row.updated_at = reason, row.attempts + 1, utcnow()
                    row.request_sha256, row.request = request_sha256, request
                return JobState(row.job_key, row.status, row.request_sha256, row.generation_id, row.reason,
                                row.attempts)
        except RegistryError:
            # a concurrent run inserted the key between our SELECT and INSERT (PostgreSQL): read it again
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
