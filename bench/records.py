"""Run records: the versioned schema every table is rebuilt from.

One unit = (suite, dataset, method, config hash, seed). Its record lives at
``<results>/<suite>/<dataset>/<method>/<config_hash>/seed<seed>.json`` with the
per-sample scores beside it in ``seed<seed>.npz``. Both are written atomically
(temporary file + rename), predictions first, so a record that exists is whole.

Schema (``schema_version`` "1.0"), top-level keys of the JSON:

- ``schema_version``, ``status`` ("ok" | "failed"), ``error`` (null, or
  ``{type, message, traceback}`` for a failed unit)
- ``suite``, ``preset``, ``dataset``, ``method``, ``seed``, ``config_hash``
- ``config``: the method's resolved config; ``budget``: epochs, batch sizes, step cap
- ``task``, ``class_names``
- ``metrics``: ``{"val": {name: value}, "test": {name: value}}``, NaN written as null
- ``per_class``: ``{"test": {"auroc": [...], "recall": [...], "f1": [...]}}``
- ``selection``: what fit() chose on validation (metric, best epoch, value, history,
  ``resumed_after_epoch`` when training continued from a checkpoint of a killed run),
  and for methods with a pretrained prior its summary (cache "hit"/"miss", file)
- ``predicted_share`` (classification): ``{split: [share of images predicted as each
  class]}`` (per label: the positive rate); a 1.0 is a model that predicts one class
- ``priors`` (classification, optional): ``{name: {split: {metric: value,
  "predicted_share": [...]}}}`` for the method's own prior models (e.g. ``DCG fused``),
  their probabilities in the .npz as ``{split}_prior_{name}``
- ``extras`` (optional): ``{split: {name: mean}}`` of per-sample outputs besides the
  probabilities (e.g. CARD's ``piw``), the per-sample values being in the .npz
- ``timings``: ``train_s``, ``train_images_per_s``, ``inference_images_per_s``, ``wall_s``
- ``memory``: ``peak_mb`` and ``kind`` (CUDA max allocated, or process max RSS on CPU)
- ``data``: ``split_hash``, ``files`` (path -> MD5), ``duplicates_across_splits``,
  ``n`` per split, ``source``, ``synthetic``
- ``provenance``: git commit and dirty flag, package versions, device, precision,
  ``execution`` (precision, autocast, threads, OMP_NUM_THREADS, allowed cores, native
  bf16, memory format), processes, python, platform, host, started/finished (UTC ISO),
  command line
- ``predictions``: file name of the .npz (keys ``{split}_probs``, ``{split}_labels``,
  ``{split}_ids`` for val and test, and ``{split}_{extra}`` for each extra)

Generation units (task "generation" suites) keep the same layout: ``metrics.test``
holds FID, KID (mean, std), precision and recall of the generated images against the
test split; ``per_class.test`` the FID per class and the image counts;
``evaluation`` the scoring options and ``extractor_info`` (name, version = weights
hash, what it was trained on); the .npz holds ``generated_images`` (uint8) and
``generated_labels``.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError

SCHEMA_VERSION = "1.0"


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def unit_stem(results_dir: Path, suite: str, dataset: str, method: str, config_hash: str, seed: int) -> Path:
    return Path(results_dir) / safe_name(suite) / safe_name(dataset) / safe_name(method) / config_hash / f"seed{seed}"


def refuse_unpublished(preset, results_dir: Path) -> None:
    """The project's own ``results/`` holds its published numbers: a pipeline-check preset
    (``published: false`` in its suite, e.g. smoke) may not write records there."""
    from bench.provenance import REPO

    if not preset.published and Path(results_dir).resolve() == (REPO / "results").resolve():
        raise BenchError(f"preset {preset.name!r} is a pipeline check and is never published: its records may not go into "
                         f"{REPO / 'results'}; give --results-dir another folder (e.g. runs/results)")


def is_complete(stem: Path) -> bool:
    """A unit is complete when its record says ok and its predictions exist."""
    record = read_json(stem.with_suffix(".json"))
    return bool(record) and record.get("status") == "ok" and stem.with_suffix(".npz").is_file()


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_record(stem: Path, record: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> Path:
    if arrays is not None:
        _atomic_write(stem.with_suffix(".npz"), lambda f: np.savez_compressed(f, **arrays))
        record = {**record, "predictions": stem.with_suffix(".npz").name}
    record = {"schema_version": SCHEMA_VERSION, **record}
    text = json.dumps(_jsonable(record), indent=1, sort_keys=False)
    _atomic_write(stem.with_suffix(".json"), lambda f: f.write(text.encode()))
    return stem.with_suffix(".json")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def load_records(results_dir: Path, suite: str, status: str | None = "ok") -> list[dict[str, Any]]:
    """Every record of a suite (with ``_path`` added), optionally only one status."""
    out = []
    for path in sorted((Path(results_dir) / safe_name(suite)).rglob("seed*.json")):
        record = read_json(path)
        if record is None or record.get("schema_version", "").split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            continue
        if status is None or record.get("status") == status:
            out.append({**record, "_path": str(path)})
    return out


def load_predictions(record: dict[str, Any]) -> dict[str, np.ndarray]:
    path = Path(record["_path"]).with_name(record["predictions"])
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}
