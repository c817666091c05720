"""The CAWG training-and-data-mining assertion (``cawg.training-mining``): may this image be used to train AI?

Configured with ``PROVGEN_TRAINING_MINING`` (default ``notAllowed``): one of ``allowed``, ``notAllowed`` or
``constrained`` for all four uses, a comma-separated list of ``USE=VALUE`` pairs (uses: ``ai_training``,
``ai_generative_training``, ``ai_inference``, ``data_mining``; the ones not listed stay ``notAllowed``), or
``off`` to leave the assertion out. See the CAWG training and data mining assertion specification.
"""

from __future__ import annotations

from typing import Any

from provgen.core.errors import ValidationError

__all__ = ["LABEL", "USES", "VALUES", "DEFAULT", "parse"]

LABEL = "cawg.training-mining"
USES = ("ai_generative_training", "ai_inference", "ai_training", "data_mining")
VALUES = ("allowed", "notAllowed", "constrained")
DEFAULT = "notAllowed"
_FIELD = "PROVGEN_TRAINING_MINING"


def parse(value: str | None) -> dict[str, Any] | None:
    """The assertion data for ``value`` (see the module docstring), or ``None`` for ``off``.

    :raises ValidationError: an unknown use or value, naming ``PROVGEN_TRAINING_MINING``.
    """
    text = (value if value is not None else DEFAULT).strip()
    if text.lower() in ("off", "none", ""):
        return None
    uses = dict.fromkeys(USES, "notAllowed")
    if "=" not in text:
        uses = dict.fromkeys(USES, _value(text))
    else:
        for pair in text.split(","):
            use, _, choice = pair.partition("=")
            use = use.strip().removeprefix("cawg.")
            if use not in USES:
                raise ValidationError(_FIELD, f"unknown use {use!r} in {text!r}; uses: {', '.join(USES)}")
            uses[use] = _value(choice)
    return {"entries": {f"cawg.{use}": {"use": choice} for use, choice in uses.items()}}


def _value(choice: str) -> str:
    for known in VALUES:
        if choice.strip().lower() == known.lower():
            return known
    raise ValidationError(_FIELD, f"{choice.strip()!r} is not one of {', '.join(VALUES)} (or `off`)")
