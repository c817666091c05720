"""Which certificates verification trusts: the development root in ``$PROVGEN_HOME/keys`` plus configured ones."""

from __future__ import annotations

from provgen.core.config import Settings
from provgen.core.errors import KeyConfigError

__all__ = ["trust_anchors_pem"]


def trust_anchors_pem(settings: Settings) -> bytes:
    """Concatenated PEM certificates: ``keys/ca.pem`` if present, then ``PROVGEN_TRUST_ANCHORS`` files."""
    parts: list[bytes] = []
    dev_root = settings.keys_dir / "ca.pem"
    if dev_root.is_file():
        parts.append(dev_root.read_bytes())
    for path in settings.trust_anchor_paths:
        try:
            data = path.read_bytes()
        except OSError as error:
            raise KeyConfigError(
                f"`--trust-anchors`/`PROVGEN_TRUST_ANCHORS`: cannot read {str(path)!r}: {error.strerror}"
            ) from error
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise KeyConfigError(f"`--trust-anchors`/`PROVGEN_TRUST_ANCHORS`: {str(path)!r} holds no PEM certificate")
        parts.append(data)
    return b"\n".join(part.strip() + b"\n" for part in parts)
