"""Settings from the environment (and explicit overrides).

``PROVGEN_HOME`` (default ``~/.provgen``) holds keys, caches and the default SQLite registry.
``PROVGEN_REGISTRY_URL`` (default ``sqlite:///$PROVGEN_HOME/registry.db``) selects the registry.
``PROVGEN_MODEL`` (default ``shapes``, the small model shipped with provgen) is the model used without ``--model``.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Settings", "load_settings", "DEFAULT_MODEL"]

#: the model used when neither ``--model``, ``PROVGEN_MODEL`` nor the settings name one: provgen's own small
#: model, registered by the built-in plugin ``provgen.plugins.shapes_model`` (docs/models/shapes.md)
DEFAULT_MODEL = "shapes"


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build with :func:`load_settings`; override with :meth:`replace`."""

    home: Path
    registry_url: str
    #: who requested generations (recorded in the registry); ``PROVGEN_USER`` or the login name
    user: str
    #: organisation certificate chain (PEM, leaf first) and private key; ``None`` = development keys
    cert_path: Path | None = None
    key_path: Path | None = None
    #: extra PEM files whose certificates verification trusts as anchors
    trust_anchor_paths: tuple[Path, ...] = ()
    #: torch device / dtype override ("cuda", "cpu", "mps"; "float16", "bfloat16", "float32")
    device: str | None = None
    dtype: str | None = None
    #: ``--model`` when none is given (``PROVGEN_MODEL``, else :data:`DEFAULT_MODEL`); ``None`` makes a model
    #: required on every request
    default_model: str | None = DEFAULT_MODEL
    #: watermark method name used for new images
    watermark_method: str = "provgen-wm/1"
    #: fingerprint match thresholds (Hamming distances of 64-bit hashes), from benchmarks/fingerprint_calibration.py:
    #: a record with a dHash matches with pHash <= fingerprint_max_phash and dHash <= fingerprint_max_dhash; one
    #: without (registered before dHashes were kept) with pHash <= fingerprint_max_distance
    fingerprint_max_distance: int = 7
    fingerprint_max_phash: int = 14
    fingerprint_max_dhash: int = 13
    #: RFC 3161 timestamp authority asked to countersign every manifest (``PROVGEN_TSA_URL``); ``None`` = none
    tsa_url: str | None = None
    #: the ``cawg.training-mining`` assertion (``PROVGEN_TRAINING_MINING``; see provenance/training_mining.py)
    training_mining: str = "notAllowed"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


def load_settings(**overrides: object) -> Settings:
    """Read the ``PROVGEN_*`` environment; keyword arguments win over the environment."""
    home = _env_path("PROVGEN_HOME") or Path("~/.provgen").expanduser()
    registry_url = os.environ.get("PROVGEN_REGISTRY_URL") or f"sqlite:///{home / 'registry.db'}"
    anchors = tuple(
        Path(p).expanduser() for p in os.environ.get("PROVGEN_TRUST_ANCHORS", "").split(os.pathsep) if p
    )
    settings = Settings(
        home=home,
        registry_url=registry_url,
        user=os.environ.get("PROVGEN_USER") or _login(),
        cert_path=_env_path("PROVGEN_CERT"),
        key_path=_env_path("PROVGEN_KEY"),
        trust_anchor_paths=anchors,
        device=os.environ.get("PROVGEN_DEVICE") or None,
        dtype=os.environ.get("PROVGEN_DTYPE") or None,
        watermark_method=os.environ.get("PROVGEN_WATERMARK") or "provgen-wm/1",
        default_model=os.environ.get("PROVGEN_MODEL") or DEFAULT_MODEL,
        tsa_url=os.environ.get("PROVGEN_TSA_URL") or None,
        training_mining=os.environ.get("PROVGEN_TRAINING_MINING") or "notAllowed",
    )
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "home" in overrides and "registry_url" not in overrides and not os.environ.get("PROVGEN_REGISTRY_URL"):
        overrides["registry_url"] = f"sqlite:///{Path(str(overrides['home'])) / 'registry.db'}"
    return settings.replace(**overrides) if overrides else settings
