"""benchmarks/watermark_robustness.py --sample: the held-out sample run that docs/watermark.md quotes.

The figures themselves come from the benchmark (hundreds of images, tens of minutes); these tests check that
the script runs, reports what it says it reports, and that its confidence bound is the textbook one.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("skimage")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "watermark_robustness.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("watermark_robustness", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_lower_bound_is_clopper_pearson() -> None:
    bench = load_benchmark()
    # all n recovered: the exact one-sided bound is 0.05 ** (1 / n)
    assert bench._lower_bound(300, 300) == pytest.approx(0.05 ** (1 / 300), rel=1e-9)
    assert bench._lower_bound(12, 12) == pytest.approx(0.05 ** (1 / 12), rel=1e-9)
    # a failure lowers it; none recovered gives 0
    assert bench._lower_bound(299, 300) < bench._lower_bound(300, 300)
    assert bench._lower_bound(0, 10) == 0.0


def test_sample_images_are_held_out_and_deterministic() -> None:
    bench = load_benchmark()
    first = [(kind, label) for kind, label, _ in bench._sample_images(96, 12, seed=3)]
    again = [(kind, label) for kind, label, _ in bench._sample_images(96, 12, seed=3)]
    assert first == again
    dev = set(bench.PHOTOS["dev"])
    assert not any(label.split("@")[0] in dev for kind, label in first if kind == "photo")
    assert {kind for kind, _ in first} <= {"photo", "synthetic", "generated"}


def test_sample_run_prints_the_table() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--sample", "3", "--size", "256", "--attacks", "png,jpeg90",
                           "--seed", "4"], capture_output=True, text=True, env=env, timeout=600, check=True)
    rows = dict(re.findall(r"^\| (png|jpeg90) \| (\d+/3) \|", done.stdout, re.M))
    assert rows == {"png": "3/3", "jpeg90": "3/3"}, done.stdout
    assert "95% lower bound" in done.stdout
    assert re.search(r"decode median \d+ ms over all 6 attacked images", done.stdout), done.stdout
