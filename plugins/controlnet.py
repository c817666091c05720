"""Built-in plugin: ControlNet (``--controlnet MODEL=IMAGE[:SCALE]``, repeatable, with
``--control-guidance-start F`` / ``--control-guidance-end F``).

``plugin_options={"controlnet": ...}`` takes a spec string, a list of them, or
``{"units": [...], "guidance_start": F, "guidance_end": F}``. The pipeline is swapped for diffusers'
ControlNet variant of the loaded model (``AutoPipelineFor*.from_pipe(pipeline, controlnet=...)``, sharing the
loaded weights; several ControlNets become a ``MultiControlNetModel``); the cached pipeline is not changed.
Loaded ControlNets are cached with the engine's pipeline. Provenance: each control image is a C2PA ingredient
(``inputTo``) and a registry lineage edge (role ``controlnet``); each ControlNet model is recorded in the recipe
with its content hash (``plugins_data.controlnet``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provgen.core.context import ProvenanceContribution
from provgen.core.errors import ValidationError
from provgen.core.hookspecs import hookimpl
from provgen.plugins._conditioning import InputImage, cached_model, call_accepts, check_scale, spec_list, split_pair

if TYPE_CHECKING:
    from provgen.core.context import GenerationContext
    from provgen.core.request import GenerationRequest

PLUGIN_NAME = "controlnet"
FIELD = "controlnet"
OPTION = "--controlnet"
MAX_SCALE = 10.0
#: unet/ControlNet config keys that must agree for the residuals to fit
_MUST_MATCH = ("cross_attention_dim", "block_out_channels", "addition_embed_type")


@dataclass
class Unit:
    spec: str
    model: Path
    image: InputImage
    scale: float


@dataclass
class Options:
    units: list[Unit]
    guidance_start: float | None
    guidance_end: float | None


def _guidance(value: Any, option: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValidationError(FIELD, f"`{option}` must be a number from 0 to 1, got {value!r}")
    return float(value)


def parse(request: GenerationRequest) -> Options | None:
    """The request's ControlNet units, checked (``ValidationError`` naming the option); reads the images."""
    value = request.plugin_options.get(PLUGIN_NAME)
    if value is None:
        return None
    start = end = None
    if isinstance(value, Mapping):
        unknown = set(value) - {"units", "guidance_start", "guidance_end"}
        if unknown:
            raise ValidationError(FIELD, f"unknown controlnet option(s) {', '.join(sorted(map(str, unknown)))}; "
                                         "expected units, guidance_start, guidance_end")
        start = _guidance(value.get("guidance_start"), "--control-guidance-start")
        end = _guidance(value.get("guidance_end"), "--control-guidance-end")
        value = value.get("units") or []
    specs = spec_list(value, FIELD, OPTION) if value else []
    if not specs:
        if start is not None or end is not None:
            flag = "--control-guidance-start" if start is not None else "--control-guidance-end"
            raise ValidationError(FIELD, f"`{flag}` needs at least one `{OPTION} MODEL=IMAGE[:SCALE]`")
        return None
    if (start if start is not None else 0.0) >= (end if end is not None else 1.0):
        raise ValidationError(FIELD, f"`--control-guidance-start` ({start if start is not None else 0.0:g}) must be "
                                     f"less than `--control-guidance-end` ({end if end is not None else 1.0:g})")
    units = []
    for spec in specs:
        model_text, image_text, scale = split_pair(spec, FIELD, OPTION)
        scale = check_scale(1.0 if scale is None else scale, 0.0, MAX_SCALE, FIELD, OPTION, spec)
        model = Path(model_text).expanduser()
        _check_model_folder(model, spec)
        units.append(Unit(spec, model, InputImage(image_text, FIELD, OPTION, spec), scale))
    return Options(units, start, end)


def _check_model_folder(model: Path, spec: str) -> None:
    config = model / "config.json"
    if not model.is_dir() or not config.is_file():
        what = "does not exist" if not model.exists() else "is not a folder with a config.json"
        raise ValidationError(FIELD, f"`{OPTION} {spec}`: model {str(model)!r} {what}; pass a local ControlNet "
                                     "folder (as saved by ControlNetModel.save_pretrained)")
    try:
        class_name = json.loads(config.read_text()).get("_class_name", "")
    except (OSError, ValueError, AttributeError) as error:
        raise ValidationError(FIELD, f"`{OPTION} {spec}`: cannot read {str(config)!r}: {error}") from error
    if "ControlNet" not in str(class_name):
        raise ValidationError(FIELD, f"`{OPTION} {spec}`: {str(model)!r} holds a {class_name or 'unknown'} model, "
                                     "not a ControlNet")


def _load(unit: Unit, unet: Any) -> Any:
    from diffusers import ControlNetModel

    try:
        model = ControlNetModel.from_pretrained(str(unit.model), torch_dtype=unet.dtype, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        raise ValidationError(FIELD, f"`{OPTION} {unit.spec}`: could not load {str(unit.model)!r} with diffusers: "
                                     f"{error}") from error
    return model.to(unet.device)


def _check_fits(controlnet: Any, unet: Any, unit: Unit, model_id: str) -> None:
    for key in _MUST_MATCH:
        mine, theirs = controlnet.config.get(key), unet.config.get(key)
        if isinstance(mine, (list, tuple)) and isinstance(theirs, (list, tuple)):
            mine, theirs = list(mine), list(theirs)
        if mine != theirs:
            raise ValidationError(FIELD, f"`{OPTION} {unit.spec}`: this ControlNet does not fit {model_id} (its "
                                         f"{key} is {mine!r}, the model's {theirs!r}); use one trained for that "
                                         "base model")


def _auto_class(pipeline: Any) -> Any:
    """Keep the task of the current pipeline (text-to-image, img2img, inpainting) when adding the ControlNet."""
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

    name = type(pipeline).__name__
    if "Inpaint" in name:
        return AutoPipelineForInpainting
    if "Img2Img" in name:
        return AutoPipelineForImage2Image
    return AutoPipelineForText2Image


@hookimpl
def register_conditioners(register: Callable[..., None]) -> None:
    register(PLUGIN_NAME, description="ControlNet: --controlnet MODEL=IMAGE[:SCALE] (repeatable), "
                                      "--control-guidance-start/--control-guidance-end")


@hookimpl
def validate_request(request: GenerationRequest) -> None:
    parse(request)


@hookimpl
def adapt_pipeline(context: GenerationContext) -> None:
    options = parse(context.request)  # again: the files may have changed since validate_request
    if options is None:
        return
    from provgen.core.models import model_content_hash

    pipeline = context.pipeline
    unet = getattr(pipeline, "unet", None)
    if unet is None:
        raise ValidationError(FIELD, f"`{OPTION}`: {type(pipeline).__name__} has no UNet; ControlNet needs a "
                                     "Stable Diffusion 1.x/2.x or SDXL model")
    models, recorded = [], []
    for unit in options.units:
        content_hash = model_content_hash(unit.model.resolve(), context.settings.cache_dir / "model-hashes.json")
        model = cached_model(unet, ("controlnet", str(unit.model.resolve()), content_hash),
                             lambda unit=unit: _load(unit, unet))
        _check_fits(model, unet, unit, context.model.model_id)
        models.append(model)
        recorded.append({"path": str(unit.model.resolve()), "sha256": content_hash, "class": type(model).__name__})
    try:
        context.pipeline = _auto_class(pipeline).from_pipe(pipeline, controlnet=models[0] if len(models) == 1
                                                           else models)
    except ValueError as error:
        raise ValidationError(FIELD, f"`{OPTION}`: {type(pipeline).__name__} has no ControlNet variant in diffusers "
                                     f"({error})") from error
    context.scratch[PLUGIN_NAME] = {"options": options, "models": recorded}


@hookimpl
def call_arguments(context: GenerationContext) -> dict[str, Any] | None:
    state = context.scratch.get(PLUGIN_NAME)
    if state is None:
        return None
    options: Options = state["options"]
    images = [unit.image.image for unit in options.units]
    scales = [unit.scale for unit in options.units]
    single = len(images) == 1
    # text-to-image ControlNet pipelines take the control image as `image`; img2img/inpainting ones as
    # `control_image` (their `image` is the init image)
    key = "control_image" if call_accepts(context.pipeline, "control_image") else "image"
    arguments: dict[str, Any] = {key: images[0] if single else images,
                                 "controlnet_conditioning_scale": scales[0] if single else scales}
    if options.guidance_start is not None:
        arguments["control_guidance_start"] = options.guidance_start
    if options.guidance_end is not None:
        arguments["control_guidance_end"] = options.guidance_end
    return arguments


@hookimpl
def provenance_contribution(context: GenerationContext) -> ProvenanceContribution | None:
    state = context.scratch.get(PLUGIN_NAME)
    if state is None:
        return None
    from provgen.provenance.c2pa_io import Ingredient

    options: Options = state["options"]
    ingredients: list[Ingredient] = []
    labels: dict[str, str] = {}  # sha256 -> label: an image used by two units is one ingredient (one edge)
    units = []
    for unit, model in zip(options.units, state["models"], strict=True):
        image = unit.image
        if image.sha256 not in labels:
            labels[image.sha256] = f"controlnet_image_{len(labels)}"
            ingredients.append(Ingredient(title=image.path.name, mime=image.mime, data=image.data,
                                          relationship="inputTo", label=labels[image.sha256], role="controlnet",
                                          source=str(image.path.resolve())))
        units.append({"model": model, "image": image.describe(), "scale": unit.scale,
                      "ingredient": labels[image.sha256]})
    recipe = {
        "units": units,
        "guidance_start": options.guidance_start if options.guidance_start is not None else 0.0,
        "guidance_end": options.guidance_end if options.guidance_end is not None else 1.0,
    }
    return ProvenanceContribution(recipe=recipe, ingredients=ingredients)
