"""Built-in plugin: LoRA weights (``--lora PATH[:SCALE]``, repeatable; ``plugin_options={"lora": [...]}``).

Each LoRA is read once (the sha256 recorded is that of the bytes loaded), loaded into the pipeline with
``load_lora_weights(state_dict, adapter_name=...)`` and weighted with ``set_adapters``; ``release_pipeline``
deletes the adapters again (and unloads the LoRA layers once none is left), so the cached pipeline is clean
for the next request. A LoRA is a model, not an input image: it is recorded in the recipe
(``plugins_data.lora``), with no C2PA ingredient or registry edge. Needs ``peft`` (``provgen[lora]``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provgen.core.context import ProvenanceContribution
from provgen.core.errors import ValidationError
from provgen.core.hookspecs import hookimpl
from provgen.plugins._conditioning import check_scale, safetensors_keys, sha256_bytes, spec_list, split_scale

if TYPE_CHECKING:
    from provgen.core.context import GenerationContext
    from provgen.core.request import GenerationRequest

PLUGIN_NAME = "lora"
FIELD = "lora"
OPTION = "--lora"
#: the file ``save_lora_weights`` writes; picked first in a folder
DEFAULT_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
MAX_SCALE = 10.0
ADAPTER_PREFIX = "provgen_lora_"


@dataclass(frozen=True)
class LoraSpec:
    spec: str       # as the user wrote it
    path: Path      # the file or folder given
    file: Path      # the weights file used
    scale: float


def _check_peft() -> None:
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ValidationError(FIELD, f"`{OPTION}` needs the `peft` package, which is not installed; "
                                     "install it with: pip install 'provgen[lora]'") from None


def _weights_file(path: Path, spec: str) -> Path:
    if path.is_dir():
        if (path / DEFAULT_WEIGHT_NAME).is_file():
            return path / DEFAULT_WEIGHT_NAME
        files = sorted(p for p in path.glob("*.safetensors") if p.is_file())
        if not files:
            raise ValidationError(FIELD, f"`{OPTION} {spec}`: the folder {str(path)!r} holds no .safetensors file")
        if len(files) > 1:
            names = ", ".join(p.name for p in files[:5]) + (", ..." if len(files) > 5 else "")
            raise ValidationError(FIELD, f"`{OPTION} {spec}`: the folder {str(path)!r} holds several .safetensors "
                                         f"files ({names}); pass the file itself: {OPTION} {path / files[0].name}")
        return files[0]
    if path.suffix.lower() != ".safetensors":
        raise ValidationError(FIELD, f"`{OPTION} {spec}`: {str(path)!r} is not a .safetensors file; provgen loads "
                                     "LoRA weights in the safetensors format only")
    return path


def parse(request: GenerationRequest) -> list[LoraSpec]:
    """The request's LoRAs, checked (``ValidationError`` naming ``--lora``); reads only the file headers."""
    value = request.plugin_options.get(PLUGIN_NAME)
    if value is None:
        return []
    loras = []
    for spec in spec_list(value, FIELD, OPTION):
        text, scale = split_scale(spec, FIELD, OPTION, spec)
        scale = check_scale(1.0 if scale is None else scale, -MAX_SCALE, MAX_SCALE, FIELD, OPTION, spec)
        path = Path(text).expanduser()
        if not path.exists():
            raise ValidationError(FIELD, f"`{OPTION} {spec}`: {text!r} does not exist; pass a LoRA .safetensors "
                                         "file or a folder holding one")
        file = _weights_file(path, spec)
        keys = safetensors_keys(file, FIELD, OPTION, spec)
        if not any("lora" in key.lower() for key in keys):
            raise ValidationError(FIELD, f"`{OPTION} {spec}`: {str(file)!r} holds no LoRA weights (no tensor name "
                                         "contains 'lora'); is it a full model or another kind of adapter?")
        loras.append(LoraSpec(spec, path, file, scale))
    if loras:
        _check_peft()
    return loras


@hookimpl
def register_conditioners(register: Callable[..., None]) -> None:
    register(PLUGIN_NAME, description="LoRA weights: --lora PATH[:SCALE] (a .safetensors file or a folder)")


@hookimpl
def validate_request(request: GenerationRequest) -> None:
    parse(request)


@hookimpl
def adapt_pipeline(context: GenerationContext) -> None:
    loras = parse(context.request)  # again: the files may have changed since validate_request
    if not loras:
        return
    from safetensors.torch import load as load_safetensors

    pipeline = context.pipeline
    kind = type(pipeline).__name__
    if not hasattr(pipeline, "load_lora_weights") or not hasattr(pipeline, "set_adapters"):
        raise ValidationError(FIELD, f"`{OPTION}`: {kind} cannot load LoRA weights")
    # recorded before loading, so release_pipeline cleans up after a LoRA that fails half-way
    state: dict[str, Any] = {"pipeline": pipeline, "adapters": [], "loras": []}
    context.scratch[PLUGIN_NAME] = state
    for index, lora in enumerate(loras):
        try:
            data = lora.file.read_bytes()
        except OSError as error:
            raise ValidationError(FIELD, f"`{OPTION} {lora.spec}`: cannot read {str(lora.file)!r}: "
                                         f"{error.strerror}") from error
        name = f"{ADAPTER_PREFIX}{index}"
        state["adapters"].append(name)
        try:
            with warnings.catch_warnings():  # peft warns on every adapter after the first: that is the point here
                warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
                pipeline.load_lora_weights(load_safetensors(data), adapter_name=name)
        except Exception as error:  # diffusers/peft raise ValueError, RuntimeError (shapes), KeyError, ...
            raise ValidationError(FIELD, f"`{OPTION} {lora.spec}`: does not fit {context.model.model_id} "
                                         f"({kind}): {_first_lines(error)}") from error
        state["loras"].append({
            "path": str(lora.path.resolve()), "file": str(lora.file.resolve()), "sha256": sha256_bytes(data),
            "size_bytes": len(data), "scale": lora.scale, "adapter_name": name,
        })
    try:
        pipeline.set_adapters(state["adapters"], adapter_weights=[lora.scale for lora in loras])
    except ValueError as error:  # e.g. an adapter none of whose weights matched a layer of this model
        raise ValidationError(FIELD, f"`{OPTION}`: could not activate the LoRA(s) on {context.model.model_id} "
                                     f"({kind}): {_first_lines(error)}") from error


@hookimpl
def release_pipeline(context: GenerationContext) -> None:
    state = context.scratch.get(PLUGIN_NAME)
    if not state or not state["adapters"]:
        return
    pipeline = state["pipeline"]
    present = {name for names in pipeline.get_list_adapters().values() for name in names}
    ours = [name for name in state["adapters"] if name in present]
    if ours:
        pipeline.delete_adapters(ours)
    if not any(pipeline.get_list_adapters().values()):
        pipeline.unload_lora_weights()  # no adapter left (ours or a plugin's): remove the LoRA layers too


@hookimpl
def provenance_contribution(context: GenerationContext) -> ProvenanceContribution | None:
    state = context.scratch.get(PLUGIN_NAME)
    if not state or not state["loras"]:
        return None
    return ProvenanceContribution(recipe={"loras": state["loras"]})


def _first_lines(error: BaseException, limit: int = 400) -> str:
    text = " ".join(line.strip() for line in str(error).splitlines()[:3] if line.strip()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
