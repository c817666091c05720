"""Batch throughput: the same requests with 1 worker, 2 local workers and Ray local mode (2 actors).

    python benchmarks/batch_throughput.py [--requests 200] [--size 256] [--steps 20] [--model PATH]
                                          [--configs one,two,ray]

Prints JSON: per configuration, images per second (wall time of the whole ``provgen.batch`` call, start-up
and model loading included), the time to the first result, and the fraction of wall time spent in the
provenance layer (watermark + fingerprints + encode + sign + register, summed over jobs, divided by wall time x
workers). Ratios: 2 local workers / 1 worker, Ray / 1 worker. Targets (issue 7, 2-core CPU): provenance <= 5%
of wall time; 2 workers >= 1.7x one worker. Each configuration writes to its own PROVGEN_HOME (fresh SQLite
registry, development keys) and output folder, so every job really runs. Needs ``provgen[ray]`` for ``ray``.

One worker runs in this process with torch's default thread count (all cores: what ``--workers 1`` does);
``one1`` is the same with one torch thread, the per-worker baseline (each of 2 workers gets cores / 2 = 1
thread), so ``two / one1`` is the scaling of the worker pool and ``two / one`` what a user gains over one
worker that already spreads its tensors over both cores. The tiny random SD model is built locally unless
``--model`` is given (no download).
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

PROVENANCE_STAGES = ("watermark", "fingerprint", "encode", "sign", "register")
CONFIGS = {"one": ("local", 1), "one1": ("local", 1), "two": ("local", 2), "ray": ("ray", 2)}


def run_config(name: str, model: str, n: int, size: int, steps: int, root: Path) -> dict:
    import torch

    import provgen
    from provgen.core.config import load_settings

    engine, workers = CONFIGS[name]
    threads = torch.get_num_threads()
    if name == "one1":  # the per-worker baseline: one worker limited to one torch thread, as each of two gets
        torch.set_num_threads(1)
    home = root / name
    os.environ["PROVGEN_HOME"] = str(home)  # Ray workers and spawned processes inherit it
    settings = load_settings(home=home, registry_url=f"sqlite:///{home / 'registry.db'}")
    requests = [{"job_id": f"{name}-{i}", "prompt": f"benchmark {i}", "model": model, "seed": i, "width": size,
                 "height": size, "steps": steps} for i in range(n)]
    started = time.perf_counter()
    first = None
    results = []
    for result in provgen.batch(requests, output_dir=root / f"out-{name}", workers=workers, engine=engine,
                                settings=settings):
        first = first or time.perf_counter() - started
        results.append(result)
    wall = time.perf_counter() - started
    torch.set_num_threads(threads)
    done = [r for r in results if r.status == "done"]
    provenance_s = sum(r.result.timings.get(k, 0.0) for r in done for k in PROVENANCE_STAGES if r.result)
    sample_s = [r.result.timings.get("sample", 0.0) for r in done if r.result]
    return {
        "engine": engine,
        "workers": workers,
        "torch_threads_per_worker": 1 if name == "one1" else max(1, (os.cpu_count() or 1) // workers)
        if engine == "local" else None,
        "done": len(done),
        "failed": [r.reason for r in results if r.status == "failed"][:3],
        "wall_s": round(wall, 2),
        "first_result_s": round(first or 0.0, 2),
        "images_per_s": round(len(done) / wall, 3),
        "median_job_ms": round(statistics.median(r.seconds for r in done) * 1000, 1) if done else None,
        "median_sample_ms": round(statistics.median(sample_s) * 1000, 1) if sample_s else None,
        "provenance_fraction_of_wall": round(provenance_s / (wall * workers), 4),
        "provenance_ms_per_image": round(provenance_s / max(len(done), 1) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--model", default=None, help="diffusers folder (default: a tiny random SD model)")
    parser.add_argument("--configs", default="one,one1,two,ray")
    args = parser.parse_args()
    configs = [c for c in args.configs.split(",") if c]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model
        if model is None:
            from provgen.core.tiny_models import save_tiny_model

            model = str(save_tiny_model(root / "tiny-sd"))
        report: dict = {"requests": args.requests, "size": args.size, "steps": args.steps,
                        "cpus": os.cpu_count(), "configs": {}}
        for name in configs:
            report["configs"][name] = run_config(name, model, args.requests, args.size, args.steps, root)
        rates = {name: c["images_per_s"] for name, c in report["configs"].items()}
        for base in ("one", "one1"):
            if base in rates:
                report[f"ratios_vs_{base}"] = {name: round(rate / rates[base], 3)
                                               for name, rate in rates.items() if name != base}
        report["targets"] = {"provenance_fraction_of_wall": 0.05, "two_workers_vs_one": 1.7}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
