"""Image folder + CSV manifest datasets.

Manifest columns: ``path,label[,patient_id][,split]``. Labels are class names or
indices; multilabel rows hold ``|``-separated names. Paths are relative to the data
root and must stay inside it. Without a ``split`` column a deterministic stratified
split (grouped by patient when given) is made and stored beside the manifest
(``<manifest>.splits.csv``) with its hash.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from bench.data.spec import DatasetBundle, DatasetSpec, SplitData, validate_bundle
from bench.data.splits import make_splits
from bench.data.locate import md5sum
from bench.errors import DataError


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
    if task == "multilabel":
        tokens = [v.split("|") if v else [] for v in values]
        names = class_names or sorted({t for row in tokens for t in row})
        lookup = {n: i for i, n in enumerate(names)}
        out = np.zeros((len(values), len(names)), dtype=np.int64)
        for r, row in enumerate(tokens):
            for t in row:
                if t not in lookup:
                    raise DataError(f"{where}: row {r + 2}: unknown label {t!r} (classes: {names})")
                out[r, lookup[t]] = 1
        return out, names
    if class_names is None:
        if values.str.fullmatch(r"-?\d+").all():
            ints = values.astype(int).to_numpy()
            names = [str(i) for i in range(ints.max() + 1)]
            return _check_range(ints, names, where), names
        names = sorted(values.unique())
    else:
        names = list(class_names)
    lookup = {n: i for i, n in enumerate(names)}
    out = np.empty(len(values), dtype=np.int64)
    for r, v in enumerate(values):
        if v in lookup:
            out[r] = lookup[v]
        elif v.lstrip("-").isdigit():
            out[r] = int(v)
        else:
            raise DataError(f"{where}: row {r + 2}: unknown label {v!r} (classes: {names})")
    return _check_range(out, names, where), names


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
        path = resolve_inside(root, rel, where)
        try:
            with Image.open(path) as img:
                images[r] = to_uint8_image(img, channels, size)
        except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{where}: row {r + 2}: cannot read image {path} ({exc.__class__.__name__}: {exc})") from exc
    groups = table["patient_id"].to_numpy() if "patient_id" in table.columns else None
    if "split" in table.columns:
        assignment = table["split"].str.strip().replace({"valid": "val", "validation": "val"}).to_numpy()
    else:
        assignment = make_splits(labels, groups, val_fraction, test_fraction, split_seed)
        stored = table.assign(split=assignment)
        stored.to_csv(manifest_path.with_suffix(".splits.csv"), index=False)
    ids = table["path"].to_numpy()
    splits = {s: SplitData(images[assignment == s], labels[assignment == s], list(ids[assignment == s])) for s in ("train", "val", "test")}
    if groups is not None:
        _check_patient_leakage(groups, assignment, where)
    spec = DatasetSpec(name, task, tuple(names), channels, size, source=f"folder {root} ({manifest})", licence=licence, citation=citation)
    return validate_bundle(DatasetBundle(spec, splits, files={str(manifest_path): md5sum(manifest_path)}))


def _check_patient_leakage(groups: np.ndarray, assignment: np.ndarray, where: str) -> None:
    per_patient = pd.Series(assignment).groupby(pd.Series(groups)).nunique()
    leaked = per_patient[per_patient > 1]
    if len(leaked):
        raise DataError(f"{where}: patient {leaked.index[0]!r} appears in more than one split ({len(leaked)} such patients)")
