"""Suites: small declarative YAML files loaded into typed dataclasses.

A suite names its datasets, methods, seeds, the reference method of its leaderboard
and its presets. A preset is a training budget plus per-method option overrides (and
overrides of the suite's ``evaluation`` options, e.g. the generation suite's sample
counts and feature extractor).
One ``include:`` level is allowed (the included file's keys are the defaults).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.api.errors import BenchError
from bench.api.method import Budget
from bench.api.options import check_options
from bench.api.registry import SUITES


@dataclass(frozen=True)
class MethodEntry:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Preset:
    name: str
    budget: Budget
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)  # overrides the suite's
    published: bool = (
        True  # False: a pipeline check, whose records never go into the project's results/
    )
    #: {dataset: {method: options}}: what a dataset needs besides the preset's method
    #: options (e.g. the input and ROI sizes of 64 px images), applied on top of them
    dataset_options: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    task: str
    datasets: list[Any]
    methods: list[MethodEntry]
    seeds: list[int]
    reference: str | None
    presets: dict[str, Preset]
    path: Path
    evaluation: dict[str, Any] = field(
        default_factory=dict
    )  # task-specific scoring options (generation)

    def preset(self, name: str) -> Preset:
        if name not in self.presets:
            raise BenchError(
                f"suite {self.name!r} has no preset {name!r} (has {sorted(self.presets)})"
            )
        return self.presets[name]

    def options_for(
        self,
        method: MethodEntry,
        preset: Preset,
        preset_options_of: str | None = None,
        dataset: str | None = None,
    ) -> dict[str, Any]:
        """The entry's options, then the preset's for `preset_options_of` (the method a
        registered variant is sized like), then the preset's for the entry itself; each
        of the preset's followed by its `dataset_options` for `dataset`."""
        per_dataset = preset.dataset_options.get(dataset, {}) if dataset else {}
        out = dict(method.options)
        for name in (preset_options_of, method.name):
            if name:
                out.update(preset.method_options.get(name, {}))
                out.update(per_dataset.get(name, {}))
        return out

    def evaluation_for(self, preset: Preset) -> dict[str, Any]:
        return {**self.evaluation, **preset.evaluation}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise BenchError(f"cannot read suite file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise BenchError(
            f"cannot read suite file {path}: not valid YAML{where} ({getattr(exc, 'problem', None) or exc})"
        ) from exc
    if not isinstance(data, dict):
        raise BenchError(f"suite file {path} must hold a mapping")
    return data


def load_suite(name_or_path: str) -> Suite:
    """A registered suite name (``bench/suites/<name>.yaml``) or a path to a YAML file."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = SUITES.get(name_or_path)
    data = _read_yaml(path)
    if "include" in data:
        base = _read_yaml(path.parent / data.pop("include"))
        if "include" in base:
            raise BenchError(f"{path}: included suites may not include again (one level only)")
        data = {**base, **data}
    unknown = set(data) - {
        "description",
        "task",
        "datasets",
        "methods",
        "seeds",
        "reference",
        "presets",
        "evaluation",
    }
    if unknown:
        raise BenchError(f"suite file {path}: unknown keys {sorted(unknown)}")
    for key in ("datasets", "methods", "presets"):
        if not data.get(key):
            raise BenchError(f"suite file {path}: '{key}' is missing or empty")
    methods = [
        _method_entry(path, i, m) for i, m in enumerate(_as_list(path, "methods", data["methods"]))
    ]
    if not isinstance(data["presets"], dict):
        raise BenchError(
            f"suite file {path}: 'presets' must be a mapping of preset name -> {{budget, methods, evaluation, "
            f"published}}, not a {type(data['presets']).__name__}"
        )
    presets = {}
    for pname, p in data["presets"].items():
        p = p or {}
        if (
            not isinstance(p, dict)
            or not isinstance(p.get("budget", {}), dict)
            or not isinstance(p.get("methods") or {}, dict)
        ):
            raise BenchError(
                f"suite file {path}: preset {pname!r} must be a mapping with 'budget' and 'methods' mappings"
            )
        check_options(Budget, p.get("budget", {}), f"suite file {path}: preset {pname!r}: budget")
        budget = Budget(**p.get("budget", {}))
        dataset_options = p.get("dataset_options") or {}
        if not isinstance(dataset_options, dict) or not all(
            isinstance(per, dict) and all(isinstance(o, dict) for o in per.values())
            for per in dataset_options.values()
        ):
            raise BenchError(
                f"suite file {path}: preset {pname!r}: 'dataset_options' must map dataset -> method -> options"
            )
        unknown = set(p) - {"budget", "methods", "evaluation", "published", "dataset_options"}
        if unknown or not isinstance(p.get("published", True), bool):
            raise BenchError(
                f"suite file {path}: preset {pname!r}: unknown keys {sorted(unknown)} or 'published' not true/false"
            )
        presets[pname] = Preset(
            pname,
            budget,
            {k: dict(v) for k, v in (p.get("methods") or {}).items()},
            dict(p.get("evaluation") or {}),
            p.get("published", True),
            {d: {m: dict(o) for m, o in per.items()} for d, per in dataset_options.items()},
        )
    return Suite(
        name=path.stem,
        description=data.get("description", ""),
        task=data.get("task", "classification"),
        datasets=_as_list(path, "datasets", data["datasets"]),
        methods=methods,
        seeds=parse_seeds(data.get("seeds", [0]), f"suite file {path}: seeds"),
        reference=data.get("reference"),
        presets=presets,
        path=path,
        evaluation=dict(data.get("evaluation") or {}),
    )


#: what numpy and torch accept as a seed: 0 <= seed < 2**32
MAX_SEED = 2**32 - 1


def parse_seeds(values, where: str) -> list[int]:
    """Seeds as integers in 0..2**32 - 1, or one error naming the value that is not one."""
    values = values if isinstance(values, (list, tuple)) else [values]
    out = []
    for v in values:
        try:
            if isinstance(v, bool) or float(v) != int(v):
                raise ValueError
            out.append(int(v))
        except (TypeError, ValueError, OverflowError):
            raise BenchError(f"{where}: {v!r} is not an integer seed") from None
        if not 0 <= out[-1] <= MAX_SEED:
            raise BenchError(f"{where}: seed {out[-1]} is out of range (0 to 2**32 - 1)")
    return out


def _as_list(path: Path, key: str, value) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise BenchError(f"suite file {path}: '{key}' must be a list, not a {type(value).__name__}")
    return list(value)


def _method_entry(path: Path, index: int, entry) -> MethodEntry:
    if isinstance(entry, str):
        return MethodEntry(entry)
    where = f"suite file {path}: methods entry {index + 1} ({entry!r})"
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise BenchError(
            f"{where}: each entry is a method name or a mapping with 'name' (and optional 'options')"
        )
    unknown = set(entry) - {"name", "options"}
    if unknown or not isinstance(entry.get("options") or {}, dict):
        raise BenchError(
            f"{where}: unknown keys {sorted(unknown)} or 'options' not a mapping (allowed: name, options)"
        )
    return MethodEntry(entry["name"], dict(entry.get("options") or {}))
