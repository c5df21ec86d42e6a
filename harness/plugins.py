"""The plugin manager: built-in plugins first, then installed entry points (group ``scorebench``), then
``.py`` files from a plugins folder. A plugin that fails to import or to validate is recorded with a short
traceback summary and skipped; the others still load.

Set ``SCOREBENCH_LOAD_PLUGINS`` to a comma-separated list of entry-point names (or distribution names) to load
only those installed plugins; set it to the empty string to load none (the test suite does this).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pluggy
from torch import nn

from harness import hookspecs
from harness.datasets import Dataset
from harness.errors import did_you_mean
from harness.method import Method
from harness.metrics import Metric
from harness.registry import RegistrationError, Registry

PROJECT = "scorebench"
ENTRY_POINT_GROUP = "scorebench"
ENV_LOAD_PLUGINS = "SCOREBENCH_LOAD_PLUGINS"

BUILTIN_PLUGINS = (
    "plugins.datasets",
    "plugins.backbones",
    "plugins.metrics",
    "plugins.dsm",
    "plugins.sde",
    "plugins.mdsm",
    "plugins.walk_jump",
    "plugins.ssm",
)


@dataclass
class PluginInfo:
    name: str
    source: str  # "builtin", "entry point", or the plugins-dir path
    version: str | None = None
    distribution: str | None = None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def _error_summary(exc: BaseException) -> str:
    """`Type: message (at file:line)` of the innermost frame: enough to find the fault, short enough to list.
    A syntax error is located where Python found it (the plugin's file and line, from the exception itself), not
    in the loader that compiled the file: `file:line: SyntaxError: message`."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}: {type(exc).__name__}: {exc.msg}"
    if isinstance(exc, SystemExit):
        return f"SystemExit: the plugin called sys.exit({exc.code!r}) while loading{_where(exc)}"
    return f"{type(exc).__name__}: {exc}{_where(exc)}"


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    tb = [f for f in frames if not f.filename.startswith("<frozen") and "importlib" not in f.filename]
    return f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""


def spec_hook_names() -> list[str]:
    """The hooks declared in `harness.hookspecs`: the only valid hook names (a plugin's misspelled hook is not one)."""
    marker = f"{PROJECT}_spec"
    return sorted(n for n, obj in vars(hookspecs).items() if callable(obj) and hasattr(obj, marker))


def _is_subclass(base: type) -> Callable[[object], bool]:
    return lambda obj: isinstance(obj, type) and issubclass(obj, base) and obj is not base


def _is_backbone(obj) -> bool:
    return isinstance(obj, type) and issubclass(obj, nn.Module) and isinstance(getattr(obj, "kinds", None), tuple)


class PluginHost:
    """The pluggy manager plus what was loaded, what failed, and the registries the hooks filled."""

    def __init__(self, plugins_dir: str | os.PathLike | None = None, entry_points: bool = True,
                 builtins: tuple[str, ...] = BUILTIN_PLUGINS):
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        for modname in builtins:
            self._load(modname, "builtin", lambda m=modname: importlib.import_module(m))
        if entry_points:
            self._load_entry_points()
        if plugins_dir:
            self._load_dir(Path(plugins_dir))
        self._registries: dict[str, Registry] | None = None

    # loading ---------------------------------------------------------------------------------------------

    def _load(self, name: str, source: str, importer: Callable[[], ModuleType], **meta) -> None:
        info = PluginInfo(name=name, source=source, **meta)
        self.infos[name] = info
        try:
            module = importer()
            self.pm.register(module, name=name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a broken plugin (even one calling sys.exit) must not take
            info.error = _error_summary(exc)  # the others, or the CLI, down
            return
        try:
            self.pm.check_pending()  # a misspelled hook name (register_method) fails here
        except pluggy.PluginValidationError as exc:
            unknown = sorted(c.name for c in self.pm.get_hookcallers(module) or [] if not c.has_spec())
            self.pm.unregister(name=name)
            detail = "; ".join(did_you_mean("hook", n, self.hook_names()) for n in unknown) or str(exc)
            info.error = f"PluginValidationError: {detail}"
            return
        info.hooks = sorted(
            h.name for h in self.pm.get_hookcallers(self.pm.get_plugin(name)) or []
        )

    def _load_entry_points(self) -> None:
        wanted = os.environ.get(ENV_LOAD_PLUGINS)
        allow = None if wanted is None else {w.strip() for w in wanted.split(",") if w.strip()}
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else None
            if allow is not None and ep.name not in allow and dist not in allow:
                continue
            version = ep.dist.version if ep.dist else None
            self._load(ep.name, "entry point", ep.load, version=version, distribution=dist)

    def _load_dir(self, folder: Path) -> None:
        if not folder.is_dir():
            from harness.errors import UsageError

            raise UsageError(f"plugins folder {str(folder)!r} does not exist or is not a folder")
        for path in sorted(folder.glob("*.py")):
            modname = f"scorebench_local_plugins.{path.stem}"

            def importer(path=path, modname=modname):
                spec = importlib.util.spec_from_file_location(modname, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[modname] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(modname, None)
                    raise
                return module

            self._load(path.stem, str(path), importer)

    def add_plugin(self, module: object, name: str) -> PluginInfo:
        """Register an already-imported module or object as a plugin (tests and embedding applications)."""
        self._load(name, "registered directly", lambda: module)
        self._registries = None
        return self.infos[name]

    def remove_plugin(self, name: str) -> None:
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)
        self.infos.pop(name, None)
        self._registries = None

    # queries ---------------------------------------------------------------------------------------------

    def hook_names(self) -> list[str]:
        """The declared hooks (`harness.hookspecs`), never the names of hooks that plugins tried to implement."""
        return spec_hook_names()

    def failures(self) -> list[PluginInfo]:
        return [i for i in self.infos.values() if i.error]

    @property
    def registries(self) -> dict[str, Registry]:
        if self._registries is None:
            self._registries = self._build_registries()
        return self._registries

    def _build_registries(self) -> dict[str, Registry]:
        regs = {
            "methods": Registry("method", _is_subclass(Method), "a subclass of harness.method.Method"),
            "datasets": Registry("dataset", _is_subclass(Dataset), "a subclass of harness.datasets.Dataset"),
            "backbones": Registry("backbone", _is_backbone, "an nn.Module subclass with a `kinds` tuple"),
            "metrics": Registry("metric", lambda o: isinstance(o, Metric), "a harness.metrics.Metric"),
        }
        failed = [f"{i.name} ({i.error})" for i in self.failures()]
        for kind, reg in regs.items():
            reg.load_failures = failed
            hook = getattr(self.pm.hook, f"register_{kind}")
            for impl in hook.get_hookimpls():
                provider = impl.plugin_name

                def register(obj, name=None, description=None, _reg=reg, _provider=provider):
                    _reg.register(obj, _provider, name=name, description=description)

                try:
                    impl.function(**{a: register for a in impl.argnames})
                except RegistrationError as exc:  # duplicate name or wrong type: reject, keep the others
                    self._fail(provider, str(exc))
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:  # noqa: BLE001 - sys.exit in a hook is a failure like any other
                    self._fail(provider, f"in register_{kind}: {_error_summary(exc)}")
        return regs

    def _fail(self, provider: str, message: str) -> None:
        info = self.infos.setdefault(provider, PluginInfo(name=provider, source="registered directly"))
        info.error = message if not info.error else f"{info.error}; {message}"

    def register_commands(self, cli) -> None:
        self.pm.hook.register_commands(cli=cli)


_DEFAULT: dict[str | None, PluginHost] = {}


def get_plugin_host(plugins_dir: str | os.PathLike | None = None) -> PluginHost:
    """The process-wide plugin host for a plugins folder (built once, then reused)."""
    key = str(plugins_dir) if plugins_dir else None
    if key not in _DEFAULT:
        _DEFAULT[key] = PluginHost(plugins_dir)
    return _DEFAULT[key]


def get_plugin_manager(plugins_dir: str | os.PathLike | None = None) -> pluggy.PluginManager:
    return get_plugin_host(plugins_dir).pm


def reset_plugin_hosts() -> None:
    """Forget cached hosts (tests register fake plugins and must start clean)."""
    _DEFAULT.clear()
