"""pytest fixtures and a conformance check for provgen plugins (``provgen.testing``).

provgen registers this module with pytest (entry point ``pytest11``, name ``provgen``), so in any
environment where provgen is installed a plugin's tests can use the fixtures without importing anything::

    def test_my_plugin_conforms(provgen_conformance):
        report = provgen_conformance("myplugin", postprocess=("sepia:0.8",))
        assert report.result.recipe["plugins_data"]["myplugin"]["strengths"] == [0.8]

Fixtures (none is autouse: a test gets only what it asks for):

* ``provgen_tiny_sd`` (session) - the folder of a tiny random Stable Diffusion 1.x model, written offline by
  :mod:`provgen.core.tiny_models` (a few seconds; its images are noise, its code paths those of a real model).
* ``provgen_env`` - a fresh ``PROVGEN_HOME`` under ``tmp_path``, ``PROVGEN_REGISTRY_URL`` pointing at an
  SQLite file in it, ``PROVGEN_DEVICE=cpu``, ``PROVGEN_USER=provgen-test``, ``HF_HUB_OFFLINE=1``; every other
  ``PROVGEN_*`` variable is unset and the process-wide plugin manager is reset before and after. Returns the
  resulting :class:`provgen.core.Settings`.
* ``provgen_registry`` - the registry of ``provgen_env``, open and migrated; closed afterwards.
* ``provgen_keys`` - development signing keys in ``provgen_env``'s home
  (:class:`provgen.provenance.keys.DevKeyPaths`; ``ca_cert`` is the trust anchor verification uses).
* ``provgen_conformance`` - ``provgen_conformance(plugin, **request_kwargs)`` runs
  :func:`assert_plugin_conforms` in ``provgen_env`` with ``provgen_tiny_sd`` and an output folder in
  ``tmp_path``; the tiny model is only built once a check gets past the hook checks.

:func:`assert_plugin_conforms` checks, with real components, that

1. the plugin matches provgen's hook specifications: it registers on a fresh plugin manager (built-ins plus
   the plugin, no other installed plugin) without a ``PluginValidationError``, ``pm.check_pending()`` finds no
   unknown hook name, it implements at least one hook, and it wraps no hook that provgen calls plugin by
   plugin (``check_policy``, ``call_arguments``, ``provenance_contribution``);
2. a generation through the real :class:`provgen.core.Engine` with the plugin enabled succeeds, and every
   image it writes passes provgen's verifier with verdict ``verified``: a valid C2PA manifest, the
   watermark found (carrying the image's id), the registry record found (by the manifest label);
3. the plugin is listed among the recipe's ``plugins`` in the result, the signed manifest and the registry
   record.

It returns a :class:`ConformanceReport` for further assertions. ``plugin`` is the name of an installed plugin
(entry-point or distribution name in the group ``provgen``; the recipe then carries its distribution's
version) or a plugin object such as a module (named by ``name=``, else its ``PLUGIN_NAME``, else the last part
of its module name).

Fixture names all start with ``provgen_`` so that they do not collide with a project's own; a fixture of the
same name in a ``conftest.py`` or test module overrides the one here. ``pytest -p no:provgen`` disables this
plugin; with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`` load it with ``-p provgen.testing``. See docs/testing.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import pluggy

    from provgen.core import GenerationResult, Settings
    from provgen.provenance.keys import DevKeyPaths
    from provgen.provenance.registry import Registry
    from provgen.provenance.verify import VerifyReport

__all__ = ["ConformanceReport", "assert_plugin_conforms", "DEFAULT_REQUEST"]

#: the request :func:`assert_plugin_conforms` makes, before ``request_kwargs`` are applied
DEFAULT_REQUEST: Mapping[str, Any] = {"prompt": "a provgen conformance test", "width": 128, "height": 128,
                                      "num_inference_steps": 2, "seed": 0}
#: hooks provgen calls implementation by implementation (they cannot be wrapped)
UNWRAPPABLE_HOOKS = ("check_policy", "call_arguments", "provenance_contribution")


@dataclass(frozen=True)
class ConformanceReport:
    """What :func:`assert_plugin_conforms` checked: the plugin, its hooks, the generation and each verification."""

    plugin: str
    hooks: tuple[str, ...]
    result: GenerationResult
    reports: tuple[VerifyReport, ...]
    #: the ``io.provgen.generation`` assertion (the recipe) of each image's signed manifest
    manifest_recipes: tuple[dict[str, Any], ...]


# ------------------------------------------------------------------------------------------ the check


def assert_plugin_conforms(plugin: object, *, model: str | Path, name: str | None = None,
                           request_kwargs: Mapping[str, Any] | None = None, output_dir: str | Path | None = None,
                           settings: Settings | None = None) -> ConformanceReport:
    """Check ``plugin`` against the hook specifications, generate with it and verify every image.

    :param plugin: an installed plugin's entry-point or distribution name, or a plugin object (a module).
    :param model: the model to generate with (a tiny one: the ``provgen_tiny_sd`` fixture).
    :param name: the name to register a plugin object under (ignored for installed plugins).
    :param request_kwargs: :class:`provgen.core.GenerationRequest` fields that exercise the plugin
        (``postprocess=("sepia:0.8",)``, ``plugin_options={...}``), over :data:`DEFAULT_REQUEST`.
    :param output_dir: where the images go (default: the request's default, ``out``).
    :param settings: provgen settings (default: from the environment; use the ``provgen_env`` fixture).
    :raises AssertionError: naming the plugin and what does not conform.
    """
    pm, plugin_name, hooks = _plugin_manager_with(plugin, name)
    return _generate_and_verify(pm, plugin_name, hooks, model=model, request_kwargs=request_kwargs,
                                output_dir=output_dir, settings=settings)


def _plugin_manager_with(plugin: object, name: str | None) -> tuple[pluggy.PluginManager, str, tuple[str, ...]]:
    """A fresh plugin manager with the built-ins and ``plugin``; fails unless its hooks match the specs."""
    import pluggy

    from provgen.core.errors import PluginLoadError
    from provgen.core.plugins import make_plugin_manager

    pm = make_plugin_manager(load_entrypoints=False)
    if isinstance(plugin, str):
        plugin_name = _load_installed(pm, plugin)
    else:
        plugin_name = name or getattr(plugin, "PLUGIN_NAME", None) or _default_name(plugin)
        try:
            pm.register(plugin, name=plugin_name)
            pm.check_pending()
        except (pluggy.PluginValidationError, ValueError) as error:
            raise AssertionError(f"plugin `{plugin_name}` does not match provgen's hook specifications: "
                                 f"{error}") from error
        except PluginLoadError as error:  # pragma: no cover - make_plugin_manager raises it for entry points
            raise AssertionError(str(error)) from error
    registered = pm.get_plugin(plugin_name)
    callers = pm.get_hookcallers(registered) or []
    hooks = tuple(sorted(caller.name for caller in callers))
    assert hooks, (f"plugin `{plugin_name}` implements no provgen hook; are its functions marked "
                   "`@provgen.core.hookimpl` and named after hooks (docs/plugin_hooks.md)?")
    for caller in callers:
        for impl in caller.get_hookimpls():
            if impl.plugin is not registered:
                continue
            assert not impl.hookwrapper, (f"plugin `{plugin_name}`: `{caller.name}` uses the old-style "
                                          "hookwrapper=True; use @hookimpl(wrapper=True)")
            assert not (impl.wrapper and caller.name in UNWRAPPABLE_HOOKS), (
                f"plugin `{plugin_name}`: `{caller.name}` is called plugin by plugin and cannot be wrapped; "
                "implement it without wrapper=True")
    return pm, plugin_name, hooks


def _default_name(plugin: object) -> str:
    module_name = getattr(plugin, "__name__", None) or type(plugin).__name__
    return str(module_name).rsplit(".", 1)[-1]


def _load_installed(pm: pluggy.PluginManager, wanted: str) -> str:
    """Register the installed plugin ``wanted`` (entry-point or distribution name) as provgen would load it."""
    from provgen.core.errors import PluginLoadError
    from provgen.core.plugins import _dist_of, _entry_points, _load_entrypoint

    entry_points = _entry_points()
    for ep in entry_points:
        dist, version = _dist_of(ep)
        if wanted in (ep.name, dist):
            try:
                _load_entrypoint(pm, ep, dist, version)
            except PluginLoadError as error:
                raise AssertionError(str(error)) from error
            return ep.name
    installed = ", ".join(f"{ep.name} ({_dist_of(ep)[0]})" for ep in entry_points) or "none"
    raise AssertionError(f"no installed provgen plugin named `{wanted}` (entry-point group `provgen`); "
                         f"installed: {installed}. Install the package (`pip install -e .`) or pass the module.")


def _generate_and_verify(pm: pluggy.PluginManager, plugin_name: str, hooks: tuple[str, ...], *,
                         model: str | Path, request_kwargs: Mapping[str, Any] | None,
                         output_dir: str | Path | None, settings: Settings | None) -> ConformanceReport:
    from provgen.core import Engine
    from provgen.core.registries import watermark_methods
    from provgen.provenance.c2pa_io import GENERATION_ASSERTION, read_credentials
    from provgen.provenance.trust import trust_anchors_pem
    from provgen.provenance.verify import verify_file

    fields: dict[str, Any] = {**DEFAULT_REQUEST, "model": str(model), **(request_kwargs or {})}
    if output_dir is not None:
        fields.setdefault("output_dir", Path(output_dir))
    engine = Engine(settings, plugin_manager=pm, device="cpu", progress=False)
    try:
        result = engine.generate(**fields)
        anchors = trust_anchors_pem(engine.settings)
        methods = [entry.item for entry in watermark_methods(pm).values()]
        reports, manifests = [], []
        for image in result.images:
            report = verify_file(image.path, registry=engine.provenance.registry, methods=methods,
                                 trust_anchors_pem=anchors, max_distance=engine.settings.fingerprint_max_distance,
                                 max_phash=engine.settings.fingerprint_max_phash,
                                 max_dhash=engine.settings.fingerprint_max_dhash,
                                 marking_method=engine.settings.watermark_method)
            where = f"plugin `{plugin_name}`: {image.path.name}"
            assert report.c2pa["state"] in ("Trusted", "Valid"), (
                f"{where}: C2PA manifest {report.c2pa['state']} {report.c2pa['codes']} {report.c2pa.get('error', '')}")
            assert report.watermark["found"], f"{where}: no watermark found"
            assert report.watermark["id"] == f"{image.watermark_id:012x}", (
                f"{where}: the watermark carries {report.watermark['id']}, the image's id is {image.watermark_id:012x}")
            assert report.record is not None and report.asset_id == image.asset_id, (
                f"{where}: no registry record found (found {report.asset_id!r} by {report.match!r})")
            assert report.verdict == "verified", f"{where}: verdict {report.verdict!r}, expected 'verified'"
            credentials = read_credentials(image.path.read_bytes(), trust_anchors_pem=anchors)
            manifest_recipe = credentials.assertion(GENERATION_ASSERTION) or {}
            for source, recipe in (("recipe", result.recipe), ("signed manifest", manifest_recipe),
                                   ("registry record", report.record["generation"]["recipe"])):
                names = [entry.get("name") for entry in recipe.get("plugins", ())]
                assert plugin_name in names, f"{where}: `{plugin_name}` is not in the {source}'s plugins {names}"
            reports.append(report)
            manifests.append(manifest_recipe)
    finally:
        engine.close()
    return ConformanceReport(plugin_name, hooks, result, tuple(reports), tuple(manifests))


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def provgen_tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Stable Diffusion 1.x model folder (diffusers layout), built once per session, offline."""
    from provgen.core.tiny_models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("provgen-models") / "tiny-sd")


@pytest.fixture
def provgen_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A private PROVGEN_HOME (keys, SQLite registry, caches) and a clean provgen environment; yields the Settings."""
    import sys

    from provgen.core import load_settings
    from provgen.core.plugins import reset_plugin_manager

    for variable in [name for name in os.environ if name.startswith("PROVGEN_")]:
        monkeypatch.delenv(variable)
    home = tmp_path / "provgen-home"
    monkeypatch.setenv("PROVGEN_HOME", str(home))
    monkeypatch.setenv("PROVGEN_REGISTRY_URL", f"sqlite:///{home / 'registry.db'}")
    monkeypatch.setenv("PROVGEN_USER", "provgen-test")
    monkeypatch.setenv("PROVGEN_DEVICE", "cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if "huggingface_hub.constants" in sys.modules:  # it reads HF_HUB_OFFLINE once, at import
        monkeypatch.setattr(sys.modules["huggingface_hub.constants"], "HF_HUB_OFFLINE", True)
    reset_plugin_manager()
    yield load_settings()
    reset_plugin_manager()


@pytest.fixture
def provgen_registry(provgen_env: Settings) -> Iterator[Registry]:
    """The registry of ``provgen_env`` (SQLite), open and migrated."""
    from provgen.provenance.registry import open_registry

    registry = open_registry(provgen_env.registry_url)
    yield registry
    registry.close()


@pytest.fixture
def provgen_keys(provgen_env: Settings) -> DevKeyPaths:
    """Development signing keys (root CA and ES256 signer) in ``provgen_env``'s home, as provgen creates them."""
    from provgen.provenance.keys import ensure_dev_keys

    return ensure_dev_keys(provgen_env.keys_dir)[0]


@pytest.fixture
def provgen_conformance(provgen_env: Settings, tmp_path: Path,
                        request: pytest.FixtureRequest) -> Callable[..., ConformanceReport]:
    """``check(plugin, *, name=None, **request_kwargs)``: :func:`assert_plugin_conforms` with the tiny model."""

    def check(plugin: object, *, name: str | None = None, **request_kwargs: Any) -> ConformanceReport:
        pm, plugin_name, hooks = _plugin_manager_with(plugin, name)
        model = request.getfixturevalue("provgen_tiny_sd")  # built only when there is something to generate
        output_dir = tmp_path / "provgen-conformance"
        return _generate_and_verify(pm, plugin_name, hooks, model=model, request_kwargs=request_kwargs,
                                    output_dir=output_dir, settings=provgen_env)

    return check
