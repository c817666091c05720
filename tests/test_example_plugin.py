"""The kit for plugin authors: the example package (examples/provgen-example-plugin, distribution
``provgen-sepia``) installed for real and seen through the CLI, its own tests (which use ``provgen.testing``)
run, and ``provgen.testing``'s conformance check refusing broken plugins.

The example is built and installed without network (``--no-index``; ``--no-build-isolation`` uses this venv's
setuptools) into a private folder, never into the venv: only the subprocesses that get that folder on
``PYTHONPATH`` see its entry point, so the venv, other tests and other runs sharing it are unaffected.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import provgen.testing
from provgen.core import hookimpl
from provgen.provenance.c2pa_io import GENERATION_ASSERTION, read_credentials

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "provgen-example-plugin"
PROVGEN = str(Path(sys.executable).with_name("provgen"))
SEPIA_DATA = {"version": "0.1.0", "strengths": [0.8], "tone": {"dark": "#2e1d0e", "light": "#fff4e0"}}
#: a process running in the background, and the file its output goes to
Background = tuple[subprocess.Popen[bytes], Path]


@pytest.fixture(scope="module")
def sepia_site(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A folder holding the installed provgen-sepia (built from a copy: the source tree gets no build files)."""
    tmp = tmp_path_factory.mktemp("provgen-sepia")
    source = shutil.copytree(EXAMPLE, tmp / "source",
                             ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    site = tmp / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--no-index", "--disable-pip-version-check", "--target", str(site), str(source)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert pip.returncode == 0, pip.stderr
    return str(site)


@pytest.fixture(scope="module")
def example_tests(sepia_site: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    """The example package's own test run, as its author starts it (pytest in the package folder), started
    in the background so that it runs while the CLI tests do: ``(process, log file)``."""
    log = tmp_path_factory.mktemp("example-tests") / "pytest.log"
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider"],
                                   cwd=EXAMPLE, env=environment(sepia_site), stdout=output, stderr=subprocess.STDOUT)
    yield process, log
    if process.poll() is None:  # the test that waits for it did not run
        process.kill()
        process.wait()


def environment(site: str, **env: str) -> dict[str, str]:
    pythonpath = os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": pythonpath, "PYTHONDONTWRITEBYTECODE": "1", **env}


def run(site: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=environment(site, **env), cwd=ROOT, timeout=180,
                          check=False)


def plugin_list(site: str, **env: str) -> list[dict]:
    listed = run(site, PROVGEN, "plugins", "list", "--json", **env)
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


# ----------------------------------------------------------------------------- the installed example


def test_plugins_list_shows_the_installed_plugin(sepia_site: str, example_tests: Background) -> None:
    # example_tests: started here, the first test, so that it runs alongside the CLI tests
    assert [info for info in plugin_list(sepia_site) if info["name"] == "sepia"] == [{
        "name": "sepia", "version": "0.1.0", "distribution": "provgen-sepia", "builtin": False, "enabled": True,
        "hooks": ["provenance_contribution", "register_postprocessors"],
    }]


def test_generate_with_the_plugin_is_recorded_signed_and_verifies(sepia_site: str, tiny_sd_dir: Path,
                                                                  tmp_path: Path) -> None:
    generated = run(sepia_site, PROVGEN, "generate", "a lighthouse at dusk", "--model", str(tiny_sd_dir),
                    "-W", "128", "-H", "128", "--steps", "2", "--seed", "3", "--post", "sepia:0.8",
                    "--out", str(tmp_path / "out"), "--json")
    assert generated.returncode == 0, generated.stderr
    [image] = json.loads(generated.stdout)["images"]
    path = Path(image["path"])

    credentials = read_credentials(path.read_bytes(), "image/png")
    assert credentials.state in ("Trusted", "Valid"), credentials.codes
    recipe = credentials.assertion(GENERATION_ASSERTION)
    assert recipe["plugins_data"]["sepia"] == SEPIA_DATA
    assert {"name": "sepia", "version": "0.1.0"} in recipe["plugins"]
    edits = [action for action in credentials.assertion("c2pa.actions")["actions"]
             if action["action"] == "c2pa.edited"]
    assert [(edit["softwareAgent"], edit["parameters"]) for edit in edits] == [
        ({"name": "sepia", "version": "0.1.0"}, {"postprocessor": "sepia", "args": "0.8"})]

    verified = run(sepia_site, PROVGEN, "verify", str(path), "--json")
    assert verified.returncode == 0, verified.stderr
    [report] = json.loads(verified.stdout)
    assert report["verdict"] == "verified" and report["watermark"]["found"]
    assert report["record"]["generation"]["recipe"]["plugins_data"]["sepia"] == SEPIA_DATA


def test_disabling_autoload_hides_the_plugin(sepia_site: str, tmp_path: Path) -> None:
    listed = [info for info in plugin_list(sepia_site, PROVGEN_DISABLE_PLUGIN_AUTOLOAD="1") if info["name"] == "sepia"]
    assert [(info["enabled"], info["hooks"]) for info in listed] == [(False, [])]  # installed, not loaded
    # refused before the model is even looked up
    refused = run(sepia_site, PROVGEN, "generate", "x", "--model", str(tmp_path / "no-model"), "--post", "sepia",
                  "--out", str(tmp_path / "out"), PROVGEN_DISABLE_PLUGIN_AUTOLOAD="1")
    assert refused.returncode == 2, refused.stderr
    assert "`--post sepia`: unknown post-processor 'sepia'; available: " in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "out").exists()


def test_the_example_package_tests_pass(example_tests: Background, request: pytest.FixtureRequest) -> None:
    """Its own tests (they use provgen.testing's fixtures and conformance check) pass."""
    assert request.config.pluginmanager.get_plugin("provgen") is provgen.testing, (
        "provgen's pytest11 entry point is not installed; reinstall provgen (`pip install -e .`)")
    process, log = example_tests
    returncode = process.wait(timeout=180)
    output = log.read_text(errors="replace")
    assert returncode == 0, output[-6000:]
    assert re.search(r"\b\d+ passed\b", output) and "skipped" not in output


# ------------------------------------------------------------------ provgen.testing in this session


def test_provgen_testing_is_loaded_through_its_entry_point(request: pytest.FixtureRequest) -> None:
    assert request.config.pluginmanager.get_plugin("provgen") is provgen.testing
    # conftest.py's autouse `provgen_home` is not shadowed: the plugin's fixtures are all prefixed otherwise
    names = {name for name in dir(provgen.testing) if name.startswith("provgen_")}
    assert names == {"provgen_tiny_sd", "provgen_env", "provgen_registry", "provgen_keys", "provgen_conformance"}


class Misspelt:
    @hookimpl
    def register_postprocesors(self, register):  # type: ignore[no-untyped-def]
        pass


class ExtraArgument:
    @hookimpl
    def register_postprocessors(self, register, bogus):  # type: ignore[no-untyped-def]
        pass


class WrapsAPerPluginHook:
    @hookimpl(wrapper=True)
    def provenance_contribution(self, context):  # type: ignore[no-untyped-def]
        return (yield)


class Unmarked:
    def register_postprocessors(self, register):  # type: ignore[no-untyped-def]
        pass


@pytest.mark.parametrize(("plugin", "message"), [
    (Misspelt(), r"`misspelt` does not match .*unknown hook 'register_postprocesors'"),
    (ExtraArgument(), r"(?s)`extraargument` does not match .*Argument\(s\) \{'bogus'\} are declared in the hookimpl"),
    (WrapsAPerPluginHook(), r"`provenance_contribution` is called plugin by plugin and cannot be wrapped"),
    (Unmarked(), r"`unmarked` implements no provgen hook"),
    ("no-such-plugin", r"no installed provgen plugin named `no-such-plugin`"),
], ids=["misspelt-hook", "extra-argument", "wrapper", "no-hooks", "not-installed"])
def test_conformance_check_names_what_does_not_conform(plugin: object, message: str, provgen_conformance) -> None:  # type: ignore[no-untyped-def]
    name = type(plugin).__name__.lower() if not isinstance(plugin, str) else None
    with pytest.raises(AssertionError, match=message):
        provgen_conformance(plugin, name=name)
