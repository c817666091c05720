"""An input image that already carries a C2PA manifest keeps it as its ingredient's manifest (issue 3 §2):
img2img from a provgen output, through the CLI, read back with the real c2pa Reader."""

from __future__ import annotations

import io
import json
from pathlib import Path

import c2pa
from click.testing import CliRunner

from provgen.cli.main import cli

SIZE = ["--width", "64", "--height", "64", "--steps", "4"]


def run(*args: str) -> dict:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_a_signed_input_keeps_its_manifest_and_validation_results(tmp_path: Path, provgen_home: Path) -> None:
    [first] = run("generate", "a red circle on a blue background", *SIZE, "--out", str(tmp_path / "a"))["images"]
    [second] = run("generate", "a red circle on a green background", *SIZE, "--init-image", first["path"],
                   "--strength", "0.5", "--out", str(tmp_path / "b"))["images"]
    anchors = (provgen_home / "keys" / "ca.pem").read_text()
    context = c2pa.Context.from_dict({"verify": {"remote_manifest_fetch": False}, "trust": {"user_anchors": anchors}})
    with c2pa.Reader("image/png", io.BytesIO(Path(first["path"]).read_bytes()), None, context) as reader:
        first_label = json.loads(reader.json())["active_manifest"]
    with c2pa.Reader("image/png", io.BytesIO(Path(second["path"]).read_bytes()), None, context) as reader:
        store = json.loads(reader.json())
    assert store["validation_state"] == "Trusted"
    assert first_label in store["manifests"]  # the input's own manifest travels inside the new store
    [parent] = [i for i in store["manifests"][store["active_manifest"]]["ingredients"]
                if i["relationship"] == "parentOf"]
    assert parent["active_manifest"] == first_label
    results = parent["validation_results"]["activeManifest"]
    assert results["failure"] == [] and any(s["code"] == "claimSignature.validated" for s in results["success"])
    actions = next(a for a in store["manifests"][store["active_manifest"]]["assertions"]
                   if a["label"].startswith("c2pa.actions"))["data"]["actions"]
    assert actions[0]["action"] == "c2pa.opened"
