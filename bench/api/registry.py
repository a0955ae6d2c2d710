"""One registry for methods, datasets, metrics and suites.

Methods, baselines and dataset sources register themselves with decorators when their
module is imported; the registry imports those packages lazily, the first time a name is
looked up, so `import bench` stays cheap and adding a method means adding one file.
Names with a prefix (``timm:<model>``) are resolved by a registered prefix factory.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.api.errors import BenchError

# Packages whose modules are imported on first lookup (each module registers itself).
DISCOVERY_PACKAGES = ("bench.tasks", "bench.data.sources", "bench.metrics", "baselines", "methods")
SUITES_DIR = Path(__file__).parents[1] / "suites"


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


_discovered = False


def discover() -> None:
    """Import every module of the discovery packages and their sub-packages once (each
    registers itself); modules whose name starts with ``_`` are skipped."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for package_name in DISCOVERY_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            if not info.name.rpartition(".")[2].startswith("_"):
                importlib.import_module(info.name)
    for path in sorted(SUITES_DIR.glob("*.yaml")):
        SUITES.add(path.stem, path, _suite_description(path))


def _suite_description(path: Path) -> str:
    import yaml

    with open(path) as f:
        return (yaml.safe_load(f) or {}).get("description", "")
