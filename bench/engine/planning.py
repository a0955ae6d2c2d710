"""Planning a suite run: which datasets (with their synthetic twins when real data is
missing and that is allowed), which methods and configs, and the units (dataset x
method x seed) with their record and work paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.api.dataset import DatasetBundle
from bench.api.errors import BenchError, DataError, MissingDataError
from bench.api.method import MethodSpec, config_dict, config_hash, config_identity
from bench.api.registry import DATASETS, METHODS
from bench.data.load import dataset_source
from bench.engine.config import MethodEntry, Preset, Suite
from bench.engine.records import (
    unit_stem,
)

SYNTHETIC_TWINS = {
    "binary": "synthetic_lesions",
    "multiclass": "synthetic_severity",
    "ordinal": "synthetic_severity",
}


@dataclass
class Unit:
    dataset: str
    method: str
    seed: int
    config: dict[str, Any]
    config_hash: str
    stem: Path

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.method}/seed{self.seed}"


def suite_dataset_entries(suite: Suite, only: list[str] | None) -> list:
    """The suite's dataset entries (those in `only`, when given), plus any registered
    dataset named in `only` that the suite does not list: it runs with the suite's
    methods and presets, without a suite file of its own."""

    def name_of(entry):
        return entry if isinstance(entry, str) else entry.get("name")

    entries = [e for e in suite.datasets if not only or name_of(e) in only]
    for name in only or []:
        if name in {name_of(e) for e in suite.datasets}:
            continue
        try:
            source = DATASETS.get(name)
        except BenchError as exc:
            raise BenchError(
                f"dataset {name!r} is neither in suite {suite.name!r} ({', '.join(map(str, map(name_of, suite.datasets)))}) "
                f"nor registered: {exc}"
            ) from None
        if (source.task == "restoration") != (suite.task == "restoration"):
            raise BenchError(
                f"dataset {name!r} is a {source.task} dataset; suite {suite.name!r} is a {suite.task} suite"
            )
        entries.append(name)
    return entries


def resolve_datasets(
    suite: Suite, only: list[str] | None, data_dir, download, fallback_synthetic: bool, log
):
    """Load each dataset once; on missing (not bad) data, use a synthetic twin if allowed."""
    bundles: dict[str, DatasetBundle] = {}
    errors: dict[str, str] = {}
    for entry in suite_dataset_entries(suite, only):
        source = dataset_source(entry)
        try:
            bundles[source.name] = source.load(data_dir=data_dir, download=download)
        except DataError as exc:  # a file that is there but bad is never replaced by synthetic data
            twin = SYNTHETIC_TWINS.get(source.task)
            if not (fallback_synthetic and twin and isinstance(exc, MissingDataError)):
                errors[source.name] = str(exc)
                continue
            log(
                f"NO REAL DATA for {source.name}: {exc}\n  -> running on the SYNTHETIC dataset {twin} instead (not medical data)."
            )
            if twin not in bundles:
                bundles[twin] = dataset_source(twin).load()
    return bundles, errors


def plan_units(
    suite: Suite,
    preset: Preset,
    dataset_names,
    methods_only,
    seeds,
    results_dir,
    precision: str = "fp32",
) -> tuple[list[Unit], dict[str, MethodSpec]]:
    specs, units = {}, []
    entries = [m for m in suite.methods if not methods_only or m.name in methods_only]
    entries += [
        MethodEntry(name)
        for name in methods_only or []
        if name not in {m.name for m in suite.methods}
    ]
    if not entries:
        raise BenchError(f"no methods selected from suite {suite.name!r}")
    for entry in entries:
        spec = METHODS.get(entry.name)  # unknown names fail here, before any training
        if spec.cls.task != suite.task:
            raise BenchError(
                f"method {entry.name!r} is a {spec.cls.task} method; suite {suite.name!r} is a {suite.task} suite"
            )
        specs[entry.name] = spec
        for dataset in dataset_names:
            options = suite.options_for(entry, preset, spec.preset_options_of, dataset)
            for seed in seeds:
                try:
                    unit = make_unit(
                        spec, entry.name, options, dataset, seed, preset, precision, results_dir, suite.name
                    )  # fmt: skip
                except BenchError as exc:  # a bad option: name the file and preset it is in
                    raise BenchError(
                        f"suite file {suite.path}: preset {preset.name!r}: method {entry.name!r}: {exc}"
                    ) from None
                units.append(unit)
    return units, specs


def method_inapplicable(
    suite: Suite, preset: Preset, method: str, class_names, dataset: str | None = None
) -> str | None:
    """Why `method`, with `suite`'s options at `preset` (on `dataset`), would not be
    itself on data with these classes (`Method.inapplicable`), or None."""
    spec = METHODS.get(method)
    entry = next((m for m in suite.methods if m.name == method), MethodEntry(method))
    options = suite.options_for(entry, preset, spec.preset_options_of, dataset)
    return spec.inapplicable(options, class_names)


def make_unit(
    spec: MethodSpec, method, options, dataset, seed, preset, precision, results_dir, study
) -> Unit:
    """The unit of `method` with `options` on `dataset` and `seed`: its config, the hash of
    what defines it, and its record's stem under `results_dir`/`study` (a suite or a sweep)."""
    made = spec.make_config(options)
    chash = config_hash(method, config_identity(made), preset.budget, precision)
    config = config_dict(made)
    stem = unit_stem(results_dir, study, dataset, method, chash, seed)
    return Unit(dataset, method, seed, config, chash, stem)


def unit_work_dir(unit: Unit, suite: Suite, work_dir: Path) -> Path:
    """Where a unit keeps its training checkpoints until its record is written."""
    return unit_stem(work_dir, suite.name, unit.dataset, unit.method, unit.config_hash, unit.seed)
