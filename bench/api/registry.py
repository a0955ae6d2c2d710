"""One registry for methods, datasets, metrics and suites.

Methods, baselines and dataset sources register themselves with decorators when their
module is imported; the registry imports those packages lazily, the first time a name is
looked up, so `import bench` stays cheap and adding a method means adding one file.
Names with a prefix (``timm:<model>``) are resolved by a registered prefix factory.

Plug-ins from outside the repository register the same way: the modules named by the
``bench.plugins`` entry-point group of installed packages, and those named by
``bench --plugin MODULE_OR_FILE`` (passed on in ``$BENCH_PLUGINS`` so that the processes
a run starts, ``--jobs`` and SLURM tasks, load them too).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.api.errors import BenchError

# Packages whose modules are imported on first lookup (each module registers itself).
DISCOVERY_PACKAGES = ("bench.tasks", "bench.data.sources", "bench.metrics", "baselines", "methods")
SUITES_DIR = Path(__file__).parents[1] / "suites"
#: the entry-point group an installed package lists its plug-in modules in
PLUGIN_GROUP = "bench.plugins"
#: plug-in modules or .py files to load, separated by os.pathsep (set by `bench --plugin`)
PLUGIN_ENV = "BENCH_PLUGINS"


class UnknownNameError(BenchError, KeyError):
    """An unknown method/dataset/metric/suite name; the message suggests close matches."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    description: str


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        #: checks an entry before it is added (and what a prefix factory builds); set by
        #: the module that defines what the registry holds (bench/api/method.py for methods)
        self.check: Callable[[str, Any], None] | None = None
        self._entries: dict[str, Entry] = {}
        self._prefixes: dict[str, tuple[Callable[[str], Any], str]] = {}

    def add(self, name: str, obj: Any, description: str = "") -> Any:
        if name in self._entries and self._entries[name].obj is not obj:
            raise BenchError(f"{self.kind} {name!r} is registered twice")
        if self.check:
            self.check(name, obj)
        self._entries[name] = Entry(name, obj, description or _first_doc_line(obj))
        return obj

    def add_prefix(self, prefix: str, factory: Callable[[str], Any], description: str) -> None:
        """Resolve ``prefix:<anything>`` with ``factory(<anything>)``."""
        self._prefixes[prefix] = (factory, description)

    def get(self, name: str) -> Any:
        discover()
        if name in self._entries:
            return self._entries[name].obj
        prefix, sep, rest = name.partition(":")
        if sep and prefix in self._prefixes:
            obj = self._prefixes[prefix][0](rest)
            if self.check:
                self.check(name, obj)
            return obj
        raise UnknownNameError(self._unknown_message(name))

    def entries(self) -> list[Entry]:
        discover()
        listed = sorted(self._entries.values(), key=lambda e: e.name)
        listed += [Entry(f"{p}:<name>", None, d) for p, (_, d) in sorted(self._prefixes.items())]
        return listed

    def names(self) -> list[str]:
        discover()
        return sorted(self._entries)

    def _unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (see `bench list {self.kind}s`)"


def _first_doc_line(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


METHODS = Registry("method")
DATASETS = Registry("dataset")
METRICS = Registry("metric")
SUITES = Registry("suite")
TASKS = Registry("task")


#: "new", "running" (a module being imported may look a name up) or "done"
_discovery = "new"
#: the plug-ins loaded from outside the repository: name, file, sha256 of the file
_loaded_plugins: list[dict[str, str]] = []


def discover() -> None:
    """Import, once, every module of the discovery packages and their sub-packages (each
    registers itself; names starting with ``_`` are skipped), then the outside plug-ins.
    A module that fails to import stops it with one error naming the module; the next
    lookup tries again, so a registry is never silently partial."""
    global _discovery
    if _discovery != "new":
        return
    _discovery = "running"
    try:
        for package_name in DISCOVERY_PACKAGES:
            package = _import(package_name)
            for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
                if not info.name.rpartition(".")[2].startswith("_"):
                    _import(info.name)
        for entry_point in importlib.metadata.entry_points(group=PLUGIN_GROUP):
            _load_plugin(
                entry_point.value.partition(":")[0],
                f"entry point {entry_point.name!r} ({PLUGIN_GROUP})",
            )
        for spec in plugin_specs():
            _load_plugin(spec, "--plugin")
        for path in sorted(SUITES_DIR.glob("*.yaml")):
            SUITES.add(path.stem, path, _suite_description(path))
    except BaseException:
        _discovery = "new"
        raise
    _discovery = "done"


def plugin_specs() -> list[str]:
    return [s for s in os.environ.get(PLUGIN_ENV, "").split(os.pathsep) if s]


def add_plugins(specs: list[str]) -> None:
    """Have `discover` (in this process and those it starts) load these plug-ins: module
    names, or .py files (made absolute here, so a process started elsewhere finds them)."""
    resolved = [str(Path(s).resolve()) if s.endswith(".py") else s for s in specs]
    os.environ[PLUGIN_ENV] = os.pathsep.join(dict.fromkeys(plugin_specs() + resolved))
    if _discovery == "done":
        for spec in resolved:
            _load_plugin(spec, "--plugin")


def loaded_plugins() -> list[dict[str, str]]:
    """What was loaded from outside the repository, for the records' provenance."""
    return list(_loaded_plugins)


def _load_plugin(spec: str, origin: str) -> None:
    if any(p["name"] == spec for p in _loaded_plugins):
        return
    if spec.endswith(".py"):
        path = Path(spec)
        if not path.is_file():
            raise BenchError(f"plug-in file {spec} ({origin}) does not exist")
        name = f"bench_plugin_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise BenchError(f"plug-in {spec} ({origin}) failed to load: {_cause(exc)}") from exc
    else:
        try:
            module = importlib.import_module(spec)
        except ModuleNotFoundError as exc:
            if exc.name and spec.startswith(exc.name):
                raise BenchError(
                    f"plug-in module {spec!r} ({origin}) is not found: install its package "
                    "or add its folder to PYTHONPATH"
                ) from exc
            raise BenchError(f"plug-in {spec} ({origin}) failed to load: {_cause(exc)}") from exc
        except Exception as exc:
            raise BenchError(f"plug-in {spec} ({origin}) failed to load: {_cause(exc)}") from exc
        path = Path(module.__file__ or "")
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    _loaded_plugins.append({"name": spec, "file": str(path), "sha256": digest})


def _import(name: str):
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise BenchError(f"plug-in module {name} failed to import: {_cause(exc)}") from exc


def _cause(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _suite_description(path: Path) -> str:
    import yaml

    with open(path) as f:
        return (yaml.safe_load(f) or {}).get("description", "")
