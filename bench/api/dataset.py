"""What a loaded dataset is: a spec, uint8 image arrays per split, stable ids, checks.

Every loader returns a :class:`DatasetBundle`; :func:`validate_bundle` checks it where
it enters the harness (dtype, shape, channels, label range, empty splits) and computes
the split hash and the cross-split exact-duplicate count that go into every record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bench.api.errors import DataError

LABEL_TASKS = ("binary", "multiclass", "multilabel", "ordinal")
SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    task: str
    class_names: tuple[str, ...]
    channels: int
    size: int
    source: str = ""
    licence: str = ""
    citation: str = ""
    synthetic: bool = False

    def __post_init__(self):
        if self.task not in LABEL_TASKS:
            raise DataError(
                f"dataset {self.name!r}: task {self.task!r} is not one of {LABEL_TASKS}"
            )
        if self.channels not in (1, 3):
            raise DataError(f"dataset {self.name!r}: {self.channels} channels (expected 1 or 3)")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"


@dataclass
class SplitData:
    """One split in memory: images uint8 [N, H, W, C], labels int [N] (or 0/1 [N, L])."""

    images: np.ndarray
    labels: np.ndarray
    ids: list[str]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DatasetBundle:
    spec: DatasetSpec
    splits: dict[str, SplitData]
    files: dict[str, str] = field(default_factory=dict)  # data file -> MD5
    split_hash: str = ""
    images_sha256: str = (
        ""  # the pixels of every split: a folder's images may change under the same manifest
    )
    duplicates_across_splits: int = 0
    notes: list[str] = field(default_factory=list)


def validate_bundle(bundle: DatasetBundle) -> DatasetBundle:
    """Check every split, then fill in the split hash and the duplicate count."""
    spec = bundle.spec
    for name in SPLITS:
        if name not in bundle.splits:
            raise DataError(f"dataset {spec.name!r}: split {name!r} is missing")
        _validate_split(spec, name, bundle.splits[name])
    bundle.split_hash = split_hash(bundle.splits)
    bundle.images_sha256 = pixels_hash(bundle.splits)
    bundle.duplicates_across_splits = count_cross_split_duplicates(bundle.splits)
    return bundle


def whole_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """Labels as int64; float labels must be whole numbers (0.0, 1.0), else an error
    naming the first bad row (casting would turn 0.7 into 0 without a word)."""
    labels = np.asarray(labels)
    if labels.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
        if bad.size:
            i = int(bad[0])  # a flat index: [N] or [N, columns] labels
            row = i // labels.shape[1] if labels.ndim == 2 else i
            raise DataError(
                f"{where}: label {float(labels.flat[i])!r} in row {row} is not a whole number; "
                f"{bad.size} such labels"
            )
    elif labels.dtype.kind not in "iub":
        raise DataError(f"{where}: labels must be numbers, got {labels.dtype}")
    return labels.astype(np.int64)


def image_problem(images: np.ndarray) -> str:
    """Why an image array is not uint8 0-255 images, in words (or '' when it is)."""
    if images.dtype == np.uint8:
        return ""
    if images.dtype.kind == "f":
        if not np.isfinite(images).all():
            return f"{images.dtype} values with NaN or infinity"
        if images.size and images.min() >= 0 and images.max() <= 1:
            return f"{images.dtype} values in 0-1 (scaled images?), where uint8 0-255 is expected"
        return f"{images.dtype} values, where uint8 0-255 is expected"
    return f"{images.dtype} values, where uint8 0-255 is expected"


def _validate_split(spec: DatasetSpec, name: str, split: SplitData) -> None:
    where = f"dataset {spec.name!r}, split {name!r}"
    if len(split) == 0:
        raise DataError(f"{where} is empty")
    imgs, labels = split.images, split.labels
    if imgs.dtype != np.uint8 or imgs.ndim != 4:
        raise DataError(
            f"{where}: images must be uint8 [N, H, W, C], got {imgs.dtype} {imgs.shape}"
            + (f" ({image_problem(imgs)})" if image_problem(imgs) else "")
        )
    if imgs.shape[-1] != spec.channels:
        raise DataError(
            f"{where}: images have {imgs.shape[-1]} channels, spec says {spec.channels}"
        )
    if len(imgs) != len(labels) or len(split.ids) != len(labels):
        raise DataError(f"{where}: {len(imgs)} images, {len(labels)} labels, {len(split.ids)} ids")
    if len(set(split.ids)) != len(split.ids):
        raise DataError(f"{where}: sample ids are not unique")
    if spec.multilabel:
        if (
            labels.ndim != 2
            or labels.shape[1] != spec.num_classes
            or not np.isin(labels, (0, 1)).all()
        ):
            raise DataError(
                f"{where}: multilabel targets must be 0/1 of shape [N, {spec.num_classes}]"
            )
        return
    if labels.ndim != 1:
        raise DataError(f"{where}: labels must be one integer per image, got shape {labels.shape}")
    bad = np.flatnonzero((labels < 0) | (labels >= spec.num_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{where}: label {labels[i]} of sample {split.ids[i]!r} (row {i}) is outside "
            f"0..{spec.num_classes - 1}; {bad.size} such labels"
        )


def pixels_hash(splits: dict[str, SplitData]) -> str:
    h = hashlib.sha256()
    for name in sorted(splits):
        h.update(np.ascontiguousarray(splits[name].images).tobytes())
    return h.hexdigest()[:16]


def image_hashes(images: np.ndarray) -> list[str]:
    """Exact-content hash of each image (pixels and shape)."""
    return [
        hashlib.sha1(np.ascontiguousarray(im).tobytes() + str(im.shape).encode()).hexdigest()
        for im in images
    ]


def count_cross_split_duplicates(splits: dict[str, SplitData]) -> int:
    """Number of images whose exact pixels also appear in another split (leakage check)."""
    hashes = {name: image_hashes(split.images) for name, split in splits.items()}
    owners: dict[str, set[str]] = {}
    for name, hs in hashes.items():
        for h in hs:
            owners.setdefault(h, set()).add(name)
    return sum(len(owners[h]) > 1 for hs in hashes.values() for h in hs)


def split_hash(splits: dict[str, SplitData]) -> str:
    """Hash of the split assignment (ids and labels per split): equal hash = same split."""
    h = hashlib.sha256()
    for name in sorted(splits):
        s = splits[name]
        h.update(name.encode())
        h.update("\n".join(s.ids).encode())
        h.update(np.ascontiguousarray(s.labels, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class DatasetSource:
    """A registered dataset: what it is, and how to load it (``load(data_dir, download)``)."""

    name: str
    task: str
    load: Callable[..., DatasetBundle]
    description: str = ""


def register_dataset(name: str, task: str, description: str = ""):
    """Decorator for a loader ``fn(data_dir=None, download=None) -> DatasetBundle``."""
    from bench.api.registry import DATASETS

    def wrap(fn):
        DATASETS.add(
            name,
            DatasetSource(name, task, fn, description or (fn.__doc__ or "").strip()),
            description,
        )
        return fn

    return wrap
