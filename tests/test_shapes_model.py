"""The shipped `shapes` model (issue 6): provgen's default model, end to end, with real components only.

Figures quoted below come from docs/models/shapes.md (`python -m provgen.plugins.shapes.evaluate --n 500`).
"""

from __future__ import annotations

import json
import random
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from provgen.cli.main import cli
from provgen.plugins.shapes import MODEL_DIR, checker, dataset

ROOT = Path(__file__).resolve().parents[1]
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_default_model_generates_64px_and_verifies(tmp_path: Path, torch_one_thread: None) -> None:
    from provgen.core.models import model_content_hash

    code, out, err = run(
        "generate",
        "a red circle on a blue background",
        "--seed",
        "7",
        "--steps",
        "20",
        "--out",
        str(tmp_path / "out"),
        "--json",
    )  # no --model, no PROVGEN_MODEL
    assert code == 0, err
    result = json.loads(out)
    assert result["model_id"] == "shapes" and result["pipeline_class"] == "StableDiffusionPipeline"
    assert result["model_hash"] == model_content_hash(MODEL_DIR)
    [image] = result["images"]
    assert (image["width"], image["height"]) == (64, 64)  # the model's native size, not 512
    assert Image.open(image["path"]).size == (64, 64)
    code, out, err = run("verify", image["path"], "--json")
    assert code == 0, err
    [report] = json.loads(out)
    assert report["verdict"] == "verified"


def test_prompt_adherence_smoke(tmp_path: Path, torch_one_thread: None) -> None:
    """A few images through the engine (watermarked output), read back by the checker.

    Prompts: the first five of ``sample_prompt(random.Random(0))``, seeds 0-4, 20 steps, guidance 6 (the
    evaluation's settings), chosen by that rule before looking at the results. Measured on 500 prompts:
    background 96.0%, shape colour 85.8%, shape class 83.6%, position 9.8% (ignored by the model). The
    thresholds (background >= 4/5, colour >= 3/5) leave room below those rates; shape and position are not
    asserted (position fails on all four of these prompts that state one).
    """
    from provgen.core import Engine

    rng = random.Random(0)
    prompts = [dataset.sample_prompt(rng) for _ in range(5)]
    engine = Engine(progress=False)
    results = []
    try:
        for seed, (caption, spec) in enumerate(prompts):
            generated = engine.generate(
                prompt=caption, seed=seed, num_inference_steps=20, guidance_scale=6.0, output_dir=tmp_path
            )
            image = Image.open(generated.images[0].path)
            assert image.size == (64, 64)
            results.append((caption, checker.check(image, spec)))
    finally:
        engine.close()
    background = sum(r["background"] for _, r in results)
    colour = sum(r["colour"] for _, r in results)
    assert background >= 4, results
    assert colour >= 3, results


def test_checker_reads_clean_renders() -> None:
    accuracy = checker.clean_accuracy(n=200)
    for field in ("colour", "background", "shape", "position"):
        assert accuracy[field] >= 0.98, accuracy


def test_dataset_is_deterministic() -> None:
    first = [dataset.sample_prompt(random.Random(42)) for _ in range(2)]
    assert first[0] == first[1]
    caption, spec = first[0]
    assert caption == dataset.caption_of(spec)
    a, b = dataset.render(spec), dataset.render(dict(spec))
    assert a.size == (64, 64) and np.array_equal(np.asarray(a), np.asarray(b))
    assert len({dataset.sample_prompt(random.Random(seed))[0] for seed in range(10)}) > 1  # the seed matters


def test_models_list_shows_shapes_with_hash() -> None:
    from provgen.core.models import model_content_hash

    code, out, err = run("models", "list", "--json")
    assert code == 0, err
    [row] = [r for r in json.loads(out) if r["name"] == "shapes"]
    assert SHA256.match(row["sha256"]) and row["sha256"] == model_content_hash(MODEL_DIR)
    assert row["default"] is True and row["plugin"] == "shapes-model"
    assert row["pipeline_class"] == "StableDiffusionPipeline" and Path(row["path"]).resolve() == MODEL_DIR.resolve()
    code, out, _ = run("models", "list")
    assert code == 0 and "shapes (default): StableDiffusionPipeline" in out and row["sha256"] in out
    code, out, _ = run("plugins", "list")
    assert code == 0 and "shapes-model 0.1.0 (provgen, builtin): register_models" in out


def test_environment_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from provgen.core.config import load_settings

    assert load_settings().default_model == "shapes"
    monkeypatch.setenv("PROVGEN_MODEL", "./elsewhere")
    assert load_settings().default_model == "./elsewhere"
    code, out, _ = run("models", "list", "--json")
    assert code == 0 and not [r for r in json.loads(out) if r["default"]]


def test_every_model_file_ships_as_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "provgen.plugins.shapes"
    ]
    package = ROOT / "plugins" / "shapes"
    shipped = {path for pattern in patterns for path in package.glob(pattern) if path.is_file()}
    files = {path for path in MODEL_DIR.rglob("*") if path.is_file()}
    assert files and files == shipped, sorted(str(p.relative_to(package)) for p in files ^ shipped)
    assert (MODEL_DIR / "model_index.json").is_file()
