"""Where run records live and when a unit is complete; the record itself (its typed
schema, load and save) is `bench.api.record.Record`.

One unit = (suite, dataset, method, config hash, seed). Its record lives at
``<results>/<suite>/<dataset>/<method>/<config_hash>/seed<seed>.json`` with the
per-sample scores beside it in ``seed<seed>.npz`` (keys ``{split}_probs``,
``{split}_labels``, ``{split}_ids`` for val and test, ``{split}_{extra}`` for each extra,
``{split}_prior_{name}`` for each prior's probabilities; generation: ``generated_images``
and ``generated_labels``). Both are written atomically
(temporary file + rename), predictions first, so a record that exists is whole.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.api.errors import BenchError
from bench.api.naming import safe_name
from bench.api.record import SCHEMA_VERSION, Data, Record, atomic_write


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


def is_complete(stem: Path, data: Data | None = None) -> bool:
    """A unit is complete when its record says ok, its predictions exist and, given the
    `data` it would be computed from now, its record was made from the same data: a
    record of other data is not this unit's result."""
    record = read_record(stem.with_suffix(".json"))[0]
    if not (record and record.ok and stem.with_suffix(".npz").is_file()):
        return False
    return data is None or data.same_as(record.data)


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


def write_record(
    stem: Path, record: Record | dict[str, Any], arrays: dict[str, np.ndarray] | None = None
) -> Path:
    """Predictions first, then the record (a `Record`, or its dict form). A write that
    fails (disk full, permissions) leaves neither file behind, so the unit is not
    complete and its rerun writes both."""
    if isinstance(record, dict):
        record = Record.from_dict({"schema_version": SCHEMA_VERSION, **record})
    if arrays is not None:
        record.predictions = stem.with_suffix(".npz").name
    try:
        if arrays is not None:
            atomic_write(stem.with_suffix(".npz"), lambda f: np.savez_compressed(f, **arrays))
        return record.save(stem.with_suffix(".json"))
    except OSError:
        if arrays is not None:
            stem.with_suffix(".npz").unlink(missing_ok=True)
        raise


def read_record(path: Path) -> tuple[Record | None, str | None]:
    """(the record, None), or (None, why it cannot be used: unreadable, not JSON, not a
    record, another schema version)."""
    try:
        return Record.load(path), None
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"not valid JSON ({exc}; truncated?)"
    except (ValueError, TypeError) as exc:
        return None, str(exc)


def load_records(
    results_dir: Path,
    suite: str,
    status: str | None = "ok",
    problems: list[tuple[str, str]] | None = None,
) -> list[Record]:
    """Every record of a suite, optionally only one status; a file that is not a usable
    record is left out and, given a `problems` list, named in it with the reason (path, why)."""
    out = []
    for path in sorted((Path(results_dir) / safe_name(suite)).rglob("seed*.json")):
        record, why = read_record(path)
        if record is None:
            if problems is not None:
                problems.append((str(path), why))
            continue
        if status is None or record.status == status:
            out.append(record)
    return out
