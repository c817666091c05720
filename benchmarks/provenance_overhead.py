"""Provenance overhead: per-stage medians at 512² and 1024², and engine vs plain diffusers wall time.

    python benchmarks/provenance_overhead.py [--repeats 15] [--model PATH] [--steps 20] [--size 256] [--stages-only]

Prints JSON. The stages are measured through the real engine and provenance layer (``Engine.generate``,
``GenerationResult.timings``): a plugin's ``sample`` wrapper swaps the tiny model's output for the test image,
so everything after sampling runs as for any generation (ids, watermark, fingerprints, PNG encoding,
manifest + signing, writing and fsyncing the file, the registry transaction). Two images per size: a
photograph (scikit-image's astronaut, resized) and uniform noise (the worst case for PNG size, hence for
signing, hashing and writing). Per image kind it reports the stage medians, their total without encoding
(the issue's figure), and ``layer_minus_encode``: the median wall time of the whole layer minus the median
time of encoding the same image alone (everything the layer adds to a plain save, recipe building and the
stages that overlap encoding included).

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
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

STAGES = ("watermark", "fingerprint", "encode", "sign", "register")


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def test_images(size: int) -> dict:  # type: ignore[type-arg]
    import numpy as np
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize((size, size), Image.Resampling.LANCZOS)
    noise = Image.fromarray(np.random.default_rng(size).integers(0, 256, (size, size, 3), dtype=np.uint8))
    return {"photo": photo, "noise": noise}


def layer_timings(model: str, images: dict, repeats: int, out: Path) -> dict:  # type: ignore[type-arg]
    """Stage medians of the real layer on each image (the tiny model samples 64 x 64, one step)."""
    from PIL import Image

    from provgen.core import Engine, hookimpl
    from provgen.core.plugins import make_plugin_manager
    from provgen.provenance.layer import encode_image

    class Swap:
        image = None

        @hookimpl(wrapper=True)
        def sample(self, context):  # type: ignore[no-untyped-def]
            images = yield
            return [Swap.image.copy()] if Swap.image is not None else images

    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(Swap(), name="benchmark-swap")
    engine = Engine(plugin_manager=pm, progress=False)
    report = {}
    try:
        for kind, image in images.items():
            Swap.image = image
            runs = []
            for i in range(repeats + 1):  # the first run opens the registry and signer: not counted
                result = engine.generate(prompt="benchmark", model=model, width=64, height=64,
                                         num_inference_steps=1, seed=i, output_dir=out / kind)
                runs.append(result.timings)
            runs = runs[1:]
            with Image.open(result.images[0].path) as written:  # the marked pixels (PNG is lossless)
                marked = written.convert("RGB")
            encode_alone = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                encode_image(marked, "png", 95)
                encode_alone.append(time.perf_counter() - t0)
            stages = {key: median_ms([run[key] for run in runs]) for key in STAGES}
            stages["total_excluding_encode"] = round(sum(v for k, v in stages.items() if k != "encode"), 2)
            stages["encode_alone"] = median_ms(encode_alone)
            stages["layer_minus_encode"] = round(median_ms([run["provenance"] for run in runs])
                                                 - stages["encode_alone"], 2)
            stages["png_bytes"] = result.images[0].path.stat().st_size
            report[kind] = stages
    finally:
        engine.close()
    return report


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

    from provgen.core.tiny_models import save_tiny_model

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        os.environ["PROVGEN_HOME"] = str(tmp_path / "home")
        os.environ.pop("PROVGEN_REGISTRY_URL", None)
        model = args.model or str(save_tiny_model(tmp_path / "tiny-sd"))
        stages = {
            f"{size}x{size}": layer_timings(model, test_images(size), args.repeats, tmp_path / f"out-{size}")
            for size in (512, 1024)
        }
        report = {
            "machine": {"cpus": os.cpu_count(), "torch_threads": args.threads},
            "provenance_stage_median_ms": stages,
            "targets": {"total_excluding_encode_1024_ms": 40, "ratio": 1.05},
        }
        if not args.stages_only:
            report["engine_vs_diffusers"] = engine_vs_diffusers(
                model, args.steps, args.size, max(5, args.repeats // 3), tmp_path / "out"
            )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
