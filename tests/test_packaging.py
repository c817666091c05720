"""The one-namespace layout: every package folder is listed in pyproject.toml and imports as provgen.*."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPING = {"core": "provgen.core", "plugins": "provgen.plugins", "provenance": "provgen.provenance",
           "cli": "provgen.cli"}


BARE = re.compile(r"^(import|from)\s+(core|cli|plugins|provenance)(\.|\s|,|$)")


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed() -> None:
    config = pyproject()["tool"]["setuptools"]
    listed = set(config["packages"])
    assert config["package-dir"] == {"provgen": "core/_facade", **{v: k for k, v in MAPPING.items()}}
    found = {"provgen"}
    for folder, package in MAPPING.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            if relative.parts[:1] == ("_facade",):
                continue  # mapped to `provgen` itself
            found.add(".".join([package, *relative.parts]))
    assert found == listed, f"missing from pyproject: {found - listed}; listed but absent: {listed - found}"


def test_every_listed_package_imports() -> None:
    for package in pyproject()["tool"]["setuptools"]["packages"]:
        importlib.import_module(package)


def test_migrations_ship_as_package_data() -> None:
    data = pyproject()["tool"]["setuptools"]["package-data"]["provgen.provenance.registry.migrations"]
    assert "script.py.mako" in data
    assert (ROOT / "provenance" / "registry" / "migrations" / "script.py.mako").is_file()


def test_no_bare_top_level_imports() -> None:
    offenders = []
    for folder in (*MAPPING, "tests", "benchmarks"):
        for source in (ROOT / folder).rglob("*.py"):
            for number, line in enumerate(source.read_text().splitlines(), 1):
                stripped = line.strip()
                if BARE.match(stripped):
                    offenders.append(f"{source.relative_to(ROOT)}:{number}: {stripped}")
    assert not offenders


def test_console_script_runs() -> None:
    exe = Path(sys.executable).with_name("provgen")
    result = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "version" in result.stdout


def test_import_provgen_does_not_import_torch() -> None:
    code = "import sys, provgen, provgen.cli.main; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
