"""`provgen verify --reattach`: a stripped copy gets a new signed manifest whose parent ingredient carries the
registry's original manifest (real generation with the shipped model, real c2pa signing and reading)."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import c2pa
import pytest
from click.testing import CliRunner
from PIL import Image

from provgen.cli.main import cli

SIZE = ["--width", "64", "--height", "64", "--steps", "2"]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def generated(tmp_path: Path) -> dict:
    code, out, err = run("generate", "a red circle on a blue background", *SIZE, "--out", str(tmp_path / "out"),
                         "--json")
    assert code == 0, err
    return json.loads(out)["images"][0]


def read_store(path: Path, anchors: bytes) -> dict:
    context = c2pa.Context.from_dict(
        {"verify": {"remote_manifest_fetch": False}, "trust": {"user_anchors": anchors.decode()}}
    )
    with c2pa.Reader("image/png", io.BytesIO(path.read_bytes()), None, context) as reader:
        return json.loads(reader.json())


def test_a_stripped_copy_gets_the_original_manifest_back(generated: dict, tmp_path: Path, provgen_home: Path):
    stripped = tmp_path / "stripped.png"
    Image.open(generated["path"]).save(stripped, "PNG")  # pixels kept, metadata (the manifest) gone
    target = tmp_path / "restored.png"
    code, out, err = run("verify", str(stripped), "--reattach", str(target), "--json")
    assert code == 0, err
    [report] = json.loads(out)
    assert report["verdict"] == "recovered" and report["c2pa"]["state"] == "Missing"
    assert report["asset_id"] == generated["asset_id"]
    assert report["reattached"]["path"] == str(target) and target.is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".provgen-")) == []

    with sqlite3.connect(provgen_home / "registry.db") as db:
        label = db.execute("SELECT manifest_label FROM assets WHERE id = ?", (generated["asset_id"],)).fetchone()[0]
        stored = json.loads(db.execute("SELECT report FROM verifications").fetchone()[0])
    assert stored["reattached"]["sha256"] == report["reattached"]["sha256"]

    store = read_store(target, (provgen_home / "keys" / "ca.pem").read_bytes())
    assert store["validation_state"] == "Trusted"
    assert label in store["manifests"] and store["active_manifest"] != label  # the original rides along
    active = store["manifests"][store["active_manifest"]]
    [ingredient] = active["ingredients"]
    assert ingredient["relationship"] == "parentOf" and ingredient["active_manifest"] == label
    failures = [f["code"] for f in ingredient["validation_results"]["activeManifest"]["failure"]]
    assert failures and set(failures) == {"assertion.dataHash.mismatch"}  # the bytes changed: said, not hidden
    evidence = next(a["data"] for a in active["assertions"] if a["label"] == "io.provgen.reattachment")
    assert evidence["asset_id"] == generated["asset_id"] and evidence["found_by"] == report["match"]
    assert Image.open(target).tobytes() == Image.open(stripped).tobytes()  # same pixels

    code, out, _ = run("verify", str(target), "--json", "--no-record")
    [again] = json.loads(out)
    assert code == 0 and again["asset_id"] == generated["asset_id"] and again["c2pa"]["state"] == "Trusted"


def test_reattach_refuses_what_it_cannot_do(generated: dict, tmp_path: Path) -> None:
    target = tmp_path / "restored.png"
    code, _, err = run("verify", generated["path"], "--reattach", str(target))
    assert code == 2 and "still carries its valid manifest" in err and not target.exists()

    foreign = tmp_path / "foreign.png"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(foreign)
    code, _, err = run("verify", str(foreign), "--reattach", str(target))
    assert code == 2 and "no registry record" in err and not target.exists()

    code, _, err = run("verify", str(foreign), generated["path"], "--reattach", str(target))
    assert code == 2 and "exactly one FILE" in err
    target.write_bytes(b"keep me")
    code, _, err = run("verify", generated["path"], "--reattach", str(target))
    assert code == 2 and "already exists" in err and target.read_bytes() == b"keep me"
    assert "Traceback" not in err
