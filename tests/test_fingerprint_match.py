"""Fingerprint recovery: pHash candidates from the band index, confirmed by the dHash (SQLite and PostgreSQL),
and through verify on a real generated image whose watermark is not read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from provgen.cli.main import cli
from provgen.core.errors import ValidationError
from provgen.provenance.registry import Fingerprint, Registry, open_registry
from tests.factories import fake_generation

RULE = dict(max_phash=14, max_dhash=13, max_phash_alone=7)
TARGET_P, TARGET_D = "0123456789abcdef", "fedcba9876543210"


def flip(hex_hash: str, bits: int) -> str:
    """``hex_hash`` with its lowest ``bits`` bits flipped: exactly ``bits`` away."""
    return f"{int(hex_hash, 16) ^ ((1 << bits) - 1):016x}"


@pytest.fixture
def registry(db_url: str) -> Iterator[Registry]:
    with open_registry(db_url) as reg:
        yield reg


def add(registry: Registry, phash: str, dhash: str | None, *, age: int = 0) -> str:
    generation = fake_generation(1, asset_fields=[{"phash": phash}])
    generation.assets[0].created_at = datetime.now(UTC) - timedelta(minutes=age)
    with registry.transaction() as session:
        session.add(generation)
        if dhash is not None:
            session.add(Fingerprint(asset_id=generation.assets[0].id, kind="dhash", value=dhash))
    return generation.assets[0].id


def test_a_dhash_confirms_a_farther_phash_and_rejects_a_lookalike(registry: Registry) -> None:
    confirmed = add(registry, flip(TARGET_P, 12), flip(TARGET_D, 10))
    add(registry, flip(TARGET_P, 11), flip(TARGET_D, 20))  # closer pHash, but the dHash says: another image
    match = registry.match_fingerprint(TARGET_P, TARGET_D, **RULE)
    assert match is not None and match.asset.id == confirmed
    assert (match.phash_distance, match.dhash_distance) == (12, 10) and match.record_dhash == flip(TARGET_D, 10)
    assert match.asset.generation is not None  # loaded like the other finders
    # without a dHash to compare, only the pHash-alone radius applies: neither is within 7
    assert registry.match_fingerprint(TARGET_P, None, **RULE) is None


def test_records_without_a_dhash_match_on_the_phash_alone(registry: Registry) -> None:
    old = add(registry, flip(TARGET_P, 7), None)
    match = registry.match_fingerprint(TARGET_P, TARGET_D, **RULE)
    assert match is not None and match.asset.id == old and match.dhash_distance is None
    assert registry.match_fingerprint(flip(TARGET_P, 1), TARGET_D, **{**RULE, "max_phash_alone": 5}) is None


def test_closest_wins_then_dhash_then_newest(registry: Registry) -> None:
    add(registry, flip(TARGET_P, 5), flip(TARGET_D, 6), age=10)
    better_dhash = add(registry, flip(TARGET_P, 5), flip(TARGET_D, 2), age=20)
    assert registry.match_fingerprint(TARGET_P, TARGET_D, **RULE).asset.id == better_dhash
    newer = add(registry, flip(TARGET_P, 5), flip(TARGET_D, 2), age=1)
    assert registry.match_fingerprint(TARGET_P, TARGET_D, **RULE).asset.id == newer
    closest = add(registry, flip(TARGET_P, 3), flip(TARGET_D, 12), age=30)
    assert registry.match_fingerprint(TARGET_P, TARGET_D, **RULE).asset.id == closest


def test_bad_arguments(registry: Registry) -> None:
    with pytest.raises(ValidationError, match="phash"):
        registry.match_fingerprint("xyz", TARGET_D, **RULE)
    with pytest.raises(ValidationError, match="dhash"):
        registry.match_fingerprint(TARGET_P, "12", **RULE)
    with pytest.raises(ValidationError, match="max_dhash"):
        registry.match_fingerprint(TARGET_P, TARGET_D, **{**RULE, "max_dhash": 65})
    with pytest.raises(ValidationError, match="fingerprint.kind"):
        Fingerprint(asset_id="0" * 32, kind="ahash", value=TARGET_D)


def test_generated_images_carry_a_dhash_and_verify_reports_both_distances(tmp_path: Path, provgen_home: Path):
    from provgen.core.plugins import get_plugin_manager  # noqa: F401 - the CLI run below sets it up
    from provgen.provenance.verify import verify_file

    result = CliRunner().invoke(cli, ["generate", "a red circle on a blue background", "--width", "64", "--height",
                                      "64", "--steps", "2", "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.stderr
    [image] = json.loads(result.stdout)["images"]
    copy = tmp_path / "copy.jpg"
    Image.open(image["path"]).convert("RGB").save(copy, "JPEG", quality=80)  # manifest gone, new bytes
    with open_registry(f"sqlite:///{provgen_home / 'registry.db'}") as registry:
        report = verify_file(copy, registry=registry, methods=[], trust_anchors_pem=b"", max_distance=7)
    assert report.match == "fingerprint" and report.asset_id == image["asset_id"]  # no watermark methods given
    fingerprint = report.fingerprint
    assert len(fingerprint["dhash"]) == 16 and len(fingerprint["record_dhash"]) == 16
    assert 0 <= fingerprint["distance"] <= 14 and 0 <= fingerprint["dhash_distance"] <= 13


def test_fingerprints_equal_the_separate_hashes() -> None:
    from skimage import data

    from provgen.provenance.fingerprint import dhash, fingerprints, phash

    for array in (data.astronaut(), data.coffee(), data.camera()):
        image = Image.fromarray(array).convert("RGB")
        assert fingerprints(image) == (phash(image), dhash(image))


@pytest.mark.parametrize("min_pixels", [1, 2**62])
def test_fingerprints_on_two_threads_are_imagehash_values(min_pixels: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large images hash on two threads (pHash and dHash at once): the values stay imagehash's, so stored hashes
    stay comparable. min_pixels=1 puts every image on two threads, 2**62 none."""
    import imagehash
    import numpy as np

    from provgen.provenance import _parallel
    from provgen.provenance.fingerprint import fingerprints

    monkeypatch.setattr(_parallel, "MIN_PIXELS", min_pixels)
    rng = np.random.default_rng(3)
    for size in ((1024, 1024), (777, 300), (64, 64)):
        base = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize(size, Image.Resampling.BICUBIC)
        gray = image.convert("L")
        assert fingerprints(image) == (str(imagehash.phash(gray)), str(imagehash.dhash(gray)))
