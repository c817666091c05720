"""The generation request: diffusers' argument names, validated up front."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provgen.core.errors import ValidationError

__all__ = ["GenerationRequest", "OUTPUT_FORMATS", "MAX_SEED", "canonical_sha256", "conditioning_options"]

OUTPUT_FORMATS = ("png", "jpeg", "webp")
MAX_SEED = 2**63 - 1  # seeds are stored as signed 64-bit integers in the registry
MAX_SIDE = 8192
MAX_IMAGES = 64
MAX_JOB_KEY = 255  # the registry's batch_jobs.job_key column


@dataclass(frozen=True)
class GenerationRequest:
    """One generation request: text-to-image, or img2img/inpainting with ``init_image`` (and ``mask``).
    Field names follow diffusers' ``__call__``.

    ``width``/``height``/``scheduler`` left as ``None`` take the pipeline's defaults; ``seed`` left as
    ``None`` is drawn at random and recorded.
    """

    prompt: str
    model: str | None = None
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    num_inference_steps: int = 30
    #: classifier-free guidance; ``None`` = the model's recommended scale (``register_models``), else 7.5
    guidance_scale: float | None = None
    seed: int | None = None
    num_images: int = 1
    scheduler: str | None = None
    #: where the signed files are written
    output_dir: Path = Path("out")
    #: "png", "jpeg" or "webp"
    format: str = "png"
    #: JPEG/WebP quality (1-100)
    quality: int = 95
    #: image to start from: img2img, or inpainting with ``mask``; recorded as the parent of every output
    init_image: Path | None = None
    #: how much of ``init_image`` is re-noised, in (0, 1]; ``None`` = 0.8 (needs ``init_image``)
    strength: float | None = None
    #: inpainting mask, the size of ``init_image``: white is repainted, black kept (needs ``init_image``)
    mask: Path | None = None
    #: post-processors to chain, each "NAME" or "NAME:ARGS" (see ``register_postprocessors``)
    postprocess: tuple[str, ...] = ()
    #: options for conditioner plugins, keyed by plugin/conditioner name
    plugin_options: Mapping[str, Any] = field(default_factory=dict)
    #: who asked (recorded in the registry); ``None`` = settings.user
    user: str | None = None
    #: idempotency key (set by ``provgen batch``, see :mod:`provgen.core.batch`): the generation is registered
    #: together with a ``done`` job record under this key, and a second generation with a key that is already
    #: done is rolled back (:class:`~provgen.core.errors.JobAlreadyDone`); recorded in the recipe
    job_key: str | None = None

    def replace(self, **changes: Any) -> GenerationRequest:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The request as plain JSON data (paths as strings), e.g. as recorded with a refusal."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["plugin_options"] = dict(self.plugin_options) if isinstance(self.plugin_options, Mapping) else None
        return json.loads(json.dumps(fields, default=str))

    def content_sha256(self) -> str:
        """sha256 (hex) of the request's canonical JSON without ``output_dir`` and ``job_key``: what it asks
        for, not where it goes. ``provgen batch`` derives job keys from it and records it with every job."""
        data = self.to_dict()
        for name in ("output_dir", "job_key"):
            data.pop(name, None)
        return canonical_sha256(data)

    def check_inputs(self) -> None:
        """Raise :class:`ValidationError` naming the first bad field. Pipeline-specific checks come later."""
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValidationError("prompt", "must be a non-empty string")
        if self.negative_prompt is not None and not isinstance(self.negative_prompt, str):
            raise ValidationError("negative_prompt", "must be a string")
        if self.model is not None and (not isinstance(self.model, str) or not self.model.strip()):
            raise ValidationError("model", "must be a local diffusers folder or a Hugging Face hub id")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is None:
                continue
            if not _is_int(value) or value <= 0:
                raise ValidationError(name, f"must be a positive integer, got {value!r}")
            if value % 8:
                lower, upper = value // 8 * 8, value // 8 * 8 + 8
                raise ValidationError(
                    name, f"has to be divisible by 8 but is {value}; use {lower or upper} or {upper}"
                )
            if value > MAX_SIDE:
                raise ValidationError(name, f"must be at most {MAX_SIDE}, got {value}")
        if not _is_int(self.num_inference_steps) or not 1 <= self.num_inference_steps <= 1000:
            raise ValidationError(
                "num_inference_steps", f"must be an integer from 1 to 1000, got {self.num_inference_steps!r}"
            )
        if self.guidance_scale is not None and (
            isinstance(self.guidance_scale, bool)
            or not isinstance(self.guidance_scale, (int, float))
            or not 0 <= self.guidance_scale <= 100
        ):
            raise ValidationError("guidance_scale", f"must be a number from 0 to 100, got {self.guidance_scale!r}")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED):
            raise ValidationError("seed", f"must be an integer from 0 to {MAX_SEED}, got {self.seed!r}")
        if not _is_int(self.num_images) or not 1 <= self.num_images <= MAX_IMAGES:
            raise ValidationError("num_images", f"must be an integer from 1 to {MAX_IMAGES}, got {self.num_images!r}")
        if self.format not in OUTPUT_FORMATS:
            raise ValidationError("format", f"must be one of {', '.join(OUTPUT_FORMATS)}, got {self.format!r}")
        if not _is_int(self.quality) or not 1 <= self.quality <= 100:
            raise ValidationError("quality", f"must be an integer from 1 to 100, got {self.quality!r}")
        out = Path(self.output_dir)
        if out.exists() and not out.is_dir():
            raise ValidationError("output_dir", f"{str(out)!r} exists and is not a directory")
        for name in ("init_image", "mask"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (str, Path)) or not str(value).strip():
                raise ValidationError(name, f"must be a path to an image file, got {value!r}")
            if not Path(value).is_file():
                raise ValidationError(name, f"{str(value)!r} does not exist or is not a file")
        if self.strength is not None:
            if (isinstance(self.strength, bool) or not isinstance(self.strength, (int, float))
                    or not 0 < self.strength <= 1):
                raise ValidationError("strength", f"must be a number in (0, 1], got {self.strength!r}")
            if self.init_image is None:
                raise ValidationError("strength", "only applies to img2img or inpainting; pass --init-image too")
        if self.mask is not None and self.init_image is None:
            raise ValidationError("mask", "inpainting needs the image to paint into; pass --init-image too")
        for item in self.postprocess:
            if not isinstance(item, str) or not item.split(":", 1)[0]:
                raise ValidationError("postprocess", f"each entry must be 'NAME' or 'NAME:ARGS', got {item!r}")
        if self.job_key is not None and (
            not isinstance(self.job_key, str) or not self.job_key.strip() or len(self.job_key) > MAX_JOB_KEY
            or not self.job_key.isprintable()
        ):
            raise ValidationError(
                "job_key", f"must be a non-empty printable string of at most {MAX_JOB_KEY} characters, "
                f"got {self.job_key!r}")


def canonical_sha256(data: Any) -> str:
    """sha256 (hex) of ``data`` as canonical JSON: keys sorted, no spaces, UTF-8 (values JSON does not know as
    strings). Request hashes and batch job keys are made with it, so it must stay byte-stable."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def conditioning_options(*, lora: Any = None, controlnet: Any = None, control_guidance_start: Any = None,
                         control_guidance_end: Any = None, ip_adapter: Any = None) -> dict[str, Any]:
    """``plugin_options`` for the built-in conditioners (plugins lora, controlnet, ip_adapter) from the
    shorthands of ``provgen generate`` and of batch lines. ``None`` means not given; a single string stands for
    a list of one; anything else is passed on as it is, for the plugin to check."""

    def listed(value: Any) -> Any:
        return [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else value

    options: dict[str, Any] = {}
    if lora is not None:
        options["lora"] = listed(lora)
    if controlnet is not None or control_guidance_start is not None or control_guidance_end is not None:
        options["controlnet"] = {"units": [] if controlnet is None else listed(controlnet),
                                 "guidance_start": control_guidance_start, "guidance_end": control_guidance_end}
    if ip_adapter is not None:
        options["ip_adapter"] = listed(ip_adapter)
    return options


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
