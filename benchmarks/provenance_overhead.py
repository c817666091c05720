"""Provenance overhead: per-stage medians at 512² and 1024², and engine vs plain diffusers wall time.

    python benchmarks/provenance_overhead.py [--repeats 15] [--model PATH] [--steps 20] [--size 256] [--stages-only]

Prints JSON. Each stage does what ``ProvenanceLayer.finalize`` does per image: ``embed``, ``fingerprints`` (pHash
and dHash), PNG encoding, manifest + signing, and one transaction with the generation, asset and dHash
fingerprint rows (the layer's register time also covers writing and fsyncing the file, left out here).
Targets (issue 2, 2-core CPU): total provenance (watermark + fingerprint + sign + register, image encoding
excluded) <= 40 ms at 1024²; engine / diffusers wall-time ratio <= 1.05; the image before watermarking
bitwise identical to the plain diffusers output. ``--stages-only`` skips the engine comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def stage_timings(image, repeats: int, home: Path) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from provgen.core.config import load_settings
    from provgen.core.plugins import make_plugin_manager
    from provgen.core.registries import get_watermark_method
    from provgen.provenance.c2pa_io import ManifestSigner, build_manifest
    from provgen.provenance.fingerprint import fingerprints
    from provgen.provenance.keys import load_dev_identity
    from provgen.provenance.layer import encode_image
    from provgen.provenance.registry import Asset, Fingerprint, Generation, open_registry

    settings = load_settings(home=home)
    method = get_watermark_method(make_plugin_manager(load_entrypoints=False), settings.watermark_method).item
    signer = ManifestSigner(load_dev_identity(settings.keys_dir))
    registry = open_registry(settings.registry_url)
    times: dict[str, list[float]] = {k: [] for k in ("watermark", "fingerprint", "encode_png", "sign", "register")}
    recipe = {"prompt": "benchmark", "seed": 1}
    for _ in range(repeats):
        asset_id, watermark_id = registry.new_ids()
        t0 = time.perf_counter()
        marked = method.embed(image, watermark_id)
        t1 = time.perf_counter()
        fingerprint, second = fingerprints(marked)
        t2 = time.perf_counter()
        encoded = encode_image(marked, "png", 95)
        t3 = time.perf_counter()
        manifest = build_manifest(title="bench.png", software_version="bench", recipe=recipe,
                                  soft_binding_alg=method.soft_binding_alg,
                                  soft_binding_value=f"{watermark_id:012x}")
        signed = signer.sign(encoded, "image/png", manifest)
        t4 = time.perf_counter()
        generation_id = uuid.uuid4().hex
        with registry.transaction() as session:
            session.add(Generation(id=generation_id, requester="bench", model_id="m", model_hash="0" * 64,
                                   pipeline_class="P", scheduler="s", prompt="benchmark", negative_prompt=None,
                                   seed=1, num_inference_steps=1, guidance_scale=1.0, width=image.width,
                                   height=image.height, num_images=1, recipe=recipe, plugins=[]))
            session.add(Asset(id=asset_id, generation_id=generation_id, batch_index=0, seed=1,
                              sha256=uuid.uuid4().hex * 2, watermark_id=watermark_id,
                              watermark_method=method.name, phash=fingerprint, format="png", width=image.width,
                              height=image.height, size_bytes=len(signed.data), path="/dev/null",
                              manifest_label=signed.label, manifest_store=signed.manifest_store))
            session.add(Fingerprint(asset_id=asset_id, kind="dhash", value=second))
        t5 = time.perf_counter()
        for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            times[key].append(seconds)
    registry.close()
    signer.close()
    result = {key: median_ms(values) for key, values in times.items()}
    result["total_excluding_encode"] = round(sum(v for k, v in result.items() if k != "encode_png"), 2)
    return result


def engine_vs_diffusers(model: str, steps: int, size: int, repeats: int, out: Path) -> dict:
    import numpy as np
    import torch
    from diffusers import DiffusionPipeline

    from provgen.core import Engine, hookimpl
    from provgen.core.plugins import make_plugin_manager

    class Capture:
        images: list = []

        @hookimpl(wrapper=True)
        def sample(self, context):  # type: ignore[no-untyped-def]
            images = yield
            Capture.images = [image.copy() for image in images]
            return images

    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(Capture(), name="capture")
    engine = Engine(plugin_manager=pm, progress=False)
    plain = DiffusionPipeline.from_pretrained(model, local_files_only=True)
    plain.set_progress_bar_config(disable=True)
    kwargs = dict(prompt="a lighthouse at dusk", width=size, height=size, num_inference_steps=steps,
                  guidance_scale=7.5)
    engine.generate(**kwargs, model=model, seed=7, output_dir=out)  # warm-up: load, keys, registry
    plain(**kwargs, generator=torch.Generator("cpu").manual_seed(7))
    engine_times, plain_times = [], []
    identical = True
    for i in range(repeats):  # interleave so machine noise hits both alike
        t0 = time.perf_counter()
        expected = plain(**kwargs, generator=torch.Generator("cpu").manual_seed(7 + i)).images[0]
        t1 = time.perf_counter()
        engine.generate(**kwargs, model=model, seed=7 + i, output_dir=out)
        t2 = time.perf_counter()
        plain_times.append(t1 - t0)
        engine_times.append(t2 - t1)
        identical &= bool(np.array_equal(np.asarray(Capture.images[0]), np.asarray(expected)))
    engine.close()
    return {"size": size, "steps": steps, "repeats": repeats, "diffusers_ms": median_ms(plain_times),
            "engine_ms": median_ms(engine_times),
            "ratio": round(statistics.median(engine_times) / statistics.median(plain_times), 4),
            "pre_watermark_bitwise_identical": identical}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--model", default=None, help="diffusers folder (default: a tiny random SD built now)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=256, help="image size for the engine/diffusers ratio")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = stable on 2 cores)")
    parser.add_argument("--stages-only", action="store_true", help="skip the engine vs diffusers comparison")
    args = parser.parse_args()

    import torch
    from PIL import Image

    from provgen.core.tiny_models import save_tiny_model

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        os.environ["PROVGEN_HOME"] = str(tmp_path / "home")
        os.environ.pop("PROVGEN_REGISTRY_URL", None)
        stages = {}
        for size in (512, 1024):
            # a photo-like test image (the tiny model's output is noise, which flatters nothing)
            image = Image.effect_mandelbrot((size, size), (-2, -1.25, 0.5, 1.25), 100).convert("RGB")
            image = Image.merge("RGB", [image.getchannel(0), image.rotate(90).getchannel(0),
                                        image.transpose(Image.FLIP_LEFT_RIGHT).getchannel(0)])
            stages[f"{size}x{size}"] = stage_timings(image, args.repeats, tmp_path / f"home-{size}")
        report = {
            "machine": {"cpus": os.cpu_count(), "torch_threads": args.threads},
            "provenance_stage_median_ms": stages,
            "targets": {"total_excluding_encode_1024_ms": 40, "ratio": 1.05},
        }
        if not args.stages_only:
            model = args.model or str(save_tiny_model(tmp_path / "tiny-sd"))
            report["engine_vs_diffusers"] = engine_vs_diffusers(
                model, args.steps, args.size, max(5, args.repeats // 3), tmp_path / "out"
            )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
