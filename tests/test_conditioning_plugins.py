"""The conditioning plugins (provgen/plugins): LoRA, ControlNet, IP-Adapter.

Real components throughout: tiny random diffusers models and adapters built here, loaded from local folders;
the real c2pa reader; the SQLite registry. Pixels are compared before the watermark (a ``sample`` wrapper
records what the sampler returned), so "equals the plain run" is bitwise.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from provgen.cli.main import cli
from provgen.core import Engine, ValidationError, hookimpl
from provgen.core.models import model_content_hash
from provgen.core.plugins import make_plugin_manager
from provgen.provenance.c2pa_io import GENERATION_ASSERTION, read_credentials

KW = dict(width=128, height=128, num_inference_steps=4, seed=5)


# ------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tiny_lora_dir(tmp_path_factory: pytest.TempPathFactory, torch_one_thread: None) -> Path:
    """A LoRA on the tiny SD UNet's attention and text encoder (diffusers format), lora_B randomised
    (peft zero-initialises it, which would make a no-op LoRA)."""
    pytest.importorskip("peft")
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    from provgen.core.tiny_models import tiny_sd_pipeline

    pipe = tiny_sd_pipeline()
    unet, text_encoder = pipe.unet, pipe.text_encoder
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    # peft directly: transformers 5.24's own add_adapter wants peft >= 0.22, newer than the package index has
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Already found a `peft_config` attribute in the model"
        inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4,
                                           target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]), text_encoder)
    generator = torch.Generator().manual_seed(100)
    with torch.no_grad():
        for module in (unet, text_encoder):
            for name, parameter in module.named_parameters():
                if "lora_B" in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    out = tmp_path_factory.mktemp("lora") / "tiny-lora"
    StableDiffusionPipeline.save_lora_weights(
        str(out), unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(text_encoder)))
    return out


def _controlnet(unet: Any, path: Path) -> Path:
    import torch
    from diffusers import ControlNetModel

    controlnet = ControlNetModel.from_unet(unet)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the output convs start at zero (a no-op ControlNet): randomise them
        for module in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                       controlnet.controlnet_cond_embedding.conv_out]:
            module.weight.normal_(0, 0.1, generator=generator)
    controlnet.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_controlnet_dir(tmp_path_factory: pytest.TempPathFactory, torch_one_thread: None) -> Path:
    from provgen.core.tiny_models import tiny_sd_pipeline

    return _controlnet(tiny_sd_pipeline().unet, tmp_path_factory.mktemp("controlnet") / "tiny-controlnet")


@pytest.fixture(scope="session")
def tiny_sdxl_controlnet_dir(tmp_path_factory: pytest.TempPathFactory, torch_one_thread: None) -> Path:
    from provgen.core.tiny_models import tiny_sdxl_pipeline

    return _controlnet(tiny_sdxl_pipeline().unet, tmp_path_factory.mktemp("controlnet") / "tiny-sdxl-controlnet")


@pytest.fixture(scope="session")
def tiny_ip_adapter_dir(tmp_path_factory: pytest.TempPathFactory, torch_one_thread: None) -> Path:
    """h94/IP-Adapter layout: ROOT/models/ip-adapter_tiny.safetensors + ROOT/models/image_encoder/."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from provgen.core.tiny_models import tiny_sd_pipeline

    unet = tiny_sd_pipeline().unet
    root = tmp_path_factory.mktemp("ip") / "tiny-ip-adapter"
    generator = torch.Generator().manual_seed(0)

    def rnd(*shape: int) -> Any:
        return torch.randn(*shape, generator=generator) * 0.02

    cad, tokens, embed = unet.config.cross_attention_dim, 4, 32
    weights = {"image_proj.proj.weight": rnd(tokens * cad, embed), "image_proj.proj.bias": torch.zeros(tokens * cad),
               "image_proj.norm.weight": torch.ones(cad), "image_proj.norm.bias": torch.zeros(cad)}
    key = 1  # cross-attention processors are numbered 1, 3, 5, ... in unet.attn_processors order
    for name in unet.attn_processors:
        if name.endswith("attn2.processor"):
            hidden = unet.get_submodule(name[: -len(".processor")]).to_q.out_features
            weights[f"ip_adapter.{key}.to_k_ip.weight"] = rnd(hidden, cad)
            weights[f"ip_adapter.{key}.to_v_ip.weight"] = rnd(hidden, cad)
            key += 2
    (root / "models").mkdir(parents=True)
    save_file(weights, str(root / "models" / "ip-adapter_tiny.safetensors"))
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, projection_dim=embed, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        image_size=32, patch_size=4)).save_pretrained(str(root / "models" / "image_encoder"))
    return root


class Capture:
    """Records what the sampler returned (before post-processing and the watermark)."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []

    @hookimpl(wrapper=True)
    def sample(self, context):  # type: ignore[no-untyped-def]
        images = yield
        self.images.append(np.asarray(images[0].convert("RGB"), dtype=np.int16))
        return images


@pytest.fixture
def capture() -> Capture:
    return Capture()


@pytest.fixture
def engine(capture: Capture) -> Engine:
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(capture, name="capture")
    return Engine(plugin_manager=pm, progress=False)


def run(engine: Engine, capture: Capture, model: Path, out: Path, **fields: Any) -> tuple[Any, np.ndarray]:
    result = engine.generate(**{"prompt": "a test", "model": str(model), "output_dir": out, **KW, **fields})
    return result, capture.images[-1]


def cli_run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def rows(home: Path, sql: str) -> list[tuple]:
    db = home / "registry.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as connection:
        return connection.execute(sql).fetchall()


def report(path: Path):  # type: ignore[no-untyped-def]
    found = read_credentials(path.read_bytes(), "image/png")
    assert found.state in ("Trusted", "Valid"), found.codes
    return found


def verdict(path: Path) -> str:
    code, out, err = cli_run("verify", str(path), "--json")
    assert code == 0, err
    [result] = json.loads(out)
    return result["verdict"]


def picture(path: Path, seed: int, size: tuple[int, int] = (128, 128)) -> Path:
    Image.fromarray((np.random.RandomState(seed).rand(size[1], size[0], 3) * 255).astype("uint8")).save(path)
    return path


def nothing_written(home: Path, out: Path) -> bool:
    return not out.exists() and rows(home, "SELECT count(*) FROM assets") in ([], [(0,)])


# ------------------------------------------------------------------------------------- LoRA


def test_lora_changes_the_image_and_leaves_the_pipeline_clean(tiny_sd_dir: Path, tiny_lora_dir: Path,
                                                              tmp_path: Path, engine: Engine,
                                                              capture: Capture) -> None:
    weights = tiny_lora_dir / "pytorch_lora_weights.safetensors"
    _, plain = run(engine, capture, tiny_sd_dir, tmp_path / "plain")
    full, lora = run(engine, capture, tiny_sd_dir, tmp_path / "lora", plugin_options={"lora": [str(tiny_lora_dir)]})
    assert np.abs(lora - plain).mean() > 1  # measured 2.9 (of 255)
    _, after = run(engine, capture, tiny_sd_dir, tmp_path / "after")
    assert np.array_equal(after, plain)  # no leak into the cached pipeline
    # weight 0: peft adds lora_B(lora_A(x)) * 0.0 = exactly 0 to every layer, so the run is bitwise the plain one
    _, zero = run(engine, capture, tiny_sd_dir, tmp_path / "zero", plugin_options={"lora": f"{weights}:0"})
    assert np.array_equal(zero, plain)
    # two adapters at 0.5 add up to one at 1 (a LoRA is linear in its weight), up to float rounding
    _, halves = run(engine, capture, tiny_sd_dir, tmp_path / "halves",
                    plugin_options={"lora": [f"{tiny_lora_dir}:0.5", f"{weights}:0.5"]})
    assert np.abs(halves - lora).max() <= 2

    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert full.recipe["plugins_data"]["lora"] == {"loras": [{
        "path": str(tiny_lora_dir.resolve()), "file": str(weights.resolve()), "sha256": digest,
        "size_bytes": weights.stat().st_size, "scale": 1.0, "adapter_name": "provgen_lora_0"}]}
    found = report(full.images[0].path)
    assert found.assertion(GENERATION_ASSERTION)["plugins_data"]["lora"]["loras"][0]["sha256"] == digest
    assert found.ingredients == []  # a LoRA is a model, not an input image
    assert verdict(full.images[0].path) == "verified"


@pytest.mark.parametrize("scheduler", ["lcm", "tcd"])
def test_few_step_scheduler_with_a_lora_as_lcm_lora_is_used(scheduler: str, tiny_sd_dir: Path, tiny_lora_dir: Path,
                                                            tmp_path: Path, engine: Engine, capture: Capture) -> None:
    """LCM-LoRA style: a distilled LoRA with the LCM or TCD scheduler, 4 steps, guidance 1 (the tiny LoRA is
    random, so this checks the combination runs, differs from the plain run and is recorded, not its quality)."""
    few = {"scheduler": scheduler, "num_inference_steps": 4, "guidance_scale": 1.0}
    _, plain = run(engine, capture, tiny_sd_dir, tmp_path / "plain", **few)
    result, image = run(engine, capture, tiny_sd_dir, tmp_path / "lcm", plugin_options={"lora": [str(tiny_lora_dir)]},
                        **few)
    assert np.abs(image - plain).mean() > 0.5
    assert result.recipe["scheduler"]["name"] == scheduler and result.recipe["num_inference_steps"] == 4
    assert result.recipe["plugins_data"]["lora"]["loras"][0]["scale"] == 1.0
    assert verdict(result.images[0].path) == "verified"


def test_lora_is_immune_to_diffusers_sticky_lora_scale(tiny_sd_dir: Path, tiny_lora_dir: Path, tmp_path: Path,
                                                      engine: Engine, capture: Capture) -> None:
    """diffusers 0.42 keeps ``pipe._lora_scale`` from a call with ``cross_attention_kwargs={"scale": s}`` and
    loads the next text-encoder LoRA at that scale; ``set_adapters`` (which the plugin always calls) resets it."""
    options = {"lora": str(tiny_lora_dir)}
    _, first = run(engine, capture, tiny_sd_dir, tmp_path / "a", plugin_options=options)

    class Scaled:
        @hookimpl
        def call_arguments(self) -> dict[str, Any]:
            return {"cross_attention_kwargs": {"scale": 0.3}}

    engine.pm.register(Scaled(), name="scaled")
    run(engine, capture, tiny_sd_dir, tmp_path / "b")
    engine.pm.unregister(name="scaled")
    _, second = run(engine, capture, tiny_sd_dir, tmp_path / "c", plugin_options=options)
    assert np.array_equal(first, second)


def test_lora_arguments_are_checked_before_the_model_loads(tiny_lora_dir: Path, tiny_controlnet_dir: Path,
                                                           tmp_path: Path, engine: Engine, provgen_home: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tiny_lora_dir / "pytorch_lora_weights.safetensors"
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.safetensors").write_text("not safetensors")
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.safetensors", "b.safetensors"):
        (two / name).write_bytes(weights.read_bytes())
    cases = [
        (str(tmp_path / "missing.safetensors"), "does not exist"),
        (f"{weights}:abc", "scale 'abc' is not a number"),
        (f"{weights}:11", "scale must be a number from -10 to 10, got 11"),
        (f"{weights}:nan", "scale must be a number from -10 to 10"),
        (str(tmp_path / "empty"), "holds no .safetensors file"),
        (str(two), "holds several .safetensors files \\(a.safetensors, b.safetensors\\)"),
        (str(tiny_lora_dir / ".." ), "holds no .safetensors file"),
        (str(tmp_path / "notes.safetensors"), "is not a safetensors file"),
        (str(tiny_controlnet_dir / "config.json"), "is not a .safetensors file"),
        (str(tiny_controlnet_dir), "holds no LoRA weights"),
    ]
    model = str(tmp_path / "no-such-model")  # every check happens before the model would load
    for spec, message in cases:
        with pytest.raises(ValidationError, match=f"`lora`: `--lora .*`: .*{message}"):
            engine.generate(prompt="x", model=model, output_dir=tmp_path / "out", plugin_options={"lora": spec})
    needs = r"`lora`: `--lora` needs the `peft` package.*pip install 'provgen\[lora\]'"
    with monkeypatch.context() as patch, pytest.raises(ValidationError, match=needs):
        patch.setitem(sys.modules, "peft", None)  # `import peft` fails as if it were not installed
        engine.generate(prompt="x", model=model, plugin_options={"lora": str(weights)})
    assert nothing_written(provgen_home, tmp_path / "out")
    code, _, err = cli_run("generate", "x", "--model", model, "--lora", f"{weights}:lots")
    assert code == 2 and f"`--lora {weights}:lots`: scale 'lots' is not a number" in err and "Traceback" not in err


def test_a_lora_that_does_not_fit_fails_cleanly(tiny_sdxl_dir: Path, tiny_lora_dir: Path, tmp_path: Path,
                                                engine: Engine, capture: Capture, provgen_home: Path) -> None:
    _, plain = run(engine, capture, tiny_sdxl_dir, tmp_path / "plain", num_inference_steps=2)
    with pytest.raises(ValidationError, match=r"`lora`: `--lora .*`: does not fit .*StableDiffusionXLPipeline.*size "
                                              "mismatch"):
        run(engine, capture, tiny_sdxl_dir, tmp_path / "bad", num_inference_steps=2,
            plugin_options={"lora": str(tiny_lora_dir)})
    assert not (tmp_path / "bad").exists() and rows(provgen_home, "SELECT count(*) FROM assets") == [(1,)]
    _, after = run(engine, capture, tiny_sdxl_dir, tmp_path / "after", num_inference_steps=2)
    assert np.array_equal(after, plain)  # the half-loaded adapter was removed


# ------------------------------------------------------------------------------------- ControlNet


def test_controlnet_conditions_and_records_the_control_image(tiny_sd_dir: Path, tiny_controlnet_dir: Path,
                                                             tmp_path: Path, engine: Engine, capture: Capture,
                                                             provgen_home: Path) -> None:
    control = picture(tmp_path / "control.png", 1)
    _, plain = run(engine, capture, tiny_sd_dir, tmp_path / "plain")
    result, conditioned = run(engine, capture, tiny_sd_dir, tmp_path / "cn",
                              plugin_options={"controlnet": f"{tiny_controlnet_dir}={control}"})
    assert result.pipeline_class == "StableDiffusionControlNetPipeline"
    assert np.abs(conditioned - plain).mean() > 5
    # scale 0: the residuals are multiplied by 0.0 and added to the UNet's own activations (x + 0.0 == x), and
    # the ControlNet pipeline otherwise does what the plain one does: bitwise equal (measured: max diff 0)
    _, zero = run(engine, capture, tiny_sd_dir, tmp_path / "zero",
                  plugin_options={"controlnet": [f"{tiny_controlnet_dir}={control}:0"]})
    assert np.array_equal(zero, plain)
    _, after = run(engine, capture, tiny_sd_dir, tmp_path / "after")
    assert np.array_equal(after, plain)  # the cached pipeline was not changed

    data = result.recipe["plugins_data"]["controlnet"]
    assert data["units"] == [{
        "model": {"path": str(tiny_controlnet_dir.resolve()), "sha256": model_content_hash(tiny_controlnet_dir),
                  "class": "ControlNetModel"},
        "image": {"path": str(control.resolve()), "sha256": hashlib.sha256(control.read_bytes()).hexdigest(),
                  "format": "png", "width": 128, "height": 128},
        "scale": 1.0, "ingredient": "controlnet_image_0"}]
    assert (data["guidance_start"], data["guidance_end"]) == (0.0, 1.0)
    found = report(result.images[0].path)
    assert [(i["title"], i["relationship"]) for i in found.ingredients] == [("control.png", "inputTo")]
    [created, _] = found.assertion("c2pa.actions")["actions"]
    assert created["action"] == "c2pa.created" and len(created["parameters"]["ingredients"]) == 1
    edges = rows(provgen_home, "SELECT a.kind, a.path, e.relation, e.role FROM lineage_edges e JOIN assets a "
                               f"ON a.id = e.parent_id WHERE e.child_id = '{result.images[0].asset_id}'")
    assert edges == [("external", str(control.resolve()), "inputTo", "controlnet")]
    assert verdict(result.images[0].path) == "verified"


def test_several_controlnets_from_the_command_line(tiny_sd_dir: Path, tiny_controlnet_dir: Path, tmp_path: Path,
                                                   provgen_home: Path) -> None:
    first, second = picture(tmp_path / "one.png", 1), picture(tmp_path / "two.png", 2)
    code, out, err = cli_run("generate", "a test", "--model", str(tiny_sd_dir), "-W", "128", "-H", "128",
                             "--steps", "2", "--seed", "5", "--out", str(tmp_path / "out"), "--json",
                             "--controlnet", f"{tiny_controlnet_dir}={first}",
                             "--controlnet", f"{tiny_controlnet_dir}={second}:0.5",
                             "--controlnet", f"{tiny_controlnet_dir}={first}:0.25",
                             "--control-guidance-start", "0.1", "--control-guidance-end", "0.5")
    assert code == 0, err
    result = json.loads(out)
    [image] = result["images"]
    assert result["pipeline_class"] == "StableDiffusionControlNetPipeline"
    found = report(Path(image["path"]))
    data = found.assertion(GENERATION_ASSERTION)["plugins_data"]["controlnet"]
    assert [(u["scale"], u["ingredient"]) for u in data["units"]] == [
        (1.0, "controlnet_image_0"), (0.5, "controlnet_image_1"), (0.25, "controlnet_image_0")]
    assert (data["guidance_start"], data["guidance_end"]) == (0.1, 0.5)
    # the image used twice is one ingredient and one lineage edge
    assert [i["title"] for i in found.ingredients] == ["one.png", "two.png"]
    assert rows(provgen_home, "SELECT count(*), min(role), max(role) FROM lineage_edges") == [
        (2, "controlnet", "controlnet")]


def test_controlnet_on_sdxl(tiny_sdxl_dir: Path, tiny_sdxl_controlnet_dir: Path, tmp_path: Path, engine: Engine,
                            capture: Capture) -> None:
    control = picture(tmp_path / "control.png", 3)
    _, plain = run(engine, capture, tiny_sdxl_dir, tmp_path / "plain", num_inference_steps=2)
    result, conditioned = run(engine, capture, tiny_sdxl_dir, tmp_path / "cn", num_inference_steps=2,
                              plugin_options={"controlnet": f"{tiny_sdxl_controlnet_dir}={control}:0.8"})
    assert result.pipeline_class == "StableDiffusionXLControlNetPipeline"
    assert np.abs(conditioned - plain).mean() > 1


def test_controlnet_arguments_are_checked(tiny_sd_dir: Path, tiny_sdxl_dir: Path, tiny_controlnet_dir: Path,
                                          tmp_path: Path, engine: Engine, capture: Capture,
                                          provgen_home: Path) -> None:
    control = picture(tmp_path / "control.png", 1)
    (tmp_path / "notes.png").write_text("not an image")
    Image.new("RGB", (64, 64)).save(tmp_path / "control.bmp")
    cn = tiny_controlnet_dir
    cases = [
        (str(cn), r"`--controlnet .*`: expected MODEL=IMAGE\[:SCALE\]"),
        (f"={control}", r"`--controlnet .*`: expected MODEL=IMAGE\[:SCALE\]"),
        (f"{tmp_path / 'nope'}={control}", "model .* does not exist"),
        (f"{tiny_sd_dir}={control}", "is not a folder with a config.json"),
        (f"{tiny_sd_dir / 'unet'}={control}", "holds a UNet2DConditionModel model, not a ControlNet"),
        (f"{cn}={tmp_path / 'missing.png'}", "image .* does not exist"),
        (f"{cn}={tmp_path / 'notes.png'}", "is not an image Pillow can read"),
        (f"{cn}={tmp_path / 'control.bmp'}", "is a BMP image; use PNG, JPEG or WebP"),
        (f"{cn}={control}:x", "scale 'x' is not a number"),
        (f"{cn}={control}:-1", "scale must be a number from 0 to 10, got -1"),
        ({"units": f"{cn}={control}", "guidance_start": 0.6, "guidance_end": 0.4},
         r"`--control-guidance-start` \(0.6\) must be less than `--control-guidance-end` \(0.4\)"),
        ({"units": [], "guidance_end": 0.5}, "`--control-guidance-end` needs at least one `--controlnet"),
        ({"units": f"{cn}={control}", "guidance_end": 2}, "`--control-guidance-end` must be a number from 0 to 1"),
        ({"units": f"{cn}={control}", "strength": 2}, "unknown controlnet option"),
    ]
    model = str(tmp_path / "no-such-model")
    for value, message in cases:
        with pytest.raises(ValidationError, match=f"`controlnet`: .*{message}"):
            engine.generate(prompt="x", model=model, output_dir=tmp_path / "out",
                            plugin_options={"controlnet": value})
    assert nothing_written(provgen_home, tmp_path / "out")
    code, _, err = cli_run("generate", "x", "--model", model, "--control-guidance-start", "0.2")
    assert code == 2 and "`--control-guidance-start` needs at least one `--controlnet" in err
    # a ControlNet made for SD 1.x on an SDXL model: refused after the model loads, nothing written, engine fine
    with pytest.raises(ValidationError, match=r"`--controlnet .*`: this ControlNet does not fit .*cross_attention_dim"):
        run(engine, capture, tiny_sdxl_dir, tmp_path / "out", plugin_options={"controlnet": f"{cn}={control}"})
    assert nothing_written(provgen_home, tmp_path / "out")
    run(engine, capture, tiny_sdxl_dir, tmp_path / "ok", num_inference_steps=2)


# ------------------------------------------------------------------------------------- IP-Adapter


def test_ip_adapter_uses_the_reference_image_and_unloads(tiny_sd_dir: Path, tiny_ip_adapter_dir: Path,
                                                         tmp_path: Path, engine: Engine, capture: Capture,
                                                         provgen_home: Path) -> None:
    reference = picture(tmp_path / "reference.png", 4, (48, 48))
    _, plain = run(engine, capture, tiny_sd_dir, tmp_path / "plain")
    result, adapted = run(engine, capture, tiny_sd_dir, tmp_path / "ip",
                          plugin_options={"ip_adapter": f"{tiny_ip_adapter_dir}={reference}:0.7"})
    assert np.abs(adapted - plain).mean() > 0.5
    _, after = run(engine, capture, tiny_sd_dir, tmp_path / "after")
    assert np.array_equal(after, plain)  # unloaded: attention processors back, no image encoder left behind
    _, cached = engine.load(str(tiny_sd_dir))
    assert cached.image_encoder is None and cached.feature_extractor is None
    # the image encoder is cached with the pipeline: a second run loads only the adapter weights
    _, again = run(engine, capture, tiny_sd_dir, tmp_path / "again",
                   plugin_options={"ip_adapter": [f"{tiny_ip_adapter_dir / 'models'}={reference}:0.7"]})
    assert np.array_equal(again, adapted)

    weights = tiny_ip_adapter_dir / "models" / "ip-adapter_tiny.safetensors"
    encoder = tiny_ip_adapter_dir / "models" / "image_encoder"
    data = result.recipe["plugins_data"]["ip_adapter"]
    assert data["adapter"] == {
        "path": str(tiny_ip_adapter_dir.resolve()),
        "weights": {"path": str(weights.resolve()), "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
                    "size_bytes": weights.stat().st_size},
        "image_encoder": {"path": str(encoder.resolve()), "sha256": model_content_hash(encoder)}}
    assert data["scale"] == 0.7 and data["image"]["sha256"] == hashlib.sha256(reference.read_bytes()).hexdigest()
    found = report(result.images[0].path)
    assert [(i["title"], i["relationship"]) for i in found.ingredients] == [("reference.png", "inputTo")]
    edges = rows(provgen_home, "SELECT e.relation, e.role FROM lineage_edges e "
                               f"WHERE e.child_id = '{result.images[0].asset_id}'")
    assert edges == [("inputTo", "ip_adapter")]
    assert verdict(result.images[0].path) == "verified"


def test_ip_adapter_arguments_are_checked(tiny_sd_dir: Path, tiny_sdxl_dir: Path, tiny_ip_adapter_dir: Path,
                                          tiny_lora_dir: Path, tmp_path: Path, engine: Engine, capture: Capture,
                                          provgen_home: Path) -> None:
    reference = picture(tmp_path / "reference.png", 4, (48, 48))
    ip = tiny_ip_adapter_dir
    cases = [
        (str(ip), r"expected PATH=IMAGE\[:SCALE\]"),
        (f"{tmp_path / 'nope'}={reference}", "does not exist"),
        (f"{tiny_sd_dir}={reference}", "found no adapter weights"),
        (f"{ip / 'models' / 'image_encoder' / 'config.json'}={reference}", "is not a .safetensors file"),
        (f"{ip}={tmp_path / 'missing.png'}", "image .* does not exist"),
        (f"{ip}={reference}:11", "scale must be a number from 0 to 10"),
        ([f"{ip}={reference}", f"{ip}={reference}"], "`--ip-adapter` may be given once per request"),
    ]
    model = str(tmp_path / "no-such-model")
    for value, message in cases:
        with pytest.raises(ValidationError, match=f"`ip_adapter`: .*{message}"):
            engine.generate(prompt="x", model=model, plugin_options={"ip_adapter": value})
    # a LoRA file next to an image_encoder folder is not an IP-Adapter
    fake = tmp_path / "fake"
    (fake / "image_encoder").mkdir(parents=True)
    (fake / "lora.safetensors").write_bytes((tiny_lora_dir / "pytorch_lora_weights.safetensors").read_bytes())
    with pytest.raises(ValidationError, match="holds no IP-Adapter weights"):
        engine.generate(prompt="x", model=model, plugin_options={"ip_adapter": f"{fake}={reference}"})
    # an SD 1.x adapter on an SDXL model: refused after loading, and the UNet is left as it was
    _, plain = run(engine, capture, tiny_sdxl_dir, tmp_path / "plain", num_inference_steps=2)
    with pytest.raises(ValidationError, match=r"`ip_adapter`: `--ip-adapter .*`: does not fit"):
        run(engine, capture, tiny_sdxl_dir, tmp_path / "out", num_inference_steps=2,
            plugin_options={"ip_adapter": f"{ip}={reference}"})
    assert not (tmp_path / "out").exists()
    _, after = run(engine, capture, tiny_sdxl_dir, tmp_path / "after", num_inference_steps=2)
    assert np.array_equal(after, plain)
    code, _, err = cli_run("generate", "x", "--model", model, "--ip-adapter", f"{ip}={reference}:big")
    assert code == 2 and "`--ip-adapter" in err and "scale 'big' is not a number" in err


# ------------------------------------------------------------------------------------- together


def test_all_conditioners_with_img2img_then_a_clean_run(tiny_sd_dir: Path, tiny_lora_dir: Path,
                                                        tiny_controlnet_dir: Path, tiny_ip_adapter_dir: Path,
                                                        tmp_path: Path, engine: Engine, capture: Capture,
                                                        provgen_home: Path) -> None:
    init, control = picture(tmp_path / "init.png", 5), picture(tmp_path / "control.png", 1)
    reference = picture(tmp_path / "reference.png", 4, (48, 48))
    _, plain = run(engine, capture, tiny_sd_dir, tmp_path / "plain")
    result, _ = run(engine, capture, tiny_sd_dir, tmp_path / "all", init_image=init, strength=0.75,
                    plugin_options={"lora": f"{tiny_lora_dir}:0.8",
                                    "controlnet": [f"{tiny_controlnet_dir}={control}:0.5"],
                                    "ip_adapter": f"{tiny_ip_adapter_dir}={reference}"})
    assert result.pipeline_class == "StableDiffusionControlNetImg2ImgPipeline"  # control image as control_image
    assert set(result.recipe["plugins_data"]) >= {"lora", "controlnet", "ip_adapter", "img2img"}
    found = report(result.images[0].path)
    assert sorted((i["title"], i["relationship"]) for i in found.ingredients) == [
        ("control.png", "inputTo"), ("init.png", "parentOf"), ("reference.png", "inputTo")]
    assert sorted(rows(provgen_home, "SELECT relation, role FROM lineage_edges "
                                     f"WHERE child_id = '{result.images[0].asset_id}'")) == [
        ("inputTo", "controlnet"), ("inputTo", "ip_adapter"), ("parentOf", "init_image")]
    _, after = run(engine, capture, tiny_sd_dir, tmp_path / "after")
    assert np.array_equal(after, plain)


def test_plugins_list_shows_the_conditioners() -> None:
    code, out, err = cli_run("plugins", "list", "--json")
    assert code == 0, err
    listed = {row["name"]: row["hooks"] for row in json.loads(out)}
    assert listed["lora"] == ["adapt_pipeline", "provenance_contribution", "register_conditioners",
                              "release_pipeline", "validate_request"]
    assert listed["controlnet"] == ["adapt_pipeline", "call_arguments", "provenance_contribution",
                                    "register_conditioners", "validate_request"]
    assert listed["ip_adapter"] == ["adapt_pipeline", "call_arguments", "provenance_contribution",
                                    "register_conditioners", "release_pipeline", "validate_request"]
