"""Tests for provgen-sepia, with the fixtures of ``provgen.testing`` (loaded by pytest; nothing to import).

Run them with the package installed next to provgen: ``pip install -e . && pytest``.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from provgen.core import Engine, ValidationError
from provgen.core.plugins import make_plugin_manager

import provgen_sepia


def test_sepia_tones_and_keeps_the_size() -> None:
    red = Image.new("RGB", (8, 6), (255, 0, 0))
    assert provgen_sepia.sepia(red, "0").getpixel((0, 0)) == (255, 0, 0)
    toned = provgen_sepia.sepia(red, "")
    r, g, b = toned.getpixel((0, 0))
    assert toned.size == (8, 6) and r > g > b
    half = provgen_sepia.sepia(red, "0.5").getpixel((0, 0))
    assert all(min(a, c) <= h <= max(a, c) for a, h, c in zip((255, 0, 0), half, (r, g, b), strict=True))


@pytest.mark.parametrize(("args", "message"), [("2", "from 0 to 1"), ("-0.1", "from 0 to 1"),
                                               ("nan", "from 0 to 1"), ("lots", "expected a strength")])
def test_bad_strength_is_refused_before_the_model_loads(args: str, message: str, provgen_env, tmp_path) -> None:
    assert provgen_sepia.parse_strength("") == 1.0 and provgen_sepia.parse_strength(" 0.25 ") == 0.25
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(provgen_sepia, name="sepia")
    engine = Engine(plugin_manager=pm, progress=False)
    with pytest.raises(ValidationError, match=rf"`--post sepia:{args}`: .*{message}"):
        engine.generate(prompt="x", model=str(tmp_path / "no-such-model"), postprocess=(f"sepia:{args}",))
    assert not (tmp_path / "out").exists()


def test_installed_plugin_conforms(provgen_conformance) -> None:
    """The installed plugin (entry point `sepia`): hooks match the specs, images verify, provenance recorded."""
    report = provgen_conformance("sepia", postprocess=("sepia:0.8",), num_images=2)
    assert report.plugin == "sepia"
    assert report.hooks == ("provenance_contribution", "register_postprocessors")
    expected = {"version": provgen_sepia.__version__, "strengths": [0.8],
                "tone": {"dark": provgen_sepia.DARK, "light": provgen_sepia.LIGHT}}
    assert report.result.recipe["plugins_data"]["sepia"] == expected
    assert report.result.recipe["postprocess"] == [
        {"name": "sepia", "args": "0.8", "plugin": "sepia", "version": provgen_sepia.__version__}]
    for image, manifest, verification in zip(report.result.images, report.manifest_recipes, report.reports,
                                             strict=True):
        assert manifest["plugins_data"]["sepia"] == expected  # signed
        assert verification.record["generation"]["recipe"]["plugins_data"]["sepia"] == expected  # registered
        r, g, b = np.asarray(image.open().convert("RGB"), dtype=np.float32).mean(axis=(0, 1))
        assert r > g > b  # toned


def test_requests_without_sepia_are_unaffected(provgen_conformance, provgen_registry, provgen_keys) -> None:
    report = provgen_conformance(provgen_sepia)  # the module, registered by hand under its PLUGIN_NAME
    assert "sepia" not in report.result.recipe["plugins_data"] and report.result.recipe["postprocess"] == []
    [image] = report.result.images
    assert provgen_registry.find_by_sha256(image.sha256).id == image.asset_id
    assert provgen_keys.ca_cert.is_file()  # the development root that signed it
