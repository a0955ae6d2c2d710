"""Image folder + CSV manifest datasets.

Manifest columns: ``path,label[,patient_id][,split]``. Labels are class names or
indices; multilabel rows hold ``|``-separated names. Paths are relative to the data
root and must stay inside it.

Class order: the dataset entry's ``class_names`` (a list, first = index 0) when given;
every label must then be one of them or an index. Without it, integer labels 0..K-1
keep their values and named labels are sorted alphabetically, except for an ``ordinal``
task, where that order would be wrong (``mild, moderate, none, ...``): named ordinal
labels need ``class_names`` in grade order, e.g. ``class_names: [none, mild, moderate,
severe, proliferative]``.

A ``split`` column holds ``train``, ``val`` (or ``valid``, ``validation``) or ``test``
on every row. Without one a deterministic stratified split (grouped by patient when
given) is made and stored beside the manifest (``<manifest>.splits.csv``); it is only
written when it changed, so a read-only root works once it is there. Rows in error
messages are manifest line numbers (the header is line 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from bench.api.dataset import (
    SPLIT_ALIASES,
    SPLITS,
    DatasetBundle,
    DatasetSpec,
    SplitData,
    validate_bundle,
)
from bench.api.errors import DataError
from bench.data.locate import md5sum
from bench.data.splits import make_splits


def to_uint8_image(img: Image.Image, channels: int, size: int) -> np.ndarray:
    """Convert a PIL image to uint8 [size, size, channels]."""
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def parse_labels(raw: pd.Series, task: str, class_names: list[str] | None, where: str):
    """Map manifest labels (names or indices, '|'-joined for multilabel) to arrays."""
    values = raw.astype(str).str.strip()
    if isinstance(class_names, str):
        raise DataError(
            f"{where}: class_names must be a list in class order, got the string {class_names!r}"
        )
    names = None if class_names is None else [str(n) for n in class_names]
    if task == "multilabel":
        tokens = [v.split("|") if v else [] for v in values]
        names = names or sorted({t for row in tokens for t in row})
        lookup = {n: i for i, n in enumerate(names)}
        out = np.zeros((len(values), len(names)), dtype=np.int64)
        for r, row in enumerate(tokens):
            for t in row:
                if t not in lookup:
                    raise DataError(
                        f"{where}: row {r + 2}: label {t!r} is not in class_names {names}"
                    )
                out[r, lookup[t]] = 1
        return out, names
    if names is None:
        numeric = values.str.fullmatch(r"-?\d+")
        if numeric.all():
            ints = values.astype(int).to_numpy()
            names = [str(i) for i in range(ints.max() + 1)]
            return _check_range(ints, names, where), names
        if task == "ordinal":
            first = int(np.flatnonzero(~numeric)[0])
            raise DataError(
                f"{where}: ordinal task with named labels {sorted(values[~numeric].unique())} "
                f"(first at row {first + 2}: {values.iloc[first]!r}) and no class_names, so the grade order is unknown; "
                "give class_names in the dataset entry, lowest grade first (or use integer labels 0..K-1)"
            )
        names = sorted(values.unique())
    lookup = {n: i for i, n in enumerate(names)}
    out = np.empty(len(values), dtype=np.int64)
    for r, v in enumerate(values):
        if v in lookup:
            out[r] = lookup[v]
        elif v.lstrip("-").isdigit():
            out[r] = int(v)
        else:
            raise DataError(f"{where}: row {r + 2}: label {v!r} is not in class_names {names}")
    return _check_range(out, names, where), names


def parse_splits(raw: pd.Series, where: str) -> np.ndarray:
    """The ``split`` column as train/val/test; any other value is an error naming its rows."""
    values = raw.str.strip()
    bad = values[~values.isin(SPLIT_ALIASES)]
    if len(bad):
        found = "; ".join(
            f"{v!r} at {_rows(np.flatnonzero(values == v))}" for v in bad.unique()[:5]
        )
        raise DataError(
            f"{where}: column 'split' has unknown values: {found}; allowed: train, val (or valid, validation), test"
        )
    return values.map(SPLIT_ALIASES).to_numpy()


def _rows(positions: np.ndarray, first: int = 5) -> str:
    lines = ", ".join(str(p + 2) for p in positions[:first])
    more = f" and {len(positions) - first} more" if len(positions) > first else ""
    return f"row{'s' if len(positions) > 1 else ''} {lines}{more}"


def _check_range(labels: np.ndarray, names: list[str], where: str) -> np.ndarray:
    bad = np.flatnonzero((labels < 0) | (labels >= len(names)))
    if bad.size:
        r = int(bad[0])
        raise DataError(f"{where}: row {r + 2}: label {labels[r]} outside 0..{len(names) - 1}")
    return labels


def resolve_inside(root: Path, rel: str, where: str) -> Path:
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise DataError(f"{where}: path {rel!r} points outside the data root {root}")
    return path


def load_folder(
    name: str,
    root: str | Path,
    manifest: str = "labels.csv",
    task: str = "multiclass",
    size: int = 64,
    channels: int = 3,
    class_names: list[str] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    licence: str = "",
    citation: str = "",
    data_dir=None,
    download=None,
) -> DatasetBundle:
    root = Path(root).expanduser()
    if not root.is_absolute() and data_dir:
        root = Path(data_dir) / root
    manifest_path = root / manifest
    if not manifest_path.is_file():
        raise DataError(f"dataset {name!r}: manifest {manifest_path} not found")
    where = f"manifest {manifest_path}"
    table = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    for col in ("path", "label"):
        if col not in table.columns:
            raise DataError(f"{where}: column {col!r} is missing (has {list(table.columns)})")
    if table.empty:
        raise DataError(f"{where} has no rows")
    labels, names = parse_labels(table["label"], task, class_names, where)
    images = np.empty((len(table), size, size, channels), dtype=np.uint8)
    for r, rel in enumerate(table["path"]):
        path = resolve_inside(root, rel, f"{where}: row {r + 2}")
        try:
            with Image.open(path) as img:
                images[r] = to_uint8_image(img, channels, size)
        except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
            raise DataError(
                f"{where}: row {r + 2}: cannot read image {path} ({exc.__class__.__name__}: {exc})"
            ) from exc
    groups = table["patient_id"].to_numpy() if "patient_id" in table.columns else None
    if "split" in table.columns:
        assignment = parse_splits(table["split"], where)
    else:
        assignment = make_splits(labels, groups, val_fraction, test_fraction, split_seed)
        _store_splits(
            table.assign(split=assignment), manifest_path.with_suffix(".splits.csv"), where
        )
    ids = table["path"].to_numpy()
    splits = {
        s: SplitData(images[assignment == s], labels[assignment == s], list(ids[assignment == s]))
        for s in SPLITS
    }
    if groups is not None:
        _check_patient_leakage(groups, assignment, where)
    spec = DatasetSpec(
        name,
        task,
        tuple(names),
        channels,
        size,
        source=f"folder {root} ({manifest})",
        licence=licence,
        citation=citation,
    )
    return validate_bundle(
        DatasetBundle(spec, splits, files={str(manifest_path): md5sum(manifest_path)})
    )


def _store_splits(table: pd.DataFrame, path: Path, where: str) -> None:
    text = table.to_csv(index=False)
    if path.is_file() and path.read_text() == text:
        return
    try:
        path.write_text(text)
    except OSError as exc:
        raise DataError(
            f"{where}: cannot write the split file {path} ({exc.strerror or exc}); make {path.parent} writable, "
            "or add a 'split' column (train, val or test on every row) to the manifest"
        ) from exc


def _check_patient_leakage(groups: np.ndarray, assignment: np.ndarray, where: str) -> None:
    per_patient = pd.Series(assignment).groupby(pd.Series(groups)).nunique()
    leaked = per_patient[per_patient > 1]
    if len(leaked):
        raise DataError(
            f"{where}: patient {leaked.index[0]!r} appears in more than one split ({len(leaked)} such patients)"
        )
