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
- ``data``: ``split_hash``, ``files`` (path -> MD5), ``images_sha256`` (the pixels of
  every split), ``duplicates_across_splits``, ``n`` per split, ``source``, ``synthetic``,
  ``notes`` (e.g. a file whose MD5 is not the official one). The split hash, the MD5s and
  the pixel hash are part of the unit's identity (`is_complete`)
- ``replaces`` (optional): the data block's identity, commit and finish time of the ok
  record this one overwrote (made from other data, or rerun with ``--rerun``)
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

import fcntl
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.api.errors import BenchError
from bench.api.naming import safe_name

SCHEMA_VERSION = "1.0"


def unit_stem(
    results_dir: Path, suite: str, dataset: str, method: str, config_hash: str, seed: int
) -> Path:
    return (
        Path(results_dir)
        / safe_name(suite)
        / safe_name(dataset)
        / safe_name(method)
        / config_hash
        / f"seed{seed}"
    )


def refuse_unpublished(preset, results_dir: Path, allow_dirty: bool = False) -> None:
    """The project's own ``results/`` holds its published numbers: a pipeline-check preset
    (``published: false`` in its suite, e.g. smoke) may not write records there, and
    neither may code with uncommitted changes (unless `allow_dirty`): a published number
    must be traceable to a commit."""
    from bench.engine.provenance import REPO, git_state

    if Path(results_dir).resolve() != (REPO / "results").resolve():
        return
    if not preset.published:
        raise BenchError(
            f"preset {preset.name!r} is a pipeline check and is never published: its records may not go into "
            f"{REPO / 'results'}; give --results-dir another folder (e.g. runs/results)"
        )
    if git_state()["git_dirty"] and not allow_dirty:
        raise BenchError(
            f"the code has uncommitted changes (git status in {REPO}): records made from it may not go into "
            f"the published {REPO / 'results'}; commit first, give --results-dir another folder, or --allow-dirty"
        )


def data_identity(data: dict[str, Any] | None) -> tuple:
    """What a unit was computed from: its split hash, the MD5s of its data files (not
    their paths, which differ from one machine to the next) and the hash of its images
    (which catches a folder dataset's image changed under the same manifest)."""
    data = data or {}
    return (
        data.get("split_hash"),
        tuple(sorted((data.get("files") or {}).values())),
        data.get("images_sha256"),
    )


def same_data(recorded: dict[str, Any] | None, current: dict[str, Any] | None) -> bool:
    """Whether a record's data block names the same data as `current` (an images hash
    is compared where both have one: records written before it existed lack it)."""
    a, b = data_identity(recorded), data_identity(current)
    return a[:2] == b[:2] and (a[2] is None or b[2] is None or a[2] == b[2])


def is_complete(stem: Path, data: dict[str, Any] | None = None) -> bool:
    """A unit is complete when its record says ok, its predictions exist and, given the
    `data` block it would be computed from now, its record was made from the same data:
    a record of other data is not this unit's result."""
    record = read_json(stem.with_suffix(".json"))
    if not (record and record.get("status") == "ok" and stem.with_suffix(".npz").is_file()):
        return False
    return data is None or same_data(record.get("data"), data)


@contextmanager
def unit_lock(stem: Path) -> Iterator[bool]:
    """Hold ``<stem>.lock`` exclusively while a unit runs (yields False, at once, when
    another process holds it), so that several processes working through one results
    folder share its units instead of each training all of them. The lock is a flock,
    which the kernel drops when its process dies, kill -9 included: a lock file left
    behind by a killed run is never stale."""
    path = stem.with_suffix(".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                yield False
                return
            try:  # its last holder may have removed the file between our open and our flock
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
    except OSError as exc:
        raise BenchError(
            f"cannot write in the results folder {path.parent} ({exc.strerror or exc})"
        ) from exc
    try:
        yield True
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    """Temporary file + rename; the file gets the usual mode (0644 under umask 022)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
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


def write_record(
    stem: Path, record: dict[str, Any], arrays: dict[str, np.ndarray] | None = None
) -> Path:
    """Predictions first, then the record. A write that fails (disk full, permissions)
    leaves neither file behind, so the unit is not complete and its rerun writes both."""
    record = {"schema_version": SCHEMA_VERSION, **record}
    if arrays is not None:
        record["predictions"] = stem.with_suffix(".npz").name
    text = json.dumps(_jsonable(record), indent=1, sort_keys=False)
    try:
        if arrays is not None:
            _atomic_write(stem.with_suffix(".npz"), lambda f: np.savez_compressed(f, **arrays))
        _atomic_write(stem.with_suffix(".json"), lambda f: f.write(text.encode()))
    except OSError:
        if arrays is not None:
            stem.with_suffix(".npz").unlink(missing_ok=True)
        raise
    return stem.with_suffix(".json")


def _json_object(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the JSON object in `path`, None), or (None, why not)."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"not valid JSON ({exc}; truncated?)"
    if not isinstance(data, dict):
        return None, f"not a record: a JSON {type(data).__name__}, not an object"
    return data, None


def read_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the record, None), or (None, why it cannot be used: unreadable, not JSON, not a
    JSON object, another schema version)."""
    data, why = _json_object(path)
    if data is None:
        return None, why
    version = str(data.get("schema_version", ""))
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        return None, f"schema version {version or 'missing'}, not {SCHEMA_VERSION}"
    return data, None


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None (missing, unreadable, not an object)."""
    return _json_object(path)[0]


def load_records(
    results_dir: Path,
    suite: str,
    status: str | None = "ok",
    problems: list[tuple[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Every record of a suite (with ``_path`` added), optionally only one status; a file
    that is not a usable record is left out and, given a `problems` list, named in it
    with the reason (path, why)."""
    out = []
    for path in sorted((Path(results_dir) / safe_name(suite)).rglob("seed*.json")):
        record, why = read_record(path)
        if record is None:
            if problems is not None:
                problems.append((str(path), why))
            continue
        if status is None or record.get("status") == status:
            out.append({**record, "_path": str(path)})
    return out


def load_predictions(record: dict[str, Any]) -> dict[str, np.ndarray]:
    path = Path(record["_path"]).with_name(record["predictions"])
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}
