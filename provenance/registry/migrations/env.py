"""Alembic environment of the lineage registry.

provgen runs it programmatically (``provgen.provenance.registry.db.upgrade``) and hands over its own
connection in ``config.attributes["connection"]``. Run from the ``alembic`` command line (see ``alembic.ini``
next to this file) it connects to ``PROVGEN_REGISTRY_URL`` or the ini's ``sqlalchemy.url``.
``--sql`` (offline) mode is supported.
"""

from __future__ import annotations

import logging.config
import os
from typing import Any

from alembic import context
from sqlalchemy import Connection

from provgen.provenance.registry.db import make_engine
from provgen.provenance.registry.models import Base, UTCDateTime

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.attributes.get("connection") is None:
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render provgen's own column types as plain SQLAlchemy types, so revisions never import provgen."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _options() -> dict[str, Any]:
    # render_as_batch: ALTER on SQLite is emulated by move-and-copy; a no-op elsewhere.
    # transactional_ddl: SQLite and PostgreSQL both roll DDL back, so an upgrade is all or nothing.
    return {
        "target_metadata": target_metadata,
        "render_as_batch": True,
        "transactional_ddl": True,
        "compare_type": True,
        "render_item": render_item,
    }


def _url() -> str:
    url = os.environ.get("PROVGEN_REGISTRY_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set PROVGEN_REGISTRY_URL or sqlalchemy.url in alembic.ini")
    return url


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **_options())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"}, **_options())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
