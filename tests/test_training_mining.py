"""The cawg.training-mining assertion: configured by PROVGEN_TRAINING_MINING, signed into every manifest, read
back with the real c2pa Reader; a bad setting fails before anything is generated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from provgen.cli.main import cli
from provgen.core.errors import ValidationError
from provgen.provenance.c2pa_io import read_credentials
from provgen.provenance.training_mining import USES, parse

SIZE = ["--width", "64", "--height", "64", "--steps", "2"]


def test_parse() -> None:
    assert parse(None) == {"entries": {f"cawg.{use}": {"use": "notAllowed"} for use in USES}}
    assert parse("Allowed")["entries"]["cawg.data_mining"] == {"use": "allowed"}
    mixed = parse("ai_inference=allowed, cawg.data_mining=constrained")["entries"]
    assert mixed["cawg.ai_inference"] == {"use": "allowed"} and mixed["cawg.data_mining"] == {"use": "constrained"}
    assert mixed["cawg.ai_training"] == {"use": "notAllowed"}
    assert parse("off") is None
    for bad in ("maybe", "ai_dreaming=allowed", "ai_training=yes"):
        with pytest.raises(ValidationError, match="PROVGEN_TRAINING_MINING"):
            parse(bad)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [(None, "notAllowed"), ("ai_inference=allowed", "allowed"), ("off", None)],
)
def test_the_assertion_is_signed_into_the_manifest(
    tmp_path: Path, provgen_home: Path, setting: str | None, expected: str | None
) -> None:
    env = {"PROVGEN_TRAINING_MINING": setting} if setting else {}
    result = CliRunner().invoke(cli, ["generate", "a red circle", *SIZE, "--out", str(tmp_path), "--json"], env=env)
    assert result.exit_code == 0, result.stderr
    [image] = json.loads(result.stdout)["images"]
    anchors = (provgen_home / "keys" / "ca.pem").read_bytes()
    report = read_credentials(Path(image["path"]).read_bytes(), "image/png", trust_anchors_pem=anchors)
    assert report.state == "Trusted" and not report.codes
    assertion = report.assertion("cawg.training-mining")
    if expected is None:
        assert assertion is None
    else:
        assert assertion["entries"]["cawg.ai_inference"] == {"use": expected}
        assert assertion["entries"]["cawg.ai_training"] == {"use": "notAllowed"}


def test_a_bad_setting_fails_before_generating(tmp_path: Path, provgen_home: Path) -> None:
    result = CliRunner().invoke(cli, ["generate", "a red circle", *SIZE, "--out", str(tmp_path / "out")],
                                env={"PROVGEN_TRAINING_MINING": "perhaps"})
    assert result.exit_code != 0 and "PROVGEN_TRAINING_MINING" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() and not (provgen_home / "registry.db").exists()
