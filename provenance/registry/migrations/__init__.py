"""Alembic migrations of the lineage registry, shipped in the package; run by ``registry.db.upgrade``."""
