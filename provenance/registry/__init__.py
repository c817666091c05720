"""The lineage registry: every generation and every asset provgen writes, on SQLite or PostgreSQL.

``open_registry(url)`` connects and migrates the schema (Alembic revisions shipped in ``migrations/``);
the :class:`Registry` it returns writes in :meth:`Registry.transaction` (every write is appended to the
audit hash chain, ``audit``) and looks assets up by id, sha256, watermark id, C2PA manifest label or nearest
perceptual hash; ``checkpoints`` signs the chain head.
"""

from provgen.provenance.registry.db import check, current_revision, head_revision, make_engine, upgrade
from provgen.provenance.registry.models import (
    Asset,
    AuditEntry,
    Base,
    BatchJob,
    Checkpoint,
    Fingerprint,
    Generation,
    LineageEdge,
    Refusal,
    Verification,
)
from provgen.provenance.registry.store import Registry, open_registry

__all__ = [
    "open_registry",
    "Registry",
    "Generation",
    "Asset",
    "LineageEdge",
    "Verification",
    "Refusal",
    "Fingerprint",
    "BatchJob",
    "AuditEntry",
    "Checkpoint",
    "Base",
    "make_engine",
    "upgrade",
    "current_revision",
    "head_revision",
    "check",
]
