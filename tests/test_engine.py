"""The Python API: provgen.generate / Engine, SD 1.x and SDXL, determinism, atomicity."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

import provgen
from provgen.core import Engine, GenerationRequest, ValidationError, hookimpl
from provgen.core.plugins import make_plugin_manager

KW = dict(width=128, height=128, num_inference_steps=3, seed=3)


def rows(home: Path, table: str) -> int:
    with sqlite3.connect(home / "registry.db") as connection:
        return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


class CaptureSample:
    """Wraps `sample` to keep the images exactly as the sampler returned them (before the watermark)."""

    def __init__(self) -> None:
        self.images: list = []

    @hookimpl(wrapper=True)
    def sample(self, context):  # type: ignore[no-untyped-def]
        images = yield
        self.images = [image.copy() for image in images]
        return images


def test_module_level_generate(tiny_sd_dir: Path, tmp_path: Path, provgen_home: Path) -> None:
    result = provgen.generate(GenerationRequest(prompt="a cat", model=str(tiny_sd_dir), output_dir=tmp_path, **KW))
    [image] = result.images
    assert image.path.exists() and image.open().size == (128, 128)
    assert result.pipeline_class == "StableDiffusionPipeline" and result.scheduler == "DDIMScheduler"
    assert rows(provgen_home, "assets") == 1


def test_engine_keyword_call_and_cache(tiny_sd_dir: Path, tmp_path: Path) -> None:
    engine = Engine(progress=False)
    first = engine.generate(prompt="a", model=str(tiny_sd_dir), output_dir=tmp_path, **KW)
    second = engine(prompt="b", model=str(tiny_sd_dir), output_dir=tmp_path, **KW)
    assert len(engine._pipelines) == 1  # loaded once
    assert first.model_hash == second.model_hash
    assert first.images[0].asset_id != second.images[0].asset_id
    assert first.images[0].watermark_id != second.images[0].watermark_id
    for result in (first, second):  # `provenance` is one window that holds the per-image stages, not `setup`
        t = result.timings
        assert {"setup", "watermark", "fingerprint", "encode", "sign", "register", "provenance"} <= set(t)
        assert t["provenance"] >= t["watermark"] + t["encode"] + t["sign"] + t["register"] > 0


def test_pre_watermark_image_is_bitwise_plain_diffusers(tiny_sd_dir: Path, tmp_path: Path) -> None:
    import torch
    from diffusers import DiffusionPipeline

    capture = CaptureSample()
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(capture, name="capture")
    Engine(plugin_manager=pm, progress=False).generate(prompt="a red fox", model=str(tiny_sd_dir),
                                                         output_dir=tmp_path, **KW)
    plain = DiffusionPipeline.from_pretrained(str(tiny_sd_dir), local_files_only=True)
    plain.set_progress_bar_config(disable=True)
    expected = plain(prompt="a red fox", width=128, height=128, num_inference_steps=3, guidance_scale=7.5,
                     generator=torch.Generator("cpu").manual_seed(3)).images[0]
    assert np.array_equal(np.asarray(capture.images[0]), np.asarray(expected))


def test_watermark_changes_pixels_only_slightly(tiny_sd_dir: Path, tmp_path: Path) -> None:
    capture = CaptureSample()
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(capture, name="capture")
    result = Engine(plugin_manager=pm, progress=False).generate(
        prompt="x", model=str(tiny_sd_dir), output_dir=tmp_path, **{**KW, "width": 256, "height": 256})
    before = np.asarray(capture.images[0], dtype=np.float64)
    after = np.asarray(result.images[0].open().convert("RGB"), dtype=np.float64)
    mse = np.mean((before - after) ** 2)
    assert mse > 0  # the mark is there
    assert 10 * np.log10(255**2 / mse) >= 38


def test_same_seed_same_pixels_different_assets(tiny_sd_dir: Path, tmp_path: Path) -> None:
    capture = CaptureSample()
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(capture, name="capture")
    engine = Engine(plugin_manager=pm, progress=False)
    engine.generate(prompt="same", model=str(tiny_sd_dir), output_dir=tmp_path, **KW)
    first = np.asarray(capture.images[0])
    engine.generate(prompt="same", model=str(tiny_sd_dir), output_dir=tmp_path, **KW)
    assert np.array_equal(first, np.asarray(capture.images[0]))


def test_num_images_and_seeds(tiny_sd_dir: Path, tmp_path: Path, provgen_home: Path) -> None:
    result = Engine(progress=False).generate(prompt="many", model=str(tiny_sd_dir), output_dir=tmp_path,
                                             num_images=3, **KW)
    assert [image.seed for image in result.images] == [3, 4, 5]
    assert [image.batch_index for image in result.images] == [0, 1, 2]
    assert len({image.sha256 for image in result.images}) == 3
    assert rows(provgen_home, "assets") == 3 and rows(provgen_home, "generations") == 1


def test_random_seed_is_recorded(tiny_sd_dir: Path, tmp_path: Path) -> None:
    result = Engine(progress=False).generate(prompt="r", model=str(tiny_sd_dir), output_dir=tmp_path,
                                             **{**KW, "seed": None})
    assert result.recipe["seed"] == result.images[0].seed >= 0


def test_sdxl_end_to_end(tiny_sdxl_dir: Path, tmp_path: Path) -> None:
    from provgen.provenance.c2pa_io import read_credentials
    from provgen.provenance.trust import trust_anchors_pem

    result = Engine(progress=False).generate(prompt="a castle", negative_prompt="blurry",
                                             model=str(tiny_sdxl_dir), output_dir=tmp_path, scheduler="euler_a",
                                             **KW)
    assert result.pipeline_class == "StableDiffusionXLPipeline"
    report = read_credentials(result.images[0].path.read_bytes(), "image/png",
                              trust_anchors_pem=trust_anchors_pem(Engine(progress=False).settings))
    assert report.state == "Trusted"
    recipe = report.assertion("io.provgen.generation")
    assert recipe["model"]["pipeline_class"] == "StableDiffusionXLPipeline"
    assert recipe["scheduler"]["class"] == "EulerAncestralDiscreteScheduler"
    assert recipe["negative_prompt"] == "blurry"


def test_recipe_in_manifest(tiny_sd_dir: Path, tmp_path: Path) -> None:
    from provgen.provenance.c2pa_io import read_credentials

    result = Engine(progress=False).generate(prompt="a lighthouse", model=str(tiny_sd_dir), output_dir=tmp_path,
                                             scheduler="dpmpp_2m_karras", guidance_scale=5.0, **KW)
    image = result.images[0]
    report = read_credentials(image.path.read_bytes(), "image/png")
    recipe = report.assertion("io.provgen.generation")
    assert recipe["prompt"] == "a lighthouse" and recipe["seed"] == 3 and recipe["num_inference_steps"] == 3
    assert recipe["guidance_scale"] == 5.0 and (recipe["width"], recipe["height"]) == (128, 128)
    assert recipe["model"]["sha256"] == result.model_hash
    assert recipe["scheduler"]["name"] == "dpmpp_2m_karras"
    assert recipe["scheduler"]["config"]["use_karras_sigmas"] is True
    assert recipe["asset"]["id"] == image.asset_id
    assert {"name": "schedulers"} .items() <= recipe["plugins"][0].items() or any(
        p["name"] == "schedulers" for p in recipe["plugins"])
    actions = report.assertion("c2pa.actions")["actions"]
    created = actions[0]
    assert created["action"] == "c2pa.created"
    assert created["digitalSourceType"].endswith("trainedAlgorithmicMedia")
    assert created["softwareAgent"]["name"] == "provgen"
    binding = report.assertion("c2pa.soft-binding")
    assert binding["alg"] == "io.provgen.watermark.wm.v1"  # the default method, provgen-wm/1
    assert binding["blocks"][0]["value"] == f"{image.watermark_id:012x}"


def test_model_hash_changes_with_weights(tiny_sd_dir: Path, tmp_path: Path) -> None:
    import shutil

    from provgen.core.models import model_content_hash

    copy = tmp_path / "copy"
    shutil.copytree(tiny_sd_dir, copy)
    assert model_content_hash(copy) == model_content_hash(tiny_sd_dir)
    config = copy / "scheduler" / "scheduler_config.json"
    config.write_text(config.read_text().replace("0.012", "0.0121"))
    assert model_content_hash(copy) != model_content_hash(tiny_sd_dir)


def test_failure_in_signing_leaves_no_file_and_no_record(tiny_sd_dir: Path, tmp_path: Path,
                                                          provgen_home: Path) -> None:
    from provgen.core.errors import KeyConfigError

    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    settings = provgen.core.load_settings(cert_path=tmp_path / "cert.pem", key_path=tmp_path / "key.pem")
    with pytest.raises(KeyConfigError):
        Engine(settings, progress=False).generate(prompt="x", model=str(tiny_sd_dir),
                                                  output_dir=tmp_path / "out", **KW)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    assert not (provgen_home / "registry.db").exists() or rows(provgen_home, "assets") == 0


def test_registry_failure_removes_written_files(tiny_sd_dir: Path, tmp_path: Path, provgen_home: Path) -> None:
    """A registry write that fails (a duplicate manifest label, forced here) leaves no file and no record."""
    engine = Engine(progress=False)
    original = engine.provenance.registry.new_ids
    first = engine.generate(prompt="x", model=str(tiny_sd_dir), output_dir=tmp_path, **KW)
    engine.provenance.registry.new_ids = lambda: (first.images[0].asset_id, 12345)  # primary key clash
    from provgen.core.errors import RegistryError

    with pytest.raises(RegistryError):
        engine.generate(prompt="y", model=str(tiny_sd_dir), output_dir=tmp_path / "second", **KW)
    engine.provenance.registry.new_ids = original
    assert list((tmp_path / "second").iterdir()) == []
    assert rows(provgen_home, "assets") == 1 and rows(provgen_home, "generations") == 1
    engine.generate(prompt="z", model=str(tiny_sd_dir), output_dir=tmp_path / "second", **KW)  # still usable


def test_request_validation_messages() -> None:
    with pytest.raises(ValidationError, match="`prompt`"):
        GenerationRequest(prompt="  ").check_inputs()
    with pytest.raises(ValidationError, match="`format`"):
        GenerationRequest(prompt="x", format="gif").check_inputs()
    with pytest.raises(ValidationError, match="use 96 or 104"):
        GenerationRequest(prompt="x", width=100).check_inputs()
    with pytest.raises(ValidationError, match="`num_images`"):
        GenerationRequest(prompt="x", num_images=0).check_inputs()



def test_default_model_comes_from_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from provgen.core.config import DEFAULT_MODEL, load_settings
    from provgen.core.errors import ModelLoadError

    assert load_settings().default_model == DEFAULT_MODEL == "shapes"  # the shipped model (test_shapes_model.py)
    with pytest.raises(ValidationError, match="`model`: no model given"):  # settings may require a model
        Engine(load_settings().replace(default_model=None), progress=False).generate(prompt="x")
    monkeypatch.setenv("PROVGEN_MODEL", str(tmp_path / "no-such-model"))
    with pytest.raises(ModelLoadError, match="no-such-model"):
        Engine(progress=False).generate(prompt="x")


def test_schedulers_for_sd(tiny_sd_dir: Path) -> None:
    choices = Engine(progress=False).schedulers(str(tiny_sd_dir))
    for name in ("ddim", "euler", "euler_a", "dpmpp_2m", "unipc", "lcm", "tcd", "DPMSolverMultistepScheduler"):
        assert name in choices
    assert "flow_euler" not in choices  # flow-matching schedulers do not fit an epsilon UNet
    assert choices["dpmpp_sde"].available is (__import__("importlib").util.find_spec("torchsde") is not None)


@pytest.mark.parametrize("name", ["ddim", "euler", "euler_a", "dpmpp_2m", "unipc", "lcm", "heun", "pndm",
                                  "KDPM2AncestralDiscreteScheduler"])
def test_each_scheduler_runs(tiny_sd_dir: Path, tmp_path: Path, name: str) -> None:
    result = Engine(progress=False).generate(prompt="s", model=str(tiny_sd_dir), output_dir=tmp_path,
                                             scheduler=name, **{**KW, "width": 64, "height": 64,
                                                                "num_inference_steps": 4})
    assert result.scheduler == name


WRITE_FAILS = r"""
import json, resource, signal, sys
from pathlib import Path
from provgen.core import Engine
from provgen.core.errors import OutputError

model, out = sys.argv[1], Path(sys.argv[2])
engine = Engine(progress=False)
kw = dict(model=model, width=128, height=128, num_inference_steps=2, seed=5)
engine.generate(prompt="first", output_dir=out / "first", **kw)  # registry, keys and model ready
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (8192, hard))
try:
    engine.generate(prompt="second", output_dir=out / "second", **kw)
    error = None
except OutputError as e:
    error = str(e)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
third = engine.generate(prompt="third", output_dir=out / "third", **kw)
print(json.dumps({"error": error, "third": str(third.images[0].path)}))
"""


def test_file_write_failure_keeps_nothing(tiny_sd_dir: Path, tmp_path: Path, provgen_home: Path) -> None:
    """A real write failure (the file size limit, EFBIG) while the records are being built: a clear error, no
    file, no temporary, no record; the same engine then works again."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", WRITE_FAILS, str(tiny_sd_dir), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["error"] is not None and "cannot write" in report["error"]
    assert "File too large" in report["error"] and "nothing of this generation was kept" in report["error"]
    second = tmp_path / "second"
    assert not second.exists() or list(second.iterdir()) == []  # neither the file nor its .part temporary
    assert rows(provgen_home, "generations") == 2 and rows(provgen_home, "assets") == 2  # first and third
    with sqlite3.connect(provgen_home / "registry.db") as connection:
        prompts = sorted(p for (p,) in connection.execute("SELECT prompt FROM generations"))
    assert prompts == ["first", "third"]
    assert Path(report["third"]).is_file()
