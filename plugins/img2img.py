"""Built-in plugin: img2img and inpainting (``--init-image PATH [--strength F] [--mask PATH]``).

The pipeline is swapped for diffusers' image-to-image (or inpainting) variant of the loaded model with
``AutoPipelineFor*.from_pipe``, which shares the loaded weights; the cached pipeline itself is not changed.
Provenance: the init image is the output's parent (C2PA ingredient ``parentOf``, a ``c2pa.opened`` action,
then a ``c2pa.edited`` action; registry lineage edge ``parentOf``/``init_image``), the mask an input
(``inputTo``/``mask``). An init image that is already in the registry (same sha256, e.g. a provgen output)
is linked as it is rather than recorded again.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provgen.core.context import ProvenanceContribution
from provgen.core.errors import ValidationError
from provgen.core.hookspecs import hookimpl

if TYPE_CHECKING:
    from PIL import Image

    from provgen.core.context import GenerationContext
    from provgen.core.request import GenerationRequest

PLUGIN_NAME = "img2img"
DEFAULT_STRENGTH = 0.8
#: formats C2PA can embed as an ingredient, by Pillow format name
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
COMPOSITE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"


class _Input:
    """One input file, read once: the exact bytes recorded are the bytes used."""

    def __init__(self, field: str, path: Path | str) -> None:
        from PIL import Image, UnidentifiedImageError

        self.field, self.path = field, Path(path).expanduser()
        try:
            self.data = self.path.read_bytes()
            with Image.open(io.BytesIO(self.data)) as image:
                image.load()
                self.format = image.format or ""
                self.image = image.convert("L" if field == "mask" else "RGB")
        except OSError as error:  # includes Pillow's "cannot identify image file"
            kind = "an image Pillow can read" if isinstance(error, UnidentifiedImageError) else "readable"
            raise ValidationError(field, f"{str(path)!r} is not {kind}: {error}") from error
        if self.format not in FORMATS:
            raise ValidationError(field, f"{str(path)!r} is a {self.format or 'unknown'} image; use PNG, JPEG or WebP "
                                         "(formats a C2PA manifest can record as an ingredient)")

    @property
    def mime(self) -> str:
        return FORMATS[self.format]

    def describe(self) -> dict[str, Any]:
        import hashlib

        return {"path": str(self.path.resolve()), "sha256": hashlib.sha256(self.data).hexdigest(),
                "format": self.format.lower(), "width": self.image.width, "height": self.image.height}


def target_size(request: GenerationRequest, init: Image.Image) -> tuple[int, int]:
    """The output size: the request's ``width``/``height`` where given, else the init image's."""
    return request.width or init.width, request.height or init.height


def check(request: GenerationRequest) -> tuple[_Input, _Input | None]:
    """Read and check the inputs of an img2img/inpainting request (``ValidationError`` naming the field)."""
    assert request.init_image is not None
    init = _Input("init_image", request.init_image)
    mask = _Input("mask", request.mask) if request.mask is not None else None
    for name, value in zip(("width", "height"), target_size(request, init.image), strict=True):
        if value % 8 or value > 8192:
            raise ValidationError("init_image", f"is {init.image.width}x{init.image.height}: the output takes its "
                                                f"{name} from it, which must be a multiple of 8 up to 8192; pass "
                                                "--width and --height to resize it")
    if mask is not None and mask.image.size != init.image.size:
        raise ValidationError("mask", f"is {mask.image.width}x{mask.image.height} but the init image is "
                                      f"{init.image.width}x{init.image.height}; they must be the same size")
    strength = request.strength if request.strength is not None else DEFAULT_STRENGTH
    if int(request.num_inference_steps * strength) < 1:
        raise ValidationError("strength", f"{strength:g} with {request.num_inference_steps} steps leaves no "
                                          f"denoising step; use at least {math.ceil(1 / strength)} steps or a "
                                          "higher strength")
    return init, mask


@hookimpl
def validate_request(request: GenerationRequest) -> None:
    if request.init_image is not None:
        check(request)


@hookimpl
def adapt_pipeline(context: GenerationContext) -> None:
    request = context.request
    if request.init_image is None:
        return
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    init, mask = check(request)  # again: the files may have changed since validate_request
    auto = AutoPipelineForInpainting if mask is not None else AutoPipelineForImage2Image
    try:
        pipeline = auto.from_pipe(context.pipeline)
    except ValueError as error:
        mode = "inpainting" if mask is not None else "img2img"
        raise ValidationError("init_image", f"{type(context.pipeline).__name__} has no {mode} variant in "
                                            f"diffusers ({error})") from error
    context.pipeline = pipeline  # a new object sharing the weights: the cached pipeline is left as it was
    context.width, context.height = target_size(request, init.image)
    context.scratch[PLUGIN_NAME] = {"init": init, "mask": mask}


@hookimpl
def call_arguments(context: GenerationContext) -> dict[str, Any] | None:
    state = context.scratch.get(PLUGIN_NAME)
    if state is None:
        return None
    from PIL import Image

    size = (context.width, context.height)

    def sized(image: Image.Image) -> Image.Image:
        return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)

    request = context.request
    arguments: dict[str, Any] = {
        "image": sized(state["init"].image),
        "strength": request.strength if request.strength is not None else DEFAULT_STRENGTH,
    }
    if state["mask"] is not None:
        arguments["mask_image"] = sized(state["mask"].image)
    return arguments


@hookimpl
def provenance_contribution(context: GenerationContext) -> ProvenanceContribution | None:
    state = context.scratch.get(PLUGIN_NAME)
    if state is None:
        return None
    from provgen.provenance.c2pa_io import Ingredient

    init, mask = state["init"], state["mask"]
    strength = context.request.strength if context.request.strength is not None else DEFAULT_STRENGTH
    mode = "inpaint" if mask is not None else "img2img"
    ingredients = [Ingredient(title=init.path.name, mime=init.mime, data=init.data, relationship="parentOf",
                              label="init_image", role="init_image", source=str(init.path.resolve()))]
    edited: dict[str, Any] = {
        "action": "c2pa.edited",
        "digitalSourceType": COMPOSITE if mask is not None else TRAINED,
        "description": f"{'inpainting' if mask is not None else 'image-to-image'} with strength {strength:g}",
    }
    recipe: dict[str, Any] = {"mode": mode, "strength": strength, "init_image": init.describe()}
    if mask is not None:
        ingredients.append(Ingredient(title=mask.path.name, mime=mask.mime, data=mask.data, relationship="inputTo",
                                      label="mask", role="mask", source=str(mask.path.resolve())))
        edited["parameters"] = {"ingredientIds": ["mask"]}
        recipe["mask"] = mask.describe()
    return ProvenanceContribution(recipe=recipe, ingredients=ingredients, actions=[edited])
