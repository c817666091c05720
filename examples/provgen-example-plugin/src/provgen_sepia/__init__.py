"""provgen-sepia: a sepia-tone post-processor for provgen.

``--post sepia`` tones an image fully, ``--post sepia:STRENGTH`` blends the tone in (STRENGTH from 0,
unchanged, to 1). A generation that uses it records under ``plugins_data["sepia"]`` of its recipe (in the
signed C2PA manifest and the registry record) this plugin's version, the strengths used and the tone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from provgen.core import ProvenanceContribution, hookimpl

if TYPE_CHECKING:
    from PIL import Image
    from provgen.core import GenerationContext

__version__ = "0.1.0"
#: the name provgen knows the plugin by: the entry point's name (pyproject.toml), also used when registering by hand
PLUGIN_NAME = "sepia"
#: the tone: black becomes DARK, white becomes LIGHT
DARK, LIGHT = "#2e1d0e", "#fff4e0"


def parse_strength(args: str) -> float:
    """``""`` (1.0) or a strength from 0 to 1; ``ValueError`` otherwise (provgen reports it naming ``--post``)."""
    text = args.strip() or "1"
    try:
        strength = float(text)
    except ValueError:
        raise ValueError(f"expected a strength such as sepia:0.8, got {args!r}") from None
    if not 0 <= strength <= 1:  # also refuses nan and inf
        raise ValueError(f"strength must be from 0 to 1, got {text}")
    return strength


def sepia(image: Image.Image, args: str) -> Image.Image:
    """The image, sepia-toned with strength ``args`` (see :func:`parse_strength`); same size, RGB."""
    from PIL import Image, ImageOps

    strength = parse_strength(args)
    rgb = image.convert("RGB")
    toned = ImageOps.colorize(ImageOps.grayscale(rgb), black=DARK, white=LIGHT)
    return Image.blend(rgb, toned, strength)


@hookimpl
def register_postprocessors(register: Callable[..., None]) -> None:
    register("sepia", sepia, validate=parse_strength, version=__version__,
             description="sepia tone: sepia (full) or sepia:STRENGTH, STRENGTH from 0 to 1")


@hookimpl
def provenance_contribution(context: GenerationContext) -> ProvenanceContribution | None:
    """Say how the image was toned; nothing for requests that do not use ``sepia``."""
    strengths = [parse_strength(args) for name, _, args in (item.partition(":") for item in context.request.postprocess)
                 if name == "sepia"]
    if not strengths:
        return None
    return ProvenanceContribution(recipe={"version": __version__, "strengths": strengths,
                                          "tone": {"dark": DARK, "light": LIGHT}})
