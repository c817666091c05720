"""Built-in plugin: the diffusers noise schedulers under the short names other tools use."""

from __future__ import annotations

from collections.abc import Callable

from provgen.core.hookspecs import hookimpl

PLUGIN_NAME = "schedulers"

_DPMPP = {"algorithm_type": "dpmsolver++", "solver_order": 2}
_SDE = {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}
_KARRAS = {"use_karras_sigmas": True}

#: (short name, diffusers class, config overrides, description, required modules)
SCHEDULERS: tuple[tuple[str, str, dict, str, tuple[str, ...]], ...] = (
    ("ddim", "DDIMScheduler", {}, "DDIM", ()),
    ("ddpm", "DDPMScheduler", {}, "DDPM (ancestral, needs many steps)", ()),
    ("pndm", "PNDMScheduler", {}, "PNDM / PLMS", ()),
    ("lms", "LMSDiscreteScheduler", {}, "linear multistep", ("scipy",)),
    ("lms_karras", "LMSDiscreteScheduler", _KARRAS, "linear multistep, Karras sigmas", ("scipy",)),
    ("euler", "EulerDiscreteScheduler", {}, "Euler", ()),
    ("euler_a", "EulerAncestralDiscreteScheduler", {}, "Euler ancestral", ()),
    ("heun", "HeunDiscreteScheduler", {}, "Heun (2nd order)", ()),
    ("dpm2", "KDPM2DiscreteScheduler", {}, "DPM2", ()),
    ("dpm2_a", "KDPM2AncestralDiscreteScheduler", {}, "DPM2 ancestral", ()),
    ("dpmpp_2m", "DPMSolverMultistepScheduler", _DPMPP, "DPM++ 2M", ()),
    ("dpmpp_2m_karras", "DPMSolverMultistepScheduler", {**_DPMPP, **_KARRAS}, "DPM++ 2M Karras", ()),
    ("dpmpp_2m_sde", "DPMSolverMultistepScheduler", _SDE, "DPM++ 2M SDE", ()),
    ("dpmpp_2m_sde_karras", "DPMSolverMultistepScheduler", {**_SDE, **_KARRAS}, "DPM++ 2M SDE Karras", ()),
    ("dpmpp_sde", "DPMSolverSDEScheduler", {}, "DPM++ SDE", ("torchsde",)),
    ("dpmpp_2s", "DPMSolverSinglestepScheduler", {}, "DPM++ singlestep", ()),
    ("deis", "DEISMultistepScheduler", {}, "DEIS multistep", ()),
    ("unipc", "UniPCMultistepScheduler", {}, "UniPC", ()),
    ("edm_euler", "EDMEulerScheduler", {}, "EDM Euler", ()),
    ("lcm", "LCMScheduler", {}, "latent consistency (few steps; use with an LCM model or LCM-LoRA)", ()),
    ("tcd", "TCDScheduler", {}, "trajectory consistency distillation (few steps; with TCD-LoRA)", ()),
    ("sa_solver", "SASolverScheduler", {}, "SA-Solver", ()),
    ("flow_euler", "FlowMatchEulerDiscreteScheduler", {}, "flow matching Euler (SD3, FLUX)", ()),
    ("flow_heun", "FlowMatchHeunDiscreteScheduler", {}, "flow matching Heun (SD3, FLUX)", ()),
)


@hookimpl
def register_schedulers(register: Callable[..., None]) -> None:
    for name, class_name, config, description, requires in SCHEDULERS:
        register(name, class_name, config=config, description=description, requires=requires)
