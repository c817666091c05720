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
    """A few images through the engine (watermarked output, the model's recommended guidance 3), read back by
    the checker.

    Prompts: the first five of ``sample_prompt(random.Random(0))``, seeds 0-4, 20 steps, chosen by that rule
    before looking at the results. Measured on 500 prompts (guidance 3): background 100%, shape colour 98.0%,
    position 99.7%, shape class 87.8% (stars 57%, the other shapes 95-100%). The thresholds leave room below
    those rates.
    """
    from provgen.core import Engine

    rng = random.Random(0)
    prompts = [dataset.sample_prompt(rng) for _ in range(5)]
    engine = Engine(progress=False)
    results = []
    try:
        for seed, (caption, spec) in enumerate(prompts):
            generated = engine.generate(prompt=caption, seed=seed, num_inference_steps=20, output_dir=tmp_path)
            assert generated.recipe["guidance_scale"] == 3.0  # registered with the model, recorded as used
            image = Image.open(generated.images[0].path)
            assert image.size == (64, 64)
            results.append((caption, checker.check(image, spec)))
    finally:
        engine.close()
    background = sum(r["background"] for _, r in results)
    colour = sum(r["colour"] for _, r in results)
    stated = [r["position"] for _, r in results if r["position"] is not None]
    assert len(stated) == 4
    assert background >= 4, results
    assert colour >= 4, results
    assert sum(stated) >= 3, results
    assert sum(r["shape"] for _, r in results) >= 3, results


def test_guidance_defaults_to_the_models_registered_scale(tmp_path: Path, tiny_sd_dir: Path) -> None:
    """A request without guidance gets the registered model's scale (by name or by its folder), an explicit
    one wins, and an unregistered model gets 7.5; the recipe records the scale used."""
    from provgen.core import Engine

    engine = Engine(progress=False)
    try:
        def used(**fields: object) -> float:
            result = engine.generate(prompt="a red circle on a blue background", seed=1, num_inference_steps=2,
                                     output_dir=tmp_path, **fields)
            return result.recipe["guidance_scale"]

        assert used() == 3.0
        assert used(model=str(MODEL_DIR)) == 3.0
        assert used(guidance_scale=7.5) == 7.5
        assert used(model=str(tiny_sd_dir)) == 7.5
    finally:
        engine.close()
    code, out, err = run("models", "list", "--json")
    assert code == 0, err
    assert [r["guidance_scale"] for r in json.loads(out) if r["name"] == "shapes"] == [3.0]


def test_checker_reads_clean_renders() -> None:
    accuracy = checker.clean_accuracy(n=200)
    for field in ("colour", "background", "shape", "position"):
        assert accuracy[field] >= 0.98, accuracy


def test_vae_ceiling_bounds_what_the_latent_space_allows(torch_one_thread: None) -> None:
    """The evaluation's --vae-ceiling: clean renders through the shipped VAE, read by the checker."""
    from provgen.plugins.shapes.evaluate import load, vae_ceiling

    rng = random.Random(7)
    prompts = [dataset.sample_prompt(rng) for _ in range(30)]
    result = vae_ceiling(load(MODEL_DIR), prompts, batch=15)
    ceiling = result["vae_ceiling"]
    assert result["n"] == 30 and 0 < result["n_position"] <= 30
    assert ceiling["colour"] >= 0.9 and ceiling["background"] >= 0.9 and ceiling["position"] >= 0.9, ceiling
    assert ceiling["shape"] >= 0.7, ceiling  # the round trip keeps most shapes (stars are its weak class)
    by_class = ceiling["shape_by_class"]
    assert set(by_class) <= set(dataset.SHAPES) and all(0 <= v <= 1 for v in by_class.values())


def test_training_continues_from_a_saved_folder(tmp_path: Path) -> None:
    """train --init: two steps (of five planned, --stop-after) from the shipped model; the result is a loadable
    pipeline folder with the same tokenizer files and VAE scaling factor, and the previous run's record kept
    under "init"."""
    import subprocess
    import sys

    out = tmp_path / "model"
    args = ["--init", str(MODEL_DIR), "--out", str(out), "--steps", "5", "--stop-after", "2", "--bs", "4",
            "--threads", "1", "--seed", "3", "--warmup", "1", "--ckpt-every", "1000"]
    proc = subprocess.run([sys.executable, "-m", "provgen.plugins.shapes.train", *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json", "scheduler/scheduler_config.json"):
        assert (out / name).read_bytes() == (MODEL_DIR / name).read_bytes(), name
    record = json.loads((out / "training.json").read_text())
    shipped = json.loads((MODEL_DIR / "training.json").read_text())
    assert record["steps_done"] == 2 and record["init"] == shipped
    assert record["scaling_factor"] == shipped["scaling_factor"]
    vae_config = json.loads((out / "vae/config.json").read_text())
    assert vae_config["scaling_factor"] == shipped["scaling_factor"]
    from provgen.plugins.shapes.evaluate import generate, load

    [image] = generate(load(out), ["a red circle on a blue background"], [0], steps=2)
    assert image.size == (64, 64)
    bad = tmp_path / "bad"
    proc = subprocess.run([sys.executable, "-m", "provgen.plugins.shapes.train", "--init", str(tmp_path / "nothing"),
                           "--out", str(bad)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "--init" in proc.stderr and "model_index.json" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not bad.exists()


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


def test_default_model_output_is_recovered_after_stripping_and_jpeg(tmp_path: Path, torch_one_thread: None) -> None:
    """The default model's 64 px output, copied without its metadata: a PNG copy is found by the watermark; a
    JPEG 75 copy (which destroys a mark of 4 px blocks, docs/watermark.md) by the fingerprint, with its
    distance. Both resolve to the record of the generation, never to another one."""
    code, out, err = run(
        "generate", "a green star on a black background", "--seed", "3", "--steps", "20",
        "--out", str(tmp_path / "out"), "--json",
    )
    assert code == 0, err
    [image] = json.loads(out)["images"]
    from provgen.core.config import Settings

    pixels = Image.open(image["path"]).convert("RGB")
    png, jpeg = tmp_path / "copy.png", tmp_path / "copy.jpg"
    Image.fromarray(np.asarray(pixels)).save(png)  # pixels only: no C2PA, no text chunks
    pixels.save(jpeg, quality=75)
    code, out, err = run("verify", str(png), str(jpeg), "--json")
    assert code == 0, err
    by_png, by_jpeg = json.loads(out)
    assert by_png["c2pa"]["state"] == "Missing" and by_jpeg["c2pa"]["state"] == "Missing"
    assert by_png["verdict"] == "recovered" and by_png["match"] == "watermark"
    assert by_png["asset_id"] == image["asset_id"]
    assert by_jpeg["verdict"] == "recovered" and by_jpeg["match"] == "fingerprint", by_jpeg
    assert by_jpeg["asset_id"] == image["asset_id"]
    max_phash = Settings.__dataclass_fields__["fingerprint_max_phash"].default
    assert by_jpeg["fingerprint"]["distance"] <= max_phash, by_jpeg["fingerprint"]
