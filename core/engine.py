"""The sampling engine: one entry point, ``Engine.generate``, shaped like a diffusers ``__call__``.

Every image it produces leaves through the provenance layer (watermark, fingerprint, C2PA signature,
registry record, atomic write); there is no other exit.
"""

from __future__ import annotations

import inspect
import secrets
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import pluggy

from provgen.core.config import Settings, load_settings
from provgen.core.context import GenerationContext
from provgen.core.errors import PluginHookError, PolicyRefused, ValidationError
from provgen.core.models import LoadedModel, load_pipeline, model_content_hash, resolve_model_path
from provgen.core.plugins import call_hook, get_plugin_manager
from provgen.core.policy import PolicyDecision, first_refusal
from provgen.core.registries import (
    apply_postprocessors,
    check_plugin_options,
    models,
    recommended_guidance,
    resolve_postprocessors,
)
from provgen.core.request import MAX_SEED, GenerationRequest
from provgen.core.result import GenerationResult
from provgen.core.schedulers import SchedulerChoice, available_schedulers, make_scheduler, resolve_scheduler

__all__ = ["Engine", "generate"]

#: call arguments provgen fills itself; plugins may not override them
OWN_ARGUMENTS = frozenset({
    "prompt", "negative_prompt", "width", "height", "num_inference_steps", "guidance_scale", "generator",
    "num_images_per_prompt", "output_type", "callback_on_step_end", "callback_on_step_end_tensor_inputs",
})
MAX_CACHED_PIPELINES = 2


class Engine:
    """Loads pipelines once, runs requests, and hands every image to the provenance layer.

    :param settings: provgen settings (default: from the environment).
    :param plugin_manager: default: the process-wide manager with built-ins and installed plugins.
    :param device: torch device name; default CUDA, then MPS, then CPU.
    :param dtype: "float32", "float16" or "bfloat16"; default float16 on CUDA, float32 elsewhere.
    :param progress: show a progress bar per generation; default: when stderr is a terminal.
    """

    def __init__(self, settings: Settings | None = None, *, plugin_manager: pluggy.PluginManager | None = None,
                 device: str | None = None, dtype: str | None = None, progress: bool | None = None) -> None:
        from provgen.provenance.layer import ProvenanceLayer

        self.settings = settings or load_settings()
        self.pm = plugin_manager or get_plugin_manager()
        self._device_name = device or self.settings.device
        self._dtype_name = dtype or self.settings.dtype
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._pipelines: OrderedDict[tuple[str, str, str], tuple[LoadedModel, Any]] = OrderedDict()
        self._lock = threading.RLock()
        self.provenance = ProvenanceLayer(self.settings, self.pm)

    # ------------------------------------------------------------------ models
    @property
    def device(self) -> Any:
        from provgen.core.device import resolve_device

        return resolve_device(self._device_name)

    @property
    def dtype(self) -> Any:
        from provgen.core.device import resolve_dtype

        return resolve_dtype(self._dtype_name, self.device)

    def load(self, model: str) -> tuple[LoadedModel, Any]:
        """The pipeline for ``model`` (cached), with its content hash."""
        device, dtype = self.device, self.dtype
        path = resolve_model_path(model, registered=models(self.pm))
        key = (str(path), str(device), str(dtype))
        with self._lock:
            if key in self._pipelines:
                self._pipelines.move_to_end(key)
                loaded, pipeline = self._pipelines[key]
                return LoadedModel(model, loaded.path, loaded.content_hash, loaded.pipeline_class), pipeline
            content_hash = model_content_hash(path, self.settings.cache_dir / "model-hashes.json")
            pipeline = load_pipeline(path, device=device, dtype=dtype)
            loaded = LoadedModel(model, path, content_hash, type(pipeline).__name__)
            self._pipelines[key] = (loaded, pipeline)
            while len(self._pipelines) > MAX_CACHED_PIPELINES:
                self._pipelines.popitem(last=False)
            return loaded, pipeline

    def schedulers(self, model: str) -> dict[str, SchedulerChoice]:
        """Schedulers usable with ``model``, by name."""
        _, pipeline = self.load(model)
        return available_schedulers(self.pm, pipeline)

    # ------------------------------------------------------------------ generation
    def generate(self, request: GenerationRequest | None = None, /, **fields: Any) -> GenerationResult:
        """Generate, watermark, sign, write and register images for one request.

        Pass a :class:`GenerationRequest`, or its fields as keyword arguments (``prompt=..., model=...``).
        """
        request = _coerce_request(request, fields)
        with self._lock:
            return self._generate(request)

    __call__ = generate

    def _generate(self, request: GenerationRequest) -> GenerationResult:
        started = time.perf_counter()
        # 1. Check inputs. Raise before any heavy work.
        request.check_inputs()
        if request.model is None:
            if self.settings.default_model is None:
                raise ValidationError("model", "no model given; pass --model NAME_OR_PATH (or model=...), "
                                               "or set PROVGEN_MODEL; `provgen models list` shows named models")
            request = request.replace(model=self.settings.default_model)
        resolve_postprocessors(self.pm, request.postprocess)
        check_plugin_options(self.pm, request.plugin_options)
        call_hook(self.pm, "validate_request", request=request, settings=self.settings)
        refusal = first_refusal(self.pm, request, self.settings)
        if refusal is not None:
            self._refuse(request, *refusal)
        # 2. Load the pipeline (cached) and check what depends on it.
        model, pipeline = self.load(request.model)
        submitted_sha256 = request.content_sha256()
        if request.guidance_scale is None:  # recorded as the scale used, never as None
            request = request.replace(guidance_scale=recommended_guidance(self.pm, request.model, model.path))
        width, height = _check_size(request, pipeline)
        scheduler = resolve_scheduler(self.pm, pipeline, request.scheduler)
        base_seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED - MAX_IMAGES_SLACK)
        seeds = [base_seed + i for i in range(request.num_images)]
        if seeds[-1] > MAX_SEED:
            raise ValidationError("seed", f"seed + num_images - 1 must be at most {MAX_SEED}")
        context = GenerationContext(request=request, settings=self.settings, plugin_manager=self.pm, model=model,
                                    pipeline=pipeline, scheduler=scheduler, seeds=seeds, width=width, height=height,
                                    submitted_sha256=submitted_sha256)
        context.timings["load"] = time.perf_counter() - started
        original_scheduler = pipeline.scheduler
        try:
            # 3. Scheduler, then plugins adapt the pipeline.
            if request.scheduler is not None:
                pipeline.scheduler = make_scheduler(scheduler, pipeline)
            call_hook(self.pm, "adapt_pipeline", context=context)
            # 4. Call arguments: ours, then the plugins'.
            context.call_arguments = self._base_arguments(context)
            self._merge_plugin_arguments(context)
            context.scratch["_scheduler_config"] = dict(context.pipeline.scheduler.config)
            # 5. Sample.
            with _timed(context, "sample"):
                images = call_hook(self.pm, "sample", context=context)
            images = _check_images(self.pm, images, request.num_images)
            # 6. Post-process (before provenance, so the mark and signature cover the final pixels).
            with _timed(context, "postprocess"):
                images = apply_postprocessors(self.pm, request.postprocess, images)
        finally:
            try:
                call_hook(self.pm, "release_pipeline", context=context)
            finally:
                pipeline.scheduler = original_scheduler
        # 7. Provenance: the only exit.
        return self.provenance.finalize(context, images)

    def _refuse(self, request: GenerationRequest, plugin: str, decision: PolicyDecision) -> NoReturn:
        """Record the refusal (audited), then raise it; nothing else is written."""
        refusal_id = self.provenance.registry.record_refusal(
            plugin=plugin, reason=decision.reason, prompt=request.prompt, request=request.to_dict(),
            requester=request.user or self.settings.user)
        raise PolicyRefused(plugin, decision.reason, refusal_id)

    def _base_arguments(self, context: GenerationContext) -> dict[str, Any]:
        import torch

        request, pipeline = context.request, context.pipeline
        accepted = inspect.signature(pipeline.__call__).parameters
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in context.seeds]
        arguments: dict[str, Any] = {
            "prompt": request.prompt,
            "num_inference_steps": request.num_inference_steps,
            "generator": generators[0] if len(generators) == 1 else generators,
            "num_images_per_prompt": request.num_images,
            "output_type": "pil",
        }
        if request.negative_prompt is not None:
            arguments["negative_prompt"] = request.negative_prompt
        if context.width and context.height:
            arguments["width"], arguments["height"] = context.width, context.height
        if "guidance_scale" in accepted:
            arguments["guidance_scale"] = request.guidance_scale
        if "callback_on_step_end" in accepted:
            arguments["callback_on_step_end"] = self._step_callback(context)
        for name in list(arguments):
            if name not in accepted:
                if name in ("negative_prompt", "num_images_per_prompt") and (
                    name == "negative_prompt" or request.num_images > 1
                ):
                    raise ValidationError(name if name != "num_images_per_prompt" else "num_images",
                                          f"{type(pipeline).__name__} does not support it")
                del arguments[name]
        pipeline.set_progress_bar_config(disable=not self.progress, desc="sampling")
        return arguments

    def _step_callback(self, context: GenerationContext) -> Callable[..., dict[str, Any]]:
        hook = self.pm.hook.on_step_end

        def callback(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if not hook.get_hookimpls():
                return tensors
            for update in call_hook(self.pm, "on_step_end", context=context, step=step,
                                    timestep=float(timestep), tensors=tensors):
                if update:
                    tensors.update(update)
            return tensors

        return callback

    def _merge_plugin_arguments(self, context: GenerationContext) -> None:
        owners: dict[str, str] = {}
        for plugin_name, extra in call_each(self.pm, "call_arguments", context=context):
            if not extra:
                continue
            if not isinstance(extra, dict):
                raise PluginHookError(plugin_name, "call_arguments",
                                      TypeError(f"must return a dict or None, not {type(extra).__name__}"))
            for key, value in extra.items():
                if key in OWN_ARGUMENTS:
                    raise PluginHookError(plugin_name, "call_arguments",
                                          ValueError(f"argument {key!r} is set by provgen itself"))
                if key in owners:
                    raise PluginHookError(plugin_name, "call_arguments",
                                          ValueError(f"argument {key!r} is also set by plugin `{owners[key]}`"))
                owners[key] = plugin_name
                context.call_arguments[key] = value

    def close(self) -> None:
        with self._lock:
            self._pipelines.clear()
            self.provenance.close()


MAX_IMAGES_SLACK = 64  # random seeds leave room for seed + num_images - 1


def call_each(pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> Iterator[tuple[str, Any]]:
    """Call a hook's implementations one by one, in pluggy's order, yielding ``(plugin name, result)``.

    Used where provgen must know which plugin returned what (argument conflicts, provenance namespaces).
    """
    for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):
        if impl.hookwrapper or getattr(impl, "wrapper", False):
            raise PluginHookError(impl.plugin_name, hook_name, TypeError(
                "this hook is called plugin by plugin and cannot be wrapped; implement it without wrapper=True"))
        try:
            result = impl.function(**{name: kwargs[name] for name in impl.argnames})
        except Exception as error:
            from provgen.core.errors import ProvgenError

            if isinstance(error, ProvgenError):
                raise
            raise PluginHookError(impl.plugin_name, hook_name, error) from error
        yield impl.plugin_name, result


@contextmanager
def _timed(context: GenerationContext, stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        context.timings[stage] = time.perf_counter() - start


def _check_size(request: GenerationRequest, pipeline: Any) -> tuple[int, int]:
    factor = int(getattr(pipeline, "vae_scale_factor", 8) or 8)
    denoiser = getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)
    sample = getattr(pipeline, "default_sample_size", None) or getattr(
        getattr(denoiser, "config", None), "sample_size", None)
    default = int(sample) * factor if isinstance(sample, int) else 0
    width, height = request.width or default, request.height or default
    for name, value in (("width", width), ("height", height)):
        if value and value % factor:
            raise ValidationError(name, f"has to be divisible by {factor} for {type(pipeline).__name__}, got {value}")
    return width, height


def _check_images(pm: pluggy.PluginManager, images: Any, expected: int) -> list[Any]:
    from PIL import Image

    if not isinstance(images, list) or len(images) != expected or not all(
        isinstance(image, Image.Image) for image in images
    ):
        samplers = [impl.plugin_name for impl in pm.hook.sample.get_hookimpls() if not impl.wrapper]
        got = f"{len(images)} items" if isinstance(images, list) else type(images).__name__
        raise PluginHookError(" or ".join(samplers) or "unknown", "sample", TypeError(
            f"expected a list of {expected} PIL images, got {got}"))
    return [image.convert("RGB") if image.mode not in ("RGB", "RGBA") else image for image in images]


def _coerce_request(request: GenerationRequest | None, fields: dict[str, Any]) -> GenerationRequest:
    if request is None:
        if "prompt" not in fields:
            raise ValidationError("prompt", "is required")
        try:
            return GenerationRequest(**fields)
        except TypeError as error:
            raise ValidationError("request", str(error)) from error
    if not isinstance(request, GenerationRequest):
        raise ValidationError("request", f"expected a GenerationRequest, got {type(request).__name__}")
    return request.replace(**fields) if fields else request


_default_engine: Engine | None = None
_default_lock = threading.Lock()


def generate(request: GenerationRequest | None = None, /, **fields: Any) -> GenerationResult:
    """``provgen.generate(request)`` with a process-wide engine (pipelines stay cached between calls)."""
    global _default_engine
    with _default_lock:
        if _default_engine is None:
            _default_engine = Engine(progress=False)
    return _default_engine.generate(request, **fields)
