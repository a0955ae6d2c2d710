"""Turn a suite's dataset entry (a registered name or an inline folder/HF spec) into data."""
from __future__ import annotations

from functools import partial
from typing import Any

from bench.data.folder import load_folder
from bench.data.hf import load_hf
from bench.data.paired import load_paired
from bench.data.spec import DatasetBundle, DatasetSource
from bench.errors import BenchError
from bench.registry import DATASETS

INLINE_LOADERS = {"folder": load_folder, "hf": load_hf, "paired": load_paired}


def dataset_source(entry: str | dict[str, Any]) -> DatasetSource:
    """A registered name, or ``{name, loader: folder|hf|paired, ...loader options}``."""
    if isinstance(entry, str):
        return DATASETS.get(entry)
    options = dict(entry)
    name, kind = options.pop("name", None), options.pop("loader", None)
    if not name or kind not in INLINE_LOADERS:
        raise BenchError(f"inline dataset {entry!r} needs a 'name' and 'loader' in {sorted(INLINE_LOADERS)}")
    task = "restoration" if kind == "paired" else options.get("task", "multiclass")
    return DatasetSource(name, task, partial(INLINE_LOADERS[kind], name, **options), f"{kind} dataset")


def load_bundle(entry: str | dict[str, Any], data_dir=None, download=None) -> DatasetBundle:
    return dataset_source(entry).load(data_dir=data_dir, download=download)
