"""Policy: ask the ``check_policy`` implementations, plugin by plugin, whether a request may run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from provgen.core.errors import PluginHookError

if TYPE_CHECKING:
    import pluggy

    from provgen.core.config import Settings
    from provgen.core.request import GenerationRequest

__all__ = ["PolicyDecision", "first_refusal"]

MAX_REASON = 2000


@dataclass(frozen=True)
class PolicyDecision:
    """A refusal returned by ``check_policy``: why the request will not run.

    ``reason`` is shown to the user and recorded in the registry (keep it short and do not echo secrets).
    """

    reason: str

    def __post_init__(self) -> None:
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise ValueError("PolicyDecision.reason must be a non-empty string")


def first_refusal(pm: pluggy.PluginManager, request: GenerationRequest,
                  settings: Settings) -> tuple[str, PolicyDecision] | None:
    """``(plugin name, decision)`` of the first implementation that refuses ``request``, or ``None``.

    Called implementation by implementation (pluggy's order) so the refusing plugin can be named.
    """
    from provgen.core.engine import call_each

    for plugin, decision in call_each(pm, "check_policy", request=request, settings=settings):
        if decision is None:
            continue
        if not isinstance(decision, PolicyDecision):
            raise PluginHookError(plugin, "check_policy", TypeError(
                f"must return a PolicyDecision or None, not {type(decision).__name__}"))
        return plugin, PolicyDecision(decision.reason.strip()[:MAX_REASON])
    return None
