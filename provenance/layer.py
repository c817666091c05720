"""The provenance layer: the one exit of the engine.

For each image, in this order: allocate registry ids -> embed the watermark (carrying the id) ->
fingerprint -> encode -> sign the C2PA manifest (last, over the final bytes). Then, for the whole
generation: write temporary files, insert the records, rename the files into place, commit. A failure at
any step removes what was written and rolls the records back, so there is never a file without a record
or a record without a file.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provgen.core.config import Settings
from provgen.core.context import GenerationContext, ProvenanceContribution
from provgen.core.errors import OutputError, PluginHookError, SigningError, ValidationError
from provgen.core.plugins import call_hook, plugin_versions
from provgen.core.registries import Registered, get_watermark_method, resolve_postprocessors
from provgen.core.result import GeneratedImage, GenerationResult
from provgen.provenance import _parallel
from provgen.provenance._interrupts import interrupts_held
from provgen.provenance.fingerprint import fingerprints

if TYPE_CHECKING:
    import pluggy
    from PIL import Image
    from sqlalchemy.orm import Session

    from provgen.provenance.c2pa_io import Ingredient, ManifestSigner
    from provgen.provenance.registry import Registry

__all__ = ["ProvenanceLayer", "encode_image", "software_versions"]

_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
RESERVED_ASSERTION_PREFIXES = ("c2pa.", "io.provgen.", "stds.", "cawg.")
#: C2PA actions provgen writes itself (plugins contribute others, e.g. ``c2pa.edited``)
PROVGEN_ACTIONS = ("c2pa.created", "c2pa.opened", "c2pa.watermarked")


@dataclass
class _Prepared:
    asset_id: str
    watermark_id: int
    batch_index: int
    seed: int
    data: bytes
    phash: str
    label: str
    manifest_store: bytes
    width: int
    height: int
    dhash: str


def encode_image(image: Image.Image, fmt: str, quality: int) -> bytes:
    """Encode with Pillow; no metadata of Pillow's own is added (the C2PA manifest carries it)."""
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, "PNG", compress_level=1)  # level 1: 5-10x faster than the default, ~10% larger
    elif fmt == "jpeg":
        image.convert("RGB").save(buffer, "JPEG", quality=quality)
    else:
        image.save(buffer, "WEBP", quality=quality)
    return buffer.getvalue()


def software_versions() -> dict[str, str]:
    """Versions of provgen and the libraries that shape an image, as recorded in every recipe."""
    return dict(_software_versions())


@functools.cache
def _software_versions() -> tuple[tuple[str, str], ...]:
    # looked up once per process: five importlib.metadata lookups took 16 ms, a third of the layer's time at
    # 1024 x 1024, and installed versions do not change under a running process
    import importlib.metadata as md

    versions = []
    for name in ("provgen", "diffusers", "torch", "transformers", "c2pa-python"):
        try:
            versions.append((name, md.version(name)))
        except md.PackageNotFoundError:
            versions.append((name, "unknown"))
    return tuple(versions)


def _json_safe(value: Any) -> Any:
    """Plain JSON: arrays become lists, unknown objects strings, and inf/nan (which C2PA's JSON-to-CBOR
    path refuses) the strings "inf", "-inf", "nan"."""

    def clean(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return str(item)
        if isinstance(item, dict):
            return {str(k): clean(v) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [clean(v) for v in item]
        return item

    return clean(json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))))


class ProvenanceLayer:
    """Holds the per-process registry connection and signer; ``finalize`` is the engine's only exit."""

    def __init__(self, settings: Settings, pm: pluggy.PluginManager) -> None:
        from provgen.provenance.training_mining import parse

        self.settings, self.pm = settings, pm
        #: the cawg.training-mining assertion of every manifest (checked here: a bad setting fails before sampling)
        self.training_mining = parse(settings.training_mining)
        self._registry: Registry | None = None
        self._signer: ManifestSigner | None = None
        self._lock = threading.Lock()

    @property
    def registry(self) -> Registry:
        with self._lock:
            if self._registry is None:
                from provgen.provenance.registry import open_registry

                self._registry = open_registry(self.settings.registry_url, upgrade="blank")
            return self._registry

    @property
    def signer(self) -> ManifestSigner:
        with self._lock:
            if self._signer is None:
                from provgen.provenance.c2pa_io import ManifestSigner
                from provgen.provenance.org_keys import expiry_warning
                from provgen.provenance.trust import trust_anchors_pem

                identity = call_hook(self.pm, "provide_signer", settings=self.settings)
                if identity is None:
                    raise SigningError("no plugin provided a signing identity (hook `provide_signer`)")
                warning = expiry_warning(identity)
                if warning:
                    print(f"provgen: warning: {warning}", file=sys.stderr)
                self._signer = ManifestSigner(
                    identity, trust_anchors_pem=trust_anchors_pem(self.settings), tsa_url=self.settings.tsa_url
                )
            return self._signer

    def close(self) -> None:
        with self._lock:
            if self._signer is not None:
                self._signer.close()
                self._signer = None
            if self._registry is not None:
                self._registry.close()
                self._registry = None

    # ------------------------------------------------------------------------------------------------
    def finalize(self, context: GenerationContext, images: list[Image.Image]) -> GenerationResult:
        from provgen.provenance.c2pa_io import build_manifest, mime_for_format

        request, timings = context.request, context.timings
        opening = time.perf_counter()
        registry, signer = self.registry, self.signer  # open both before any work is done
        started = time.perf_counter()
        # the first generation of an Engine opens the registry and the signer (imports, migration check, keys:
        # about 1 s); kept apart so that `provenance` is the per-generation cost
        timings["setup"] = started - opening
        generation_id = uuid.uuid4().hex
        recipe, assertions, ingredients, actions = self._recipe(context, generation_id)
        actions += _postprocess_actions(recipe)
        marker = get_watermark_method(self.pm, self.settings.watermark_method)
        method = marker.item
        mime = mime_for_format(request.format)
        prepared: list[_Prepared] = []
        stage = dict.fromkeys(("watermark", "fingerprint", "encode", "sign"), 0.0)
        for index, image in enumerate(images):
            asset_id, watermark_id = registry.new_ids()
            t0 = time.perf_counter()
            marked = _embed(marker, image, watermark_id)
            t1 = time.perf_counter()
            encoded, (fingerprint, second), t2 = _encode_and_fingerprint(marked, request.format, request.quality)
            t3 = time.perf_counter()
            asset_recipe = {
                **recipe,
                "asset": {
                    "id": asset_id,
                    "batch_index": index,
                    "seed": context.seeds[index],
                    "watermark": {"method": method.name, "id": f"{watermark_id:012x}"},
                },
            }
            manifest = build_manifest(
                title=f"{asset_id}.{request.format}",
                software_version=recipe["software"]["provgen"],
                recipe=asset_recipe,
                soft_binding_alg=method.soft_binding_alg,
                soft_binding_value=f"{watermark_id:012x}",
                extra_assertions=assertions,
                ingredient_labels=[i.label for i in ingredients if i.label],
                parent_labels=[i.label for i in ingredients if i.label and i.relationship == "parentOf"],
                actions=actions,
                training_mining=self.training_mining,
            )
            signed = signer.sign(encoded, mime, manifest, ingredients)
            t4 = time.perf_counter()
            # encode: the encoder's own time; fingerprint: only the wait for the fingerprints after it
            for key, seconds in zip(stage, (t1 - t0, t3 - t2, t2 - t1, t4 - t3), strict=True):
                stage[key] += seconds
            prepared.append(
                _Prepared(
                    asset_id,
                    watermark_id,
                    index,
                    context.seeds[index],
                    signed.data,
                    fingerprint,
                    signed.label,
                    signed.manifest_store,
                    marked.width,
                    marked.height,
                    second,
                )
            )
        timings.update(stage)
        t0 = time.perf_counter()
        written = self._write_and_register(context, generation_id, recipe, method.name, prepared, ingredients)
        timings["register"] = time.perf_counter() - t0
        timings["provenance"] = time.perf_counter() - started  # all of the layer but `setup`, encoding included
        return GenerationResult(
            generation_id=generation_id,
            images=tuple(
                GeneratedImage(
                    p.asset_id,
                    path,
                    sha256,
                    p.watermark_id,
                    method.name,
                    p.seed,
                    p.batch_index,
                    request.format,
                    p.width,
                    p.height,
                    p.phash,
                    p.label,
                )
                for p, (path, sha256) in zip(prepared, written, strict=True)
            ),
            model_id=context.model.model_id,
            model_hash=context.model.content_hash,
            pipeline_class=type(context.pipeline).__name__,
            scheduler=context.scheduler.name,
            recipe=recipe,
            timings=dict(timings),
        )

    def _recipe(
        self, context: GenerationContext, generation_id: str
    ) -> tuple[dict, list[dict], list[Ingredient], list[dict]]:
        from provgen.core.engine import call_each

        request = context.request
        plugins_data: dict[str, Any] = {}
        assertions: list[dict[str, Any]] = []
        ingredients: list[Ingredient] = []
        actions: list[dict[str, Any]] = []
        versions = {entry["name"]: entry["version"] for entry in plugin_versions(self.pm)}
        for plugin_name, contribution in call_each(self.pm, "provenance_contribution", context=context):
            if contribution is None:
                continue
            if not isinstance(contribution, ProvenanceContribution):
                raise PluginHookError(
                    plugin_name, "provenance_contribution", TypeError("must return a ProvenanceContribution or None")
                )
            for assertion in contribution.assertions:
                label = str(assertion.get("label", ""))
                if not label or label.startswith(RESERVED_ASSERTION_PREFIXES) or "data" not in assertion:
                    raise PluginHookError(
                        plugin_name,
                        "provenance_contribution",
                        ValueError(f"assertion label {label!r} is empty, reserved or has no data"),
                    )
            for action in contribution.actions:
                name = action.get("action") if isinstance(action, dict) else None
                if not isinstance(name, str) or not name or name in PROVGEN_ACTIONS:
                    raise PluginHookError(
                        plugin_name,
                        "provenance_contribution",
                        ValueError(f"action {name!r} is empty or one provgen writes ({', '.join(PROVGEN_ACTIONS)})"),
                    )
                agent = {"name": plugin_name, "version": versions.get(plugin_name, "unversioned")}
                actions.append(_json_safe({"softwareAgent": agent, **action}))
            if contribution.recipe:
                plugins_data[plugin_name] = _json_safe(contribution.recipe)
            assertions.extend(contribution.assertions)
            ingredients.extend(contribution.ingredients)
        scheduler_config = context.scratch.get("_scheduler_config", {})
        recipe = {
            "schema": "io.provgen.generation/1",
            "generation_id": generation_id,
            "model": {
                "id": context.model.model_id,
                "sha256": context.model.content_hash,
                "pipeline_class": type(context.pipeline).__name__,
            },
            "scheduler": {
                "name": context.scheduler.name,
                "class": scheduler_config.get("_class_name", context.scheduler.class_name),
                "config": _json_safe(scheduler_config),
            },
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": context.seeds[0],
            "num_inference_steps": request.num_inference_steps,
            "guidance_scale": request.guidance_scale,
            "width": context.width,
            "height": context.height,
            "num_images": request.num_images,
            "postprocess": [
                {"name": entry.item.name, "args": args, "plugin": entry.plugin, "version": entry.item.version}
                for entry, args in resolve_postprocessors(self.pm, request.postprocess)
            ],
            "plugin_options": _json_safe(dict(request.plugin_options)),
            "plugins": plugin_versions(self.pm),
            "plugins_data": plugins_data,
            "software": software_versions(),
            "device": str(getattr(context.pipeline, "device", "")),
            "dtype": str(getattr(context.pipeline, "dtype", "")),
            "requester": request.user or self.settings.user,
        }
        if request.job_key is not None:
            recipe["job_key"] = request.job_key
        return recipe, assertions, ingredients, actions

    def _write_and_register(
        self,
        context: GenerationContext,
        generation_id: str,
        recipe: dict,
        method_name: str,
        prepared: list[_Prepared],
        ingredients: list[Ingredient],
    ) -> list[tuple[Path, str]]:
        """Write each file to a temporary name, insert the records, rename the files into place, commit;
        ``[(path, sha256)]``. Writing and fsyncing the files (5-7 ms for a 2.6 MB PNG, mostly waiting on the
        disk) runs on the shared pool while this thread hashes them and builds the records; the renames and
        the commit come only after every file is complete."""
        request = context.request
        out_dir = Path(request.output_dir).expanduser().resolve()
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValidationError("output_dir", f"cannot create {str(out_dir)!r}: {error.strerror}") from error
        finals = [out_dir / f"{item.asset_id}.{request.format}" for item in prepared]
        for final in finals:
            if final.exists():
                raise ValidationError("output_dir", f"{str(final)!r} already exists")
        temps: list[Path] = []
        renamed: list[Path] = []

        def write_temps() -> None:
            for item, final in zip(prepared, finals, strict=True):
                try:
                    fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=f".{item.asset_id}.", suffix=".part")
                    temps.append(Path(tmp_name))
                    with os.fdopen(fd, "wb") as handle:
                        handle.write(item.data)
                        handle.flush()
                        os.fsync(handle.fileno())
                except OSError as error:
                    raise OutputError(
                        f"cannot write `{final}`: {error.strerror or error}; free space or choose another "
                        "`output_dir` (nothing of this generation was kept)"
                    ) from error

        committed = False
        try:
            with interrupts_held() as guard:
                with self.registry.transaction() as session:
                    hashes, _ = _parallel.both(
                        lambda: self._add_records(
                            session, context, generation_id, recipe, method_name, prepared, finals, ingredients
                        ),
                        write_temps,
                    )
                    guard.hold()  # from the renames to `committed`: Ctrl-C waits (milliseconds)
                    for tmp, final in zip(temps, finals, strict=True):
                        os.replace(tmp, final)
                        renamed.append(final)
                committed = True
            _fsync_dir(out_dir)
            return list(zip(finals, hashes, strict=True))
        except BaseException:
            if not committed:  # a committed generation keeps its files, whatever is raised after the commit
                for path in (*temps, *renamed):  # both() has returned: no write is still running
                    path.unlink(missing_ok=True)
            raise

    def _add_records(
        self,
        session: Session,
        context: GenerationContext,
        generation_id: str,
        recipe: dict,
        method_name: str,
        prepared: list[_Prepared],
        finals: list[Path],
        ingredients: list[Ingredient],
    ) -> list[str]:
        """Add the generation, its assets, fingerprints, lineage and job row to ``session`` and flush (so
        constraint errors surface before any file is in place); the sha256 of each file's bytes."""
        from provgen.provenance.registry import Asset, Fingerprint, Generation, LineageEdge

        request = context.request
        hashes = [hashlib.sha256(p.data).hexdigest() for p in prepared]
        session.add(
            Generation(
                id=generation_id,
                requester=recipe["requester"],
                model_id=context.model.model_id,
                model_hash=context.model.content_hash,
                pipeline_class=recipe["model"]["pipeline_class"],
                scheduler=context.scheduler.name,
                prompt=request.prompt,
                negative_prompt=request.negative_prompt,
                seed=context.seeds[0],
                num_inference_steps=request.num_inference_steps,
                guidance_scale=float(request.guidance_scale),
                width=context.width or prepared[0].width,
                height=context.height or prepared[0].height,
                num_images=request.num_images,
                recipe=recipe,
                plugins=recipe["plugins"],
            )
        )
        session.add_all(
            [
                Asset(
                    id=p.asset_id,
                    generation_id=generation_id,
                    batch_index=p.batch_index,
                    seed=p.seed,
                    sha256=sha256,
                    watermark_id=p.watermark_id,
                    watermark_method=method_name,
                    phash=p.phash,
                    format=request.format,
                    width=p.width,
                    height=p.height,
                    size_bytes=len(p.data),
                    path=str(final),
                    manifest_label=p.label,
                    manifest_store=p.manifest_store,
                )
                for p, final, sha256 in zip(prepared, finals, hashes, strict=True)
            ]
        )
        session.add_all([Fingerprint(asset_id=p.asset_id, kind="dhash", value=p.dhash) for p in prepared])
        for ingredient in ingredients:  # inputs become assets (or are found) and lineage edges
            parent = self.registry.record_input(session, data=ingredient.data, path=ingredient.source)
            session.flush()  # the input row before the edges that point at it
            session.add_all(
                [
                    LineageEdge(
                        parent_id=parent.id,
                        child_id=p.asset_id,
                        generation_id=generation_id,
                        relation=ingredient.relationship,
                        role=ingredient.role,
                    )
                    for p in prepared
                ]
            )
        if request.job_key is not None:  # done with this generation, or rolled back with it
            from provgen.provenance.registry import jobs

            jobs.claim(session, job_key=request.job_key,
                       request_sha256=context.submitted_sha256 or request.content_sha256(),
                       request=request.to_dict(), generation_id=generation_id)
        session.flush()  # constraint errors surface here, before any file is in place
        return hashes


def _postprocess_actions(recipe: dict) -> list[dict[str, Any]]:
    """One ``c2pa.edited`` action per post-processor that ran, naming the plugin that registered it."""
    versions = {entry["name"]: entry["version"] for entry in recipe["plugins"]}
    return [
        {
            "action": "c2pa.edited",
            "softwareAgent": {"name": step["plugin"], "version": step["version"] or versions.get(step["plugin"], "")},
            "description": f"post-processor {step['name']}" + (f" ({step['args']})" if step["args"] else ""),
            "parameters": {"postprocessor": step["name"], "args": step["args"]},
        }
        for step in recipe["postprocess"]
    ]


def _encode_and_fingerprint(image: Image.Image, fmt: str, quality: int) -> tuple[bytes, tuple[str, str], float]:
    """``(encode_image(...), fingerprints(image), time the encoding ended)``. The fingerprints run on the
    shared pool while this thread encodes: the encoders (zlib, libjpeg, libwebp) and the hashes' resizes
    release the GIL, so with a second core the fingerprints cost only the wait for them after the encoding
    (none at 512 x 512 and up: a PNG takes 20-140 ms, the fingerprints 3-8 ms). Both only read ``image``."""
    ended = 0.0

    def encode() -> bytes:
        nonlocal ended
        data = encode_image(image, fmt, quality)
        ended = time.perf_counter()
        return data

    encoded, hashes = _parallel.both(encode, lambda: fingerprints(image, parallel=False))
    return encoded, hashes, ended


def _embed(marker: Registered, image: Image.Image, payload: int) -> Image.Image:
    """Embed with the registered method; an unexpected failure names the plugin that registered it."""
    from provgen.core.errors import ProvgenError

    try:
        return marker.item.embed(image, payload)
    except ProvgenError:
        raise
    except Exception as error:
        raise PluginHookError(marker.plugin, f"watermark {marker.item.name!r} embed", error) from error


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
