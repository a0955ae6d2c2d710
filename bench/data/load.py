"""Turn a suite's dataset entry (a registered name or an inline folder/HF spec) into data."""

from __future__ import annotations

import difflib
import inspect
from functools import partial
from typing import Any

from bench.api.dataset import DatasetBundle, DatasetSource
from bench.api.errors import BenchError, DataError
from bench.api.registry import DATASETS
from bench.data.folder import load_folder
from bench.data.hf import load_hf
from bench.data.paired import load_paired

INLINE_LOADERS = {"folder": load_folder, "hf": load_hf, "paired": load_paired}
NOT_OPTIONS = ("name", "data_dir", "download")  # given by the harness, not the entry


def dataset_source(entry: str | dict[str, Any]) -> DatasetSource:
    """A registered name, or ``{name, loader: folder|hf|paired, ...loader options}``."""
    if isinstance(entry, str):
        return DATASETS.get(entry)
    options = dict(entry)
    name, kind = options.pop("name", None), options.pop("loader", None)
    if not name or kind not in INLINE_LOADERS:
        raise BenchError(
            f"inline dataset {entry!r} needs a 'name' and 'loader' in {sorted(INLINE_LOADERS)}"
        )
    check_options(name, kind, options)
    task = "restoration" if kind == "paired" else options.get("task", "multiclass")
    return DatasetSource(
        name, task, partial(INLINE_LOADERS[kind], name, **options), f"{kind} dataset"
    )


def load_bundle(entry: str | dict[str, Any], data_dir=None, download=None) -> DatasetBundle:
    return dataset_source(entry).load(data_dir=data_dir, download=download)


def check_options(name: str, kind: str, options: dict[str, Any]) -> None:
    """Unknown or missing loader options fail here, by name, not as a TypeError at load time."""
    params = inspect.signature(INLINE_LOADERS[kind]).parameters
    valid = [p for p in params if p not in NOT_OPTIONS]
    for key in options:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(
                f"dataset {name!r}: unknown option {key!r} for loader {kind!r}{hint}; valid options: {', '.join(valid)}"
            )
    missing = [
        p for p in valid if params[p].default is inspect.Parameter.empty and p not in options
    ]
    if missing:
        raise DataError(
            f"dataset {name!r}: loader {kind!r} needs option {missing[0]!r}; valid options: {', '.join(valid)}"
        )
