"""The built-in feature plugins (provgen/plugins): post-processors, img2img/inpainting, the blocklist policy.

Real components throughout: tiny random diffusers models, the real c2pa reader, the SQLite registry.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageFilter

from provgen.cli.main import cli
from provgen.core import Engine, ValidationError
from provgen.core.errors import PolicyRefused
from provgen.core.plugins import make_plugin_manager
from provgen.plugins import blocklist, postprocess
from provgen.provenance.c2pa_io import TRAINED_ALGORITHMIC_MEDIA, read_credentials

KW = dict(width=128, height=128, num_inference_steps=4, seed=5)
COMPOSITE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"


@pytest.fixture
def engine() -> Engine:
    return Engine(plugin_manager=make_plugin_manager(load_entrypoints=False), progress=False)


def run(engine: Engine, model: Path, out: Path, **fields: object):  # type: ignore[no-untyped-def]
    return engine.generate(**{"prompt": "a test", "model": str(model), "output_dir": out, **KW, **fields})


def cli_run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def pixels(result, index: int = 0) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(result.images[index].open().convert("RGB"), dtype=np.float32)


def rows(home: Path, sql: str) -> list[tuple]:
    db = home / "registry.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as connection:
        return connection.execute(sql).fetchall()


def actions(path: Path) -> list[dict]:
    report = read_credentials(path.read_bytes(), "image/png")
    assert report.state in ("Trusted", "Valid"), report.codes
    return report.assertion("c2pa.actions")["actions"]


def verdict(path: Path) -> str:
    code, out, err = cli_run("verify", str(path), "--json")
    assert code == 0, err
    [report] = json.loads(out)
    return report["verdict"]


def mandelbrot(path: Path, size: tuple[int, int] = (128, 128), fmt: str = "PNG") -> Path:
    Image.effect_mandelbrot(size, (-2, -1.25, 0.5, 1.25), 32).convert("RGB").save(path, fmt)
    return path


def half_mask(path: Path, size: tuple[int, int] = (128, 128)) -> Path:
    """Black (keep) on the left half, white (repaint) on the right half."""
    mask = np.zeros((size[1], size[0]), np.uint8)
    mask[:, size[0] // 2:] = 255
    Image.fromarray(mask).save(path)
    return path


# ------------------------------------------------------------------------------------- post-processors


def test_postprocessors_change_pixels_and_are_signed_edits(tiny_sd_dir: Path, tmp_path: Path,
                                                           engine: Engine) -> None:
    plain = run(engine, tiny_sd_dir, tmp_path / "plain")
    base = plain.images[0].open().convert("RGB")

    resized = run(engine, tiny_sd_dir, tmp_path / "resize", postprocess=("resize:2x",))
    assert (resized.images[0].width, resized.images[0].height) == (256, 256)
    expected = np.asarray(base.resize((256, 256), Image.Resampling.LANCZOS), dtype=np.float32)
    assert np.abs(pixels(resized) - expected).mean() < 4  # equal up to the two (different) watermarks

    exact = run(engine, tiny_sd_dir, tmp_path / "exact", postprocess=("resize:96x64",))
    assert exact.images[0].open().size == (96, 64)
    assert run(engine, tiny_sd_dir, tmp_path / "up", postprocess=("upscale",)).images[0].open().size == (256, 256)

    sharpened = run(engine, tiny_sd_dir, tmp_path / "sharpen", postprocess=("sharpen:1.5",))
    expected = np.asarray(base.filter(ImageFilter.UnsharpMask(radius=2, percent=150, threshold=2)), np.float32)
    assert np.abs(pixels(sharpened) - expected).mean() < np.abs(pixels(sharpened) - pixels(plain)).mean() / 3

    grey = pixels(run(engine, tiny_sd_dir, tmp_path / "grey", postprocess=("color:saturation=0,contrast=1.05",)))
    assert grey.std(axis=2).mean() < 3 < pixels(plain).std(axis=2).mean()  # no colour left (but the watermark)

    chained = run(engine, tiny_sd_dir, tmp_path / "chain", postprocess=("resize:2x", "sharpen", "color:saturation=1.2"))
    assert chained.recipe["postprocess"] == [
        {"name": "resize", "args": "2x", "plugin": "postprocess", "version": None},
        {"name": "sharpen", "args": "", "plugin": "postprocess", "version": None},
        {"name": "color", "args": "saturation=1.2", "plugin": "postprocess", "version": None},
    ]
    found = actions(chained.images[0].path)
    assert [a["action"] for a in found] == ["c2pa.created", "c2pa.edited", "c2pa.edited", "c2pa.edited",
                                            "c2pa.watermarked"]
    edits = found[1:4]
    assert {a["softwareAgent"]["name"] for a in edits} == {"postprocess"}
    assert [a["parameters"] for a in edits] == [{"postprocessor": "resize", "args": "2x"},
                                                {"postprocessor": "sharpen", "args": ""},
                                                {"postprocessor": "color", "args": "saturation=1.2"}]
    assert verdict(chained.images[0].path) == "verified"


@pytest.mark.parametrize(("item", "message"), [
    ("resize:abc", "expected WIDTHxHEIGHT"),
    ("resize:0x64", "each side must be 1..8192"),
    ("resize:40x", "scale factor must be in \\(0, 16\\]"),
    ("upscale:0.5", "at least 1"),
    ("sharpen:lots", "expected an amount"),
    ("sharpen:9", "must be in \\(0, 5\\]"),
    ("color:", "expected e.g. color:saturation"),
    ("color:hue=2", "KEY=VALUE with KEY one of saturation, contrast, brightness"),
    ("color:contrast=x", "is not a number"),
    ("color:contrast=1,contrast=2", "given twice"),
])
def test_postprocessor_arguments_are_checked_before_the_model_loads(item: str, message: str,
                                                                    engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=rf"`postprocess`: `--post {item}`: .*{message}"):
        engine.generate(prompt="x", model=str(tmp_path / "no-such-model"), postprocess=(item,))


def test_post_option_end_to_end(tiny_sd_dir: Path, tmp_path: Path, provgen_home: Path) -> None:
    code, out, err = cli_run("generate", "a test", "--model", str(tiny_sd_dir), "-W", "128", "-H", "128",
                             "--steps", "2", "--post", "resize:64x64", "--post", "sharpen:0.5",
                             "--out", str(tmp_path / "out"), "--json")
    assert code == 0, err
    [image] = json.loads(out)["images"]
    assert Image.open(image["path"]).size == (64, 64)
    assert verdict(Path(image["path"])) == "verified"

    code, _, err = cli_run("generate", "a test", "--model", str(tiny_sd_dir), "--post", "resize:huge",
                           "--out", str(tmp_path / "bad"))
    assert code == 2 and "`--post resize:huge`" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists() and rows(provgen_home, "SELECT count(*) FROM assets") == [(1,)]


def test_postprocessor_parsers() -> None:
    assert postprocess.parse_resize("1024x768") == (1024, 768)
    assert postprocess.parse_resize("0.5x") == 0.5 and postprocess.parse_resize("2X") == 2.0
    assert postprocess.parse_upscale("") == 2.0 and postprocess.parse_upscale("1.5x") == 1.5
    assert postprocess.parse_sharpen("") == 1.0
    assert postprocess.parse_color("Saturation=1.1, contrast=1.05") == {"saturation": 1.1, "contrast": 1.05}


# ------------------------------------------------------------------------------------- img2img / inpainting


def test_img2img_from_a_provgen_image_links_its_parent(tiny_sd_dir: Path, tmp_path: Path, engine: Engine,
                                                       provgen_home: Path) -> None:
    source = run(engine, tiny_sd_dir, tmp_path / "source", seed=1).images[0]  # a provgen asset
    plain = run(engine, tiny_sd_dir, tmp_path / "plain")
    low = run(engine, tiny_sd_dir, tmp_path / "low", init_image=source.path, strength=0.3)
    high = run(engine, tiny_sd_dir, tmp_path / "high", init_image=source.path, strength=0.9)
    assert low.pipeline_class == "StableDiffusionImg2ImgPipeline"
    src = np.asarray(source.open().convert("RGB"), dtype=np.float32)
    assert np.abs(pixels(low) - pixels(plain)).mean() > 5 and np.abs(pixels(low) - pixels(high)).mean() > 5
    assert np.abs(pixels(low) - src).mean() < np.abs(pixels(high) - src).mean()  # low strength keeps more

    data = low.recipe["plugins_data"]["img2img"]
    assert data["mode"] == "img2img" and data["strength"] == 0.3
    assert data["init_image"]["sha256"] == source.sha256
    report = read_credentials(low.images[0].path.read_bytes(), "image/png")
    assert report.state in ("Trusted", "Valid"), report.codes
    assert [(i["title"], i["relationship"]) for i in report.ingredients] == [(source.path.name, "parentOf")]
    found = report.assertion("c2pa.actions")["actions"]
    assert [a["action"] for a in found] == ["c2pa.opened", "c2pa.edited", "c2pa.watermarked"]
    assert found[0]["parameters"]["ingredients"]  # the opened action points at the parent ingredient
    assert found[1]["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA and found[1]["softwareAgent"]["name"] == "img2img"
    # the parent is the existing asset, not a new external record
    child = low.images[0].asset_id
    edges = rows(provgen_home, f"SELECT parent_id, relation, role FROM lineage_edges WHERE child_id = '{child}'")
    assert edges == [(source.asset_id, "parentOf", "init_image")]
    assert rows(provgen_home, "SELECT count(*) FROM assets WHERE kind = 'external'") == [(0,)]
    assert verdict(low.images[0].path) == "verified"


def test_inpainting_keeps_the_unmasked_part(tiny_sd_dir: Path, tmp_path: Path, engine: Engine,
                                            provgen_home: Path) -> None:
    init, mask = mandelbrot(tmp_path / "init.png"), half_mask(tmp_path / "mask.png")
    first, second = (run(engine, tiny_sd_dir, tmp_path / f"in{seed}", seed=seed, init_image=init, mask=mask,
                         strength=1.0) for seed in (5, 6))
    assert first.pipeline_class == "StableDiffusionInpaintPipeline"
    a, b = pixels(first), pixels(second)
    # the kept (left) part comes from the init image's latents whatever the seed; the repainted part does not
    assert np.abs(a[:, :32] - b[:, :32]).mean() < 8 < 20 < np.abs(a[:, 96:] - b[:, 96:]).mean()
    plain = pixels(run(engine, tiny_sd_dir, tmp_path / "plain"))
    whole = pixels(run(engine, tiny_sd_dir, tmp_path / "i2i", init_image=init, strength=1.0))
    assert np.abs(a - plain).mean() > 5 and np.abs(a - whole).mean() > 5

    report = read_credentials(first.images[0].path.read_bytes(), "image/png")
    assert report.state in ("Trusted", "Valid"), report.codes
    assert [(i["title"], i["relationship"]) for i in report.ingredients] == [("init.png", "parentOf"),
                                                                             ("mask.png", "inputTo")]
    found = report.assertion("c2pa.actions")["actions"]
    assert [a["action"] for a in found] == ["c2pa.opened", "c2pa.edited", "c2pa.watermarked"]
    assert found[1]["digitalSourceType"] == COMPOSITE and len(found[1]["parameters"]["ingredients"]) == 1
    edges = rows(provgen_home, "SELECT a.kind, a.path, e.relation, e.role FROM lineage_edges e "
                               f"JOIN assets a ON a.id = e.parent_id WHERE e.child_id = '{first.images[0].asset_id}' "
                               "ORDER BY e.role")
    assert edges == [("external", str(init.resolve()), "parentOf", "init_image"),
                     ("external", str(mask.resolve()), "inputTo", "mask")]
    import hashlib

    assert first.recipe["plugins_data"]["img2img"]["mask"]["sha256"] == hashlib.sha256(mask.read_bytes()).hexdigest()
    assert verdict(first.images[0].path) == "verified"


def test_img2img_on_sdxl(tiny_sdxl_dir: Path, tmp_path: Path, engine: Engine) -> None:
    init = mandelbrot(tmp_path / "init.png")
    result = run(engine, tiny_sdxl_dir, tmp_path / "out", init_image=init, strength=0.5, num_inference_steps=2)
    assert result.pipeline_class == "StableDiffusionXLImg2ImgPipeline"
    assert [a["action"] for a in actions(result.images[0].path)][:2] == ["c2pa.opened", "c2pa.edited"]


def test_img2img_size_comes_from_the_init_image_unless_given(tiny_sd_dir: Path, tmp_path: Path,
                                                             engine: Engine) -> None:
    init = mandelbrot(tmp_path / "wide.jpg", (96, 64), "JPEG")
    fields = {**KW, "width": None, "height": None}
    result = engine.generate(prompt="x", model=str(tiny_sd_dir), output_dir=tmp_path / "a", init_image=init, **fields)
    assert result.images[0].open().size == (96, 64) and result.recipe["width"] == 96
    result = run(engine, tiny_sd_dir, tmp_path / "b", init_image=init, width=64, height=64)
    assert result.images[0].open().size == (64, 64)


def test_img2img_inputs_are_checked_up_front(tmp_path: Path, engine: Engine, provgen_home: Path) -> None:
    init = mandelbrot(tmp_path / "init.png")
    odd = mandelbrot(tmp_path / "odd.png", (100, 64))
    (tmp_path / "notes.png").write_text("not an image")
    mandelbrot(tmp_path / "init.bmp", fmt="BMP")
    small_mask = half_mask(tmp_path / "small.png", (64, 64))
    model = str(tmp_path / "no-such-model")  # every check happens before the model would load
    cases = [
        (dict(strength=0.5), "`strength`: only applies to img2img"),
        (dict(mask=small_mask), "`mask`: inpainting needs the image"),
        (dict(init_image=tmp_path / "missing.png"), "`init_image`: .*does not exist"),
        (dict(init_image=init, strength=0), r"`strength`: must be a number in \(0, 1\]"),
        (dict(init_image=init, strength=1.5), r"`strength`: must be a number in \(0, 1\]"),
        (dict(init_image=tmp_path / "notes.png"), "`init_image`: .*not an image Pillow can read"),
        (dict(init_image=tmp_path / "init.bmp"), "`init_image`: .*is a BMP image; use PNG, JPEG or WebP"),
        (dict(init_image=init, mask=small_mask), "`mask`: is 64x64 but the init image is 128x128"),
        (dict(init_image=odd, width=None), "`init_image`: is 100x64: the output takes its width from it"),
        (dict(init_image=init, strength=0.2, num_inference_steps=4), "`strength`: 0.2 with 4 steps leaves no"),
    ]
    for fields, message in cases:
        with pytest.raises(ValidationError, match=message):
            engine.generate(**{"prompt": "x", "model": model, **KW, "output_dir": tmp_path / "out", **fields})
    assert not (tmp_path / "out").exists() and rows(provgen_home, "SELECT count(*) FROM assets") in ([], [(0,)])
    code, _, err = cli_run("generate", "x", "--model", model, "--mask", str(small_mask))
    assert code == 2 and "`mask`" in err


# ------------------------------------------------------------------------------------- policy: blocklist


def test_blocklist_refusal_is_recorded_and_nothing_else(tiny_sd_dir: Path, tmp_path: Path, provgen_home: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVGEN_BLOCKLIST", "forbidden, red  panda")
    out = tmp_path / "out"
    code, stdout, err = cli_run("generate", "a FORBIDDEN thing", "--model", str(tiny_sd_dir), "-W", "128", "-H",
                                "128", "--steps", "2", "--out", str(out), "--user", "mallory")
    assert code == 3 and stdout == ""
    assert "refused by policy plugin `blocklist`: the prompt contains blocked term(s): forbidden" in err
    assert "Traceback" not in err and not out.exists()
    assert rows(provgen_home, "SELECT count(*) FROM generations") == [(0,)]
    assert rows(provgen_home, "SELECT count(*) FROM assets") == [(0,)]
    [(refusal_id, plugin, reason, prompt, request, requester)] = rows(
        provgen_home, "SELECT id, plugin, reason, prompt, request, requester FROM refusals")
    assert (plugin, prompt, requester) == ("blocklist", "a FORBIDDEN thing", "mallory")
    assert "forbidden" in reason and refusal_id in err
    assert json.loads(request)["num_inference_steps"] == 2 and json.loads(request)["output_dir"] == str(out)
    assert rows(provgen_home, "SELECT record_type, record_id FROM audit_log") == [("refusal", refusal_id)]
    code, stdout, err = cli_run("registry", "verify", "--json")
    assert code == 0 and json.loads(stdout)["ok"], stdout + err

    code, _, err = cli_run("generate", "a red panda", "--model", str(tiny_sd_dir), "--out", str(out))
    assert code == 3 and "red panda" in err  # phrases match across runs of spaces
    code, _, err = cli_run("generate", "a redpanda, unforbidden", "--model", str(tiny_sd_dir), "-W", "128", "-H",
                           "128", "--steps", "2", "--out", str(out))
    assert code == 0, err  # whole words only
    assert rows(provgen_home, "SELECT count(*) FROM refusals") == [(2,)]
    code, stdout, _ = cli_run("registry", "verify", "--json")
    assert code == 0 and json.loads(stdout)["ok"]


def test_blocklist_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: Engine) -> None:
    terms = tmp_path / "blocklist.txt"
    terms.write_text("# one entry per line\nSpider\nbad word, other  # trailing comment\n\n")
    assert blocklist.blocked_terms(str(terms)) == ["spider", "bad word", "other"]
    assert blocklist.find_blocked("A spider's web", ["spider"]) == ["spider"]
    assert blocklist.find_blocked("spiders", ["spider"]) == []
    monkeypatch.setenv("PROVGEN_BLOCKLIST", str(terms))
    with pytest.raises(PolicyRefused) as info:
        engine.generate(prompt="a bad   word", model=str(tmp_path / "no-model"))
    assert info.value.plugin == "blocklist" and info.value.refusal_id and info.value.exit_code == 3
    monkeypatch.setenv("PROVGEN_BLOCKLIST", str(tmp_path / "missing.txt"))
    with pytest.raises(ValidationError, match="`PROVGEN_BLOCKLIST`: .* looks like a file path"):
        engine.generate(prompt="anything", model=str(tmp_path / "no-model"))
    monkeypatch.setenv("PROVGEN_BLOCKLIST", "")
    assert blocklist.blocked_terms("") == []


# ------------------------------------------------------------------------------------- plugins list


def test_plugins_list_shows_the_builtins() -> None:
    code, out, err = cli_run("plugins", "list", "--json")
    assert code == 0, err
    listed = {row["name"]: row for row in json.loads(out)}
    assert listed["postprocess"]["hooks"] == ["register_postprocessors"]
    assert listed["img2img"]["hooks"] == ["adapt_pipeline", "call_arguments", "provenance_contribution",
                                          "validate_request"]
    assert listed["blocklist"]["hooks"] == ["check_policy"]
    assert all(row["enabled"] and row["builtin"] and row["distribution"] == "provgen"
               for name, row in listed.items() if name in ("postprocess", "img2img", "blocklist"))
    code, out, _ = cli_run("plugins", "list")
    assert code == 0 and "blocklist 0.1.0 (provgen, builtin): check_policy" in out
