"""Built-in plugin: IP-Adapter (``--ip-adapter PATH=IMAGE[:SCALE]``; ``plugin_options={"ip_adapter": ...}``).

``PATH`` is the adapter's weights file (``.safetensors``) with its CLIP image encoder in an ``image_encoder/``
folder beside it, or a folder holding both (directly, or under ``models/`` or ``sdxl_models/`` as in the
``h94/IP-Adapter`` layout). The adapter is loaded into a ``from_pipe`` copy of the pipeline (so the image
encoder and feature extractor it registers never reach the cached pipeline) with ``load_ip_adapter`` and
``set_ip_adapter_scale``; ``release_pipeline`` unloads it and puts the UNet's attention processors back.
The image encoder is cached with the engine's pipeline. Provenance: the reference image is a C2PA ingredient
(``inputTo``) and a registry lineage edge (role ``ip_adapter``); the adapter weights and image encoder are
recorded in the recipe with their hashes (``plugins_data.ip_adapter``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provgen.core.context import ProvenanceContribution
from provgen.core.errors import ValidationError
from provgen.core.hookspecs import hookimpl
from provgen.plugins._conditioning import (
    InputImage,
    cached_model,
    call_accepts,
    check_scale,
    safetensors_keys,
    sha256_bytes,
    spec_list,
    split_pair,
)

if TYPE_CHECKING:
    from provgen.core.context import GenerationContext
    from provgen.core.request import GenerationRequest

PLUGIN_NAME = "ip_adapter"
FIELD = "ip_adapter"
OPTION = "--ip-adapter"
MAX_SCALE = 10.0
ENCODER_FOLDER = "image_encoder"
#: where a folder's weights are looked for: the folder, then the h94/IP-Adapter layouts
_SUBFOLDERS = ("", "models", "sdxl_models")
INGREDIENT_LABEL = "ip_adapter_image"


@dataclass
class Adapter:
    spec: str
    path: Path          # as given
    weights: Path       # the .safetensors file
    encoder: Path       # the image encoder folder
    image: InputImage
    scale: float


def _find_weights(path: Path, spec: str) -> Path:
    if path.is_file():
        if path.suffix.lower() != ".safetensors":
            raise ValidationError(FIELD, f"`{OPTION} {spec}`: {str(path)!r} is not a .safetensors file")
        return path
    searched = []
    for sub in _SUBFOLDERS:
        folder = path / sub if sub else path
        files = sorted(p for p in folder.glob("*.safetensors") if p.is_file()) if folder.is_dir() else []
        if files and (folder / ENCODER_FOLDER).is_dir():
            if len(files) > 1:
                names = ", ".join(p.name for p in files[:5]) + (", ..." if len(files) > 5 else "")
                raise ValidationError(FIELD, f"`{OPTION} {spec}`: {str(folder)!r} holds several adapters ({names}); "
                                             f"pass the file itself: {OPTION} {folder / files[0].name}=IMAGE")
            return files[0]
        searched.append(str(folder))
    raise ValidationError(FIELD, f"`{OPTION} {spec}`: found no adapter weights (.safetensors) with an "
                                 f"`{ENCODER_FOLDER}/` folder beside them in {', '.join(searched)}")


def _check_weights(weights: Path, spec: str) -> None:
    """The header must name IP-Adapter tensors (``image_proj.*`` and ``ip_adapter.*``); no tensor is loaded."""
    keys = safetensors_keys(weights, FIELD, OPTION, spec)
    if not any(k.startswith("image_proj.") for k in keys) or not any(k.startswith("ip_adapter.") for k in keys):
        raise ValidationError(FIELD, f"`{OPTION} {spec}`: {str(weights)!r} holds no IP-Adapter weights (expected "
                                     "image_proj.* and ip_adapter.* tensors)")


def parse(request: GenerationRequest) -> Adapter | None:
    """The request's IP-Adapter, checked (``ValidationError`` naming ``--ip-adapter``); reads the image."""
    value = request.plugin_options.get(PLUGIN_NAME)
    if value is None:
        return None
    specs = spec_list(value, FIELD, OPTION)
    if not specs:
        return None
    if len(specs) > 1:
        raise ValidationError(FIELD, f"`{OPTION}` may be given once per request, got {len(specs)}")
    spec = specs[0]
    path_text, image_text, scale = split_pair(spec, FIELD, OPTION)
    scale = check_scale(1.0 if scale is None else scale, 0.0, MAX_SCALE, FIELD, OPTION, spec)
    path = Path(path_text).expanduser()
    if not path.exists():
        raise ValidationError(FIELD, f"`{OPTION} {spec}`: {path_text!r} does not exist; pass an IP-Adapter folder "
                                     "or weights file")
    weights = _find_weights(path, spec)
    _check_weights(weights, spec)
    encoder = weights.parent / ENCODER_FOLDER
    if not (encoder / "config.json").is_file():
        raise ValidationError(FIELD, f"`{OPTION} {spec}`: no image encoder next to the weights (expected "
                                     f"{str(encoder / 'config.json')!r})")
    return Adapter(spec, path, weights, encoder, InputImage(image_text, FIELD, OPTION, spec), scale)


def _load_encoder(adapter: Adapter, device: Any, dtype: Any) -> Any:
    from transformers import CLIPVisionModelWithProjection

    try:
        encoder = CLIPVisionModelWithProjection.from_pretrained(str(adapter.encoder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        raise ValidationError(FIELD, f"`{OPTION} {adapter.spec}`: could not load the image encoder "
                                     f"{str(adapter.encoder)!r}: {error}") from error
    return encoder.to(device=device, dtype=dtype)


@hookimpl
def register_conditioners(register: Callable[..., None]) -> None:
    register(PLUGIN_NAME, description="IP-Adapter: --ip-adapter PATH=IMAGE[:SCALE] (adapter weights + image "
                                      "encoder, reference image)")


@hookimpl
def validate_request(request: GenerationRequest) -> None:
    parse(request)


@hookimpl
def adapt_pipeline(context: GenerationContext) -> None:
    adapter = parse(context.request)  # again: the files may have changed since validate_request
    if adapter is None:
        return
    from safetensors.torch import load as load_safetensors

    from provgen.core.models import model_content_hash

    pipeline = context.pipeline
    kind = type(pipeline).__name__
    unet = getattr(pipeline, "unet", None)
    if unet is None or not hasattr(pipeline, "load_ip_adapter") or not call_accepts(pipeline, "ip_adapter_image"):
        raise ValidationError(FIELD, f"`{OPTION}`: {kind} does not support IP-Adapters")
    encoder_hash = model_content_hash(adapter.encoder.resolve(), context.settings.cache_dir / "model-hashes.json")
    encoder = cached_model(unet, ("image_encoder", str(adapter.encoder.resolve()), encoder_hash),
                           lambda: _load_encoder(adapter, unet.device, pipeline.dtype))
    try:
        data = adapter.weights.read_bytes()
        tensors = load_safetensors(data)
    except Exception as error:  # OSError, safetensors' own error type
        raise ValidationError(FIELD, f"`{OPTION} {adapter.spec}`: cannot read {str(adapter.weights)!r}: "
                                     f"{error}") from error
    state_dict: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
    for key, tensor in tensors.items():
        group, _, name = key.partition(".")
        if group in state_dict:
            state_dict[group][name] = tensor
    projection = state_dict["image_proj"].get("proj.weight")
    embed_dim = getattr(encoder.config, "projection_dim", None)
    if projection is not None and embed_dim is not None and projection.shape[-1] != embed_dim:
        raise ValidationError(FIELD, f"`{OPTION} {adapter.spec}`: the adapter expects {projection.shape[-1]}-wide "
                                     f"image embeddings but its image encoder makes {embed_dim}-wide ones")
    # a copy sharing the weights: the image encoder / feature extractor it registers stay off the cached pipeline
    copy = type(pipeline).from_pipe(pipeline, image_encoder=encoder)
    state: dict[str, Any] = {
        "pipeline": copy, "unet": unet, "processors": dict(unet.attn_processors),
        "encoder_hid_proj": unet.encoder_hid_proj, "encoder_hid_dim_type": unet.config.get("encoder_hid_dim_type"),
    }
    context.scratch[PLUGIN_NAME] = state  # before loading: release_pipeline also undoes a half-done load
    try:
        copy.load_ip_adapter(state_dict, subfolder=None, weight_name=None, image_encoder_folder=None)
        copy.set_ip_adapter_scale(adapter.scale)
    except Exception as error:  # diffusers raises ValueError, RuntimeError (shapes), KeyError, ...
        text = " ".join(str(error).split())
        raise ValidationError(FIELD, f"`{OPTION} {adapter.spec}`: does not fit {context.model.model_id} ({kind}): "
                                     f"{text[:400]}") from error
    context.pipeline = copy
    state["recipe"] = {
        "adapter": {
            "path": str(adapter.path.resolve()),
            "weights": {"path": str(adapter.weights.resolve()), "sha256": sha256_bytes(data), "size_bytes": len(data)},
            "image_encoder": {"path": str(adapter.encoder.resolve()), "sha256": encoder_hash},
        },
        "scale": adapter.scale,
        "image": adapter.image.describe(),
        "ingredient": INGREDIENT_LABEL,
    }
    state["adapter"] = adapter


@hookimpl
def call_arguments(context: GenerationContext) -> dict[str, Any] | None:
    state = context.scratch.get(PLUGIN_NAME)
    if not state or "adapter" not in state:
        return None
    return {"ip_adapter_image": state["adapter"].image.image}


@hookimpl
def release_pipeline(context: GenerationContext) -> None:
    state = context.scratch.get(PLUGIN_NAME)
    if not state:
        return
    state["pipeline"].unload_ip_adapter()
    unet = state["unet"]  # put back exactly what was there (unload_ip_adapter makes fresh default processors)
    unet.set_attn_processor(state["processors"])
    unet.encoder_hid_proj = state["encoder_hid_proj"]
    if unet.config.get("encoder_hid_dim_type") != state["encoder_hid_dim_type"]:
        unet.register_to_config(encoder_hid_dim_type=state["encoder_hid_dim_type"])


@hookimpl
def provenance_contribution(context: GenerationContext) -> ProvenanceContribution | None:
    state = context.scratch.get(PLUGIN_NAME)
    if not state or "recipe" not in state:
        return None
    from provgen.provenance.c2pa_io import Ingredient

    image = state["adapter"].image
    return ProvenanceContribution(
        recipe=state["recipe"],
        ingredients=[Ingredient(title=image.path.name, mime=image.mime, data=image.data, relationship="inputTo",
                                label=INGREDIENT_LABEL, role="ip_adapter", source=str(image.path.resolve()))],
    )
