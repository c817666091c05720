"""End to end through the CLI: generate -> verify, and what happens to changed, stripped or foreign files."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from provgen.cli.main import cli

SIZE = ["--width", "256", "--height", "256", "--steps", "3"]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def count_rows(home: Path, table: str) -> int:
    db = home / "registry.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as connection:
        return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.fixture
def generated(tiny_sd_dir: Path, tmp_path: Path) -> dict:
    code, out, err = run("generate", "a lighthouse at dusk", "--model", str(tiny_sd_dir), *SIZE, "--seed", "7",
                         "--scheduler", "dpmpp_2m", "--out", str(tmp_path / "out"), "--json")
    assert code == 0, err
    return json.loads(out)


def test_generate_json_shape_and_files(generated: dict, provgen_home: Path, tmp_path: Path) -> None:
    assert generated["scheduler"] == "dpmpp_2m"
    assert generated["pipeline_class"] == "StableDiffusionPipeline"
    assert len(generated["model_hash"]) == 64
    [image] = generated["images"]
    for key in ("asset_id", "path", "sha256", "watermark_id", "seed"):
        assert key in image
    assert image["seed"] == 7
    path = Path(image["path"])
    assert path.parent == (tmp_path / "out").resolve() and path.suffix == ".png"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left behind
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == image["sha256"]
    assert (provgen_home / "keys" / "signer.key").stat().st_mode & 0o777 == 0o600
    assert count_rows(provgen_home, "assets") == 1 and count_rows(provgen_home, "generations") == 1


def test_verify_generated_image_is_verified(generated: dict) -> None:
    [image] = generated["images"]
    code, out, _ = run("verify", image["path"], "--json")
    assert code == 0
    [report] = json.loads(out)
    assert report["verdict"] == "verified"
    assert report["asset_id"] == image["asset_id"] and report["match"] == "manifest"
    assert report["c2pa"]["state"] == "Trusted" and report["c2pa"]["codes"] == []
    assert report["watermark"] == {**report["watermark"], "found": True, "id": image["watermark_id"]}
    assert report["sha256_match"] is True
    assert report["record"]["generation"]["scheduler"] == "dpmpp_2m"


def test_jpeg_resave_is_recovered_by_watermark(generated: dict, tmp_path: Path) -> None:
    [image] = generated["images"]
    copy = tmp_path / "resaved.jpg"
    Image.open(image["path"]).convert("RGB").save(copy, "JPEG", quality=90)
    code, out, _ = run("verify", str(copy), "--json")
    [report] = json.loads(out)
    assert code == 0, report
    assert report["verdict"] == "recovered"
    assert report["c2pa"]["state"] == "Missing"
    assert report["asset_id"] == image["asset_id"]
    assert report["match"] == "watermark"


def test_half_size_copy_is_recovered(generated: dict, tmp_path: Path) -> None:
    [image] = generated["images"]
    small = tmp_path / "small.png"
    Image.open(image["path"]).resize((128, 128), Image.LANCZOS).save(small)
    code, out, _ = run("verify", str(small), "--json")
    [report] = json.loads(out)
    assert code == 0 and report["verdict"] == "recovered" and report["asset_id"] == image["asset_id"]


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """[(type, whole chunk bytes)] of a PNG file."""
    chunks, position = [], 8
    while position < len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        chunks.append((data[position + 4:position + 8], data[position:position + 12 + length]))
        position += 12 + length
    return chunks


def test_changed_pixel_after_signing_is_tampered(generated: dict, tmp_path: Path) -> None:
    """Change one pixel, re-encode, and put the original C2PA chunk back: the hard binding catches it."""
    [image] = generated["images"]
    original = Path(image["path"]).read_bytes()
    [c2pa_chunk] = [chunk for kind, chunk in png_chunks(original) if kind == b"caBX"]
    pixels = Image.open(io.BytesIO(original)).convert("RGB")
    r, g, b = pixels.getpixel((10, 10))
    pixels.putpixel((10, 10), ((r + 40) % 256, g, b))
    buffer = io.BytesIO()
    pixels.save(buffer, "PNG")
    chunks = png_chunks(buffer.getvalue())
    forged = b"\x89PNG\r\n\x1a\n" + chunks[0][1] + c2pa_chunk + b"".join(chunk for _, chunk in chunks[1:])
    changed = tmp_path / "changed.png"
    changed.write_bytes(forged)
    code, out, _ = run("verify", str(changed), "--json")
    [report] = json.loads(out)
    assert code == 1
    assert report["verdict"] == "tampered"
    assert report["c2pa"]["state"] == "Invalid"
    assert "assertion.dataHash.mismatch" in report["c2pa"]["codes"]
    assert report["asset_id"] == image["asset_id"]  # the auditor still learns which asset it claims to be


def test_corrupted_pixel_data_with_manifest_is_tampered(generated: dict, tmp_path: Path) -> None:
    data = bytearray(Path(generated["images"][0]["path"]).read_bytes())
    data[data.index(b"IDAT") + 24] ^= 0x01  # breaks the compressed stream and the hash
    broken = tmp_path / "broken.png"
    broken.write_bytes(bytes(data))
    code, out, _ = run("verify", str(broken), "--json")
    [report] = json.loads(out)
    assert code == 1 and report["verdict"] == "tampered" and report["c2pa"]["state"] == "Invalid"


def test_unrelated_image_is_unknown(tmp_path: Path) -> None:
    other = tmp_path / "other.png"
    Image.effect_mandelbrot((256, 256), (-2, -1.25, 0.5, 1.25), 64).convert("RGB").save(other)
    code, out, _ = run("verify", str(other), "--json")
    [report] = json.loads(out)
    assert code == 1
    assert report["verdict"] == "unknown" and report["asset_id"] is None
    assert report["watermark"]["found"] is False and report["c2pa"]["state"] == "Missing"


def test_corrupt_file_gets_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    code, out, err = run("verify", str(bad), "--json")
    [report] = json.loads(out)
    assert code == 1
    assert report["verdict"] == "unknown" and "not a readable image" in report["error"]
    assert "Traceback" not in err and "bad.png" in err


def test_verify_missing_file_is_usage_error(tmp_path: Path) -> None:
    code, _, err = run("verify", str(tmp_path / "nope.png"))
    assert code == 2 and "does not exist" in err


def test_verify_mixed_files_exit_status(generated: dict, tmp_path: Path) -> None:
    other = tmp_path / "other.png"
    Image.new("RGB", (64, 64), "white").save(other)
    code, out, _ = run("verify", generated["images"][0]["path"], str(other), "--json")
    assert code == 1
    assert [r["verdict"] for r in json.loads(out)] == ["verified", "unknown"]


def test_registry_show(generated: dict) -> None:
    [image] = generated["images"]
    code, out, _ = run("registry", "show", image["asset_id"], "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["id"] == image["asset_id"]
    assert summary["sha256"] == image["sha256"]
    assert summary["generation"]["prompt"] == "a lighthouse at dusk"
    assert summary["generation"]["seed"] == 7
    code, _, err = run("registry", "show", "0" * 32)
    assert code != 0 and "0" * 32 in err and "Traceback" not in err


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_other_formats_verify(tiny_sd_dir: Path, tmp_path: Path, fmt: str) -> None:
    code, out, err = run("generate", "a cat", "--model", str(tiny_sd_dir), *SIZE, "--seed", "1", "--format", fmt,
                         "--out", str(tmp_path), "--json")
    assert code == 0, err
    [image] = json.loads(out)["images"]
    assert Path(image["path"]).suffix == f".{fmt}"
    assert Image.open(image["path"]).format == {"jpeg": "JPEG", "webp": "WEBP"}[fmt]
    code, out, _ = run("verify", image["path"], "--json")
    assert code == 0 and json.loads(out)[0]["verdict"] == "verified"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "/no/such/model"], "does not exist"),
        (["--width", "100"], "`width`: has to be divisible by 8"),
        (["--height", "0"], "`height`: must be a positive integer"),
        (["--steps", "0"], "`num_inference_steps`"),
        (["--scheduler", "nope"], "unknown scheduler 'nope'"),
        (["--seed", "-1"], "`seed`"),
    ],
)
def test_bad_input_clear_error_nothing_written(tiny_sd_dir: Path, tmp_path: Path, provgen_home: Path,
                                               args: list[str], message: str) -> None:
    base = ["generate", "x", "--model", str(tiny_sd_dir), *SIZE, "--out", str(tmp_path / "out")]
    code, out, err = run(*base, *args)
    assert code == 2, (out, err)
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert count_rows(provgen_home, "assets") == 0


def test_unknown_scheduler_lists_valid_names(tiny_sd_dir: Path, tmp_path: Path) -> None:
    code, _, err = run("generate", "x", "--model", str(tiny_sd_dir), *SIZE, "--scheduler", "nope",
                       "--out", str(tmp_path))
    assert code == 2
    for name in ("ddim", "euler", "euler_a", "dpmpp_2m", "unipc", "lcm", "EulerDiscreteScheduler"):
        assert name in err


def test_model_folder_without_model_index(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = run("generate", "x", "--model", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert code == 2 and "no model_index.json" in err


def test_uncached_hub_id_is_not_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, _, err = run("generate", "x", "--model", "someorg/some-model", "--out", str(tmp_path / "o"))
    assert code == 2 and "never downloads" in err


def test_keys_init_and_show(provgen_home: Path) -> None:
    code, out, _ = run("keys", "init", "--json")
    assert code == 0
    paths = json.loads(out)
    assert Path(paths["signer_key"]).stat().st_mode & 0o777 == 0o600
    code, _, err = run("keys", "init")
    assert code != 0 and "--force" in err
    code, out, _ = run("keys", "show", "--json")
    assert code == 0 and "not_after" in json.loads(out)


def test_io_bytes_roundtrip_of_signed_png(generated: dict) -> None:
    """The file provgen wrote is a plain PNG any decoder opens, at the requested size."""
    data = Path(generated["images"][0]["path"]).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (256, 256) and image.mode == "RGB"


def test_schedulers_list_cli(tiny_sd_dir: Path) -> None:
    code, out, _ = run("schedulers", "list", "--model", str(tiny_sd_dir), "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["dpmpp_2m"]["class"] == "DPMSolverMultistepScheduler"
    assert rows["dpmpp_2m"]["config"]["algorithm_type"] == "dpmsolver++"
    assert rows["euler_a"]["class"] == "EulerAncestralDiscreteScheduler" and rows["lcm"]["available"]
    code, out, _ = run("schedulers", "list", "--model", str(tiny_sd_dir))
    assert code == 0 and out.splitlines()[0].split()[0] == "ddim"


def test_organisation_certificate_via_cert_and_key(tiny_sd_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from provgen.provenance.keys import init_dev_keys

    org = init_dev_keys(tmp_path / "org", organization="Example Org")
    code, out, err = run("generate", "x", "--model", str(tiny_sd_dir), *SIZE, "--seed", "2", "--out",
                         str(tmp_path / "out"), "--cert", str(org.signer_chain), "--key", str(org.signer_key),
                         "--json")
    assert code == 0, err
    path = json.loads(out)["images"][0]["path"]
    code, out, _ = run("verify", path, "--json")
    [report] = json.loads(out)
    assert report["c2pa"]["state"] == "Valid" and "signingCredential.untrusted" in report["c2pa"]["codes"]
    assert report["verdict"] == "verified"  # Valid, and byte-identical to the registry's record
    monkeypatch.setenv("PROVGEN_TRUST_ANCHORS", str(org.ca_cert))
    code, out, _ = run("verify", path, "--json")
    assert code == 0 and json.loads(out)[0]["c2pa"]["state"] == "Trusted"


def test_cert_without_key_is_a_clear_error(tiny_sd_dir: Path, tmp_path: Path, provgen_home: Path) -> None:
    (tmp_path / "cert.pem").write_text("x")
    code, _, err = run("generate", "x", "--model", str(tiny_sd_dir), *SIZE, "--out", str(tmp_path / "out"),
                       "--cert", str(tmp_path / "cert.pem"))
    assert code == 2 and "`--key`" in err and "Traceback" not in err
    assert count_rows(provgen_home, "assets") == 0


def test_human_output_and_quiet(tiny_sd_dir: Path, tmp_path: Path) -> None:
    code, out, _ = run("generate", "x", "--model", str(tiny_sd_dir), *SIZE, "--seed", "5", "--out", str(tmp_path))
    assert code == 0 and "asset=" in out and "seed=5" in out
    code, out, _ = run("generate", "x", "--model", str(tiny_sd_dir), *SIZE, "--out", str(tmp_path), "--quiet")
    assert code == 0 and out == ""


def test_progress_bar_when_asked(tiny_sd_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from provgen.core import Engine

    Engine(progress=True).generate(prompt="p", model=str(tiny_sd_dir), output_dir=tmp_path, width=64, height=64,
                                   num_inference_steps=3, seed=1)
    assert "3/3" in capsys.readouterr().err
    Engine(progress=False).generate(prompt="p", model=str(tiny_sd_dir), output_dir=tmp_path, width=64, height=64,
                                    num_inference_steps=3, seed=1)
    assert "3/3" not in capsys.readouterr().err


def test_models_list_and_named_model(tiny_sd_dir: Path, tmp_path: Path) -> None:
    from provgen.core import hookimpl
    from provgen.core.models import model_content_hash
    from provgen.core.plugins import make_plugin_manager, reset_plugin_manager

    class Models:
        @hookimpl
        def register_models(self, register):  # type: ignore[no-untyped-def]
            register("tiny", tiny_sd_dir, description="tiny random SD")

    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(Models(), name="test-models")
    reset_plugin_manager(pm)
    code, out, _ = run("models", "list", "--json")
    assert code == 0
    [row] = [r for r in json.loads(out) if r["name"] == "tiny"]
    assert row["sha256"] == model_content_hash(tiny_sd_dir) and row["pipeline_class"] == "StableDiffusionPipeline"
    assert row["plugin"] == "test-models" and row["default"] is False
    code, out, err = run("generate", "x", "--model", "tiny", *SIZE, "--out", str(tmp_path), "--json")
    assert code == 0, err
    assert json.loads(out)["model_hash"] == row["sha256"]


def test_model_from_environment(tiny_sd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # without --model or PROVGEN_MODEL the shipped `shapes` model is used (tests/test_shapes_model.py)
    monkeypatch.setenv("PROVGEN_MODEL", str(tiny_sd_dir))
    code, out, err = run("generate", "x", *SIZE, "--out", str(tmp_path), "--json")
    assert code == 0, err
    assert json.loads(out)["model_id"] == str(tiny_sd_dir)
    code, out, err = run("generate", "x", "--model", "shapes", "--steps", "3", "--out", str(tmp_path), "--json")
    assert code == 0, err  # --model wins over PROVGEN_MODEL
    assert json.loads(out)["model_id"] == "shapes"
