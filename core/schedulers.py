"""Scheduler lookup by short name or diffusers class name, limited to what the loaded pipeline supports."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

import pluggy

from provgen.core.errors import ValidationError
from provgen.core.registries import collect

__all__ = ["SchedulerSpec", "SchedulerChoice", "registered_schedulers", "available_schedulers", "resolve_scheduler"]

#: DDPM-family (epsilon / v-prediction, discrete timesteps) schedulers that diffusers does not list in
#: ``compatibles`` but that run with the same UNets (LCM-LoRA, TCD-LoRA, SA-Solver).
_DDPM_FAMILY_EXTRAS = ("LCMScheduler", "TCDScheduler", "SASolverScheduler")


@dataclass(frozen=True)
class SchedulerSpec:
    name: str
    class_name: str
    config: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    requires: tuple[str, ...] = ()

    def missing_requirements(self) -> list[str]:
        return [module for module in self.requires if importlib.util.find_spec(module) is None]


@dataclass(frozen=True)
class SchedulerChoice:
    """A scheduler as offered for one pipeline."""

    spec: SchedulerSpec
    available: bool
    reason: str = ""


def _spec(name: str, class_name: str, *, config: dict[str, Any] | None = None, description: str = "",
          requires: tuple[str, ...] | list[str] = ()) -> SchedulerSpec:
    """The ``register`` signature of ``register_schedulers``."""
    return SchedulerSpec(name, class_name, dict(config or {}), description, tuple(requires))


def registered_schedulers(pm: pluggy.PluginManager) -> dict[str, SchedulerSpec]:
    return {name: entry.item for name, entry in collect(pm, "register_schedulers", _spec, lambda s: s.name).items()}


def _compatible_class_names(pipeline: Any) -> set[str]:
    current = type(pipeline.scheduler)
    names = {current.__name__} | {cls.__name__ for cls in getattr(pipeline.scheduler, "compatibles", ())}
    if "DDIMScheduler" in names or "EulerDiscreteScheduler" in names:
        names.update(_DDPM_FAMILY_EXTRAS)
    return names


def available_schedulers(pm: pluggy.PluginManager, pipeline: Any) -> dict[str, SchedulerChoice]:
    """Every registered short name whose class fits the pipeline, plus every compatible class by its name."""
    import diffusers

    compatible = _compatible_class_names(pipeline)
    choices: dict[str, SchedulerChoice] = {}
    for spec in registered_schedulers(pm).values():
        if spec.class_name not in compatible or not hasattr(diffusers, spec.class_name):
            continue
        missing = spec.missing_requirements()
        reason = f"needs {', '.join(missing)} (pip install {' '.join(missing)})" if missing else ""
        choices[spec.name] = SchedulerChoice(spec, not missing, reason)
    by_class = {c.spec.class_name: c for c in choices.values() if not c.spec.config}
    for class_name in sorted(compatible):
        if class_name in choices or not hasattr(diffusers, class_name):
            continue
        base = by_class.get(class_name)
        spec = SchedulerSpec(class_name, class_name, {}, "diffusers class", base.spec.requires if base else ())
        choices[class_name] = SchedulerChoice(spec, base.available if base else True, base.reason if base else "")
    return choices


def resolve_scheduler(pm: pluggy.PluginManager, pipeline: Any, name: str | None) -> SchedulerSpec:
    """The scheduler to use; ``None`` keeps the pipeline's own. Unknown names list the valid ones."""
    if name is None:
        current = type(pipeline.scheduler).__name__
        return SchedulerSpec(current, current, {}, "the pipeline's default")
    choices = available_schedulers(pm, pipeline)
    choice = choices.get(name)
    if choice is None:
        valid = ", ".join(sorted(n for n, c in choices.items() if c.available))
        raise ValidationError("scheduler", f"unknown scheduler {name!r} for {type(pipeline).__name__}; "
                                           f"choose one of: {valid}")
    if not choice.available:
        raise ValidationError("scheduler", f"scheduler {name!r} {choice.reason}")
    return choice.spec


def make_scheduler(spec: SchedulerSpec, pipeline: Any) -> Any:
    """A new scheduler instance from the pipeline's scheduler config, with the spec's overrides."""
    import diffusers

    cls = getattr(diffusers, spec.class_name)
    return cls.from_config(pipeline.scheduler.config, **spec.config)
