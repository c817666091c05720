from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # any accidental hub access fails at once
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

_ENV = ("PROVGEN_HOME", "PROVGEN_REGISTRY_URL", "PROVGEN_CERT", "PROVGEN_KEY", "PROVGEN_TRUST_ANCHORS",
        "PROVGEN_USER", "PROVGEN_PLUGINS", "PROVGEN_DISABLE_PLUGIN_AUTOLOAD", "PROVGEN_MODEL",
        "PROVGEN_DEVICE", "PROVGEN_DTYPE", "PROVGEN_WATERMARK")


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
