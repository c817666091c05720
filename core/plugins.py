"""Plugin manager: built-ins first, then third-party entry points (group ``provgen``) one at a time.

Environment:

* ``PROVGEN_PLUGINS=a,b`` loads only the named third-party plugins (entry-point or distribution names);
* ``PROVGEN_DISABLE_PLUGIN_AUTOLOAD=1`` loads no third-party plugins at all.

Built-in plugins (``provgen.plugins.DEFAULT_PLUGINS``) always load: they are the engine's own features.
Nothing happens at import time; :func:`get_plugin_manager` loads on first use.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pluggy

from provgen.core import hookspecs
from provgen.core.errors import PluginHookError, PluginLoadError, ProvgenError

__all__ = [
    "ENTRYPOINT_GROUP",
    "PluginInfo",
    "get_plugin_manager",
    "make_plugin_manager",
    "reset_plugin_manager",
    "call_hook",
    "plugin_infos",
    "plugin_versions",
]

ENTRYPOINT_GROUP = "provgen"
_lock = threading.Lock()
_pm: pluggy.PluginManager | None = None


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str
    distribution: str
    builtin: bool
    enabled: bool
    hooks: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "distribution": self.distribution,
            "builtin": self.builtin,
            "enabled": self.enabled,
            "hooks": list(self.hooks),
        }


def _provgen_version() -> str:
    try:
        return md.version("provgen")
    except md.PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


def _selected_names() -> set[str] | None:
    raw = os.environ.get("PROVGEN_PLUGINS")
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def _entry_points() -> list[md.EntryPoint]:
    return sorted(md.entry_points(group=ENTRYPOINT_GROUP), key=lambda ep: ep.name)


def _dist_of(ep: md.EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    return (dist.metadata["Name"], dist.version) if dist is not None else ("?", "?")


def make_plugin_manager(*, load_entrypoints: bool = True, builtins: bool = True) -> pluggy.PluginManager:
    """A fresh plugin manager (tests use ``load_entrypoints=False``)."""
    from provgen.plugins import DEFAULT_PLUGINS

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.provgen_meta = {}  # type: ignore[attr-defined]  # name -> (version, distribution, builtin)
    if builtins:
        for module_name in DEFAULT_PLUGINS:
            module = importlib.import_module(module_name)
            name = getattr(module, "PLUGIN_NAME", module_name.rsplit(".", 1)[-1])
            pm.register(module, name=name)
            pm.provgen_meta[name] = (_provgen_version(), "provgen", True)  # type: ignore[attr-defined]
    if load_entrypoints and os.environ.get("PROVGEN_DISABLE_PLUGIN_AUTOLOAD", "") not in ("1", "true", "yes"):
        selected = _selected_names()
        for ep in _entry_points():
            dist_name, dist_version = _dist_of(ep)
            if selected is not None and ep.name not in selected and dist_name not in selected:
                continue
            _load_entrypoint(pm, ep, dist_name, dist_version)
    pm.check_pending()
    return pm


def _load_entrypoint(pm: pluggy.PluginManager, ep: md.EntryPoint, dist: str, version: str) -> None:
    """Import and register one plugin; any failure names the plugin and its distribution."""
    if pm.get_plugin(ep.name) is not None:
        raise PluginLoadError(f"plugin `{ep.name}` (distribution `{dist}`) clashes with an already loaded plugin")
    try:
        plugin = ep.load()
        pm.register(plugin, name=ep.name)
        pm.check_pending()  # a misspelt hook name is this plugin's fault: say so now
    except Exception as error:  # an arbitrary third-party import can raise anything
        if pm.get_plugin(ep.name) is not None:
            pm.unregister(name=ep.name)
        raise PluginLoadError(
            f"plugin `{ep.name}` (distribution `{dist}` {version}) failed to load: "
            f"{type(error).__name__}: {error}. Uninstall or fix it, or limit plugins with "
            "PROVGEN_PLUGINS=... / PROVGEN_DISABLE_PLUGIN_AUTOLOAD=1."
        ) from error
    pm.provgen_meta[ep.name] = (version, dist, False)  # type: ignore[attr-defined]


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, loaded on first use."""
    global _pm
    with _lock:
        if _pm is None:
            _pm = make_plugin_manager()
        return _pm


def reset_plugin_manager(pm: pluggy.PluginManager | None = None) -> None:
    """Forget (or replace) the process-wide manager; for tests and long-running hosts."""
    global _pm
    with _lock:
        _pm = pm


def _meta(pm: pluggy.PluginManager, name: str, plugin: object) -> tuple[str, str, bool]:
    """(version, distribution, builtin); plugins registered by hand may set ``__version__`` or ``version``."""
    meta = getattr(pm, "provgen_meta", {})
    if name in meta:
        return meta[name]
    version = getattr(plugin, "__version__", None) or getattr(plugin, "version", None)
    return (str(version) if version else "unversioned", "-", False)


def plugin_versions(pm: pluggy.PluginManager) -> list[dict[str, str]]:
    """``[{name, version}]`` of every registered plugin, as recorded in the recipe."""
    return [{"name": name, "version": _meta(pm, name, plugin)[0]} for name, plugin in sorted(pm.list_name_plugin())]


def plugin_infos(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """Loaded plugins, plus installed entry points that ``PROVGEN_PLUGINS`` left out (``enabled=False``)."""
    infos = []
    for name, plugin in pm.list_name_plugin():
        version, dist, builtin = _meta(pm, name, plugin)
        hooks = tuple(sorted(caller.name for caller in pm.get_hookcallers(plugin) or ()))
        infos.append(PluginInfo(name, version, dist, builtin, True, hooks))
    for ep in _entry_points():
        if pm.get_plugin(ep.name) is None:
            dist, version = _dist_of(ep)
            infos.append(PluginInfo(ep.name, version, dist, False, False, ()))
    return sorted(infos, key=lambda info: (not info.builtin, info.name))


def call_hook(pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> Any:
    """Call a hook; an unexpected exception becomes :class:`PluginHookError` naming the plugin and hook.

    :class:`ProvgenError` subclasses raised on purpose by a plugin (a refusal, a bad argument) pass through.
    """
    try:
        return getattr(pm.hook, hook_name)(**kwargs)
    except ProvgenError:
        raise
    except Exception as error:
        plugin = _culprit(pm, hook_name, error.__traceback__)
        raise PluginHookError(plugin, hook_name, error) from error


def _culprit(pm: pluggy.PluginManager, hook_name: str, tb: TracebackType | None) -> str:
    """The plugin whose hook implementation is on the traceback (pluggy does not record it)."""
    impls = getattr(pm.hook, hook_name).get_hookimpls()
    codes = {getattr(impl.function, "__code__", None): impl.plugin_name for impl in impls}
    culprit = "unknown"
    while tb is not None:
        name = codes.get(tb.tb_frame.f_code)
        if name is not None:
            culprit = name  # keep walking: the innermost implementation (inside wrappers) is the one that raised
        tb = tb.tb_next
    return culprit


