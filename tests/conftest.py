from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # any accidental hub access fails at once
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import secrets  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from functools import cache  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

PG_URL = os.environ.get("PROVGEN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

_ENV = ("PROVGEN_HOME", "PROVGEN_REGISTRY_URL", "PROVGEN_CERT", "PROVGEN_KEY", "PROVGEN_TRUST_ANCHORS",
        "PROVGEN_USER", "PROVGEN_PLUGINS", "PROVGEN_DISABLE_PLUGIN_AUTOLOAD", "PROVGEN_MODEL",
        "PROVGEN_DEVICE", "PROVGEN_DTYPE", "PROVGEN_WATERMARK", "PROVGEN_TSA_URL", "PROVGEN_KEY_PASSWORD",
        "PROVGEN_TRAINING_MINING", "PROVGEN_BLOCKLIST")


@pytest.fixture(autouse=True)
def provgen_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own PROVGEN_HOME (keys, SQLite registry, caches) and a fresh plugin manager."""
    from provgen.core.plugins import reset_plugin_manager

    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "provgen-home"
    monkeypatch.setenv("PROVGEN_HOME", str(home))
    monkeypatch.setenv("PROVGEN_USER", "tester")
    monkeypatch.setenv("PROVGEN_DEVICE", "cpu")
    reset_plugin_manager()
    yield home
    reset_plugin_manager()


@pytest.fixture(scope="session")
def torch_one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # bitwise determinism needs a fixed thread count; 1 is fastest on 2 cores


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory, torch_one_thread: None) -> Path:
    from provgen.core.tiny_models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory: pytest.TempPathFactory, torch_one_thread: None) -> Path:
    from provgen.core.tiny_models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sdxl", sdxl=True)


# ------------------------------------------------------------------ registry backends
# PostgreSQL tests get a fresh database per test, created from PROVGEN_TEST_POSTGRES_URL (default: the local
# ``test`` database) and dropped afterwards. Without a reachable server they skip, unless ``CI`` is set.


@cache
def _postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used for tests, or None if it can."""
    from sqlalchemy.engine import make_url

    from provgen.provenance.registry import make_engine

    try:
        engine = make_engine(PG_URL)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "no server"
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return f"no PostgreSQL at {make_url(PG_URL).render_as_string()} ({reason})"
    return None


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A URL to a new, empty database on the test server; dropped (WITH (FORCE)) afterwards."""
    from sqlalchemy.engine import make_url

    from provgen.provenance.registry import make_engine

    problem = _postgres_problem()
    if problem is not None:
        message = f"{problem}; set PROVGEN_TEST_POSTGRES_URL to a server where the user may CREATE DATABASE"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    admin = make_engine(PG_URL).execution_options(isolation_level="AUTOCOMMIT")
    name = f"provgen_test_{secrets.token_hex(6)}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A URL to a blank database, one per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry' / 'registry.sqlite'}"
    else:
        with fresh_postgres_database() as url:
            yield url


