"""Paired images for restoration: (degraded input, clean target) patches.

Three kinds of source, declared inline in a suite (``loader: paired``):

- ``images: [skimage, pydicom, medmnist:breastmnist, ...]`` + ``degradation``: real
  clean images and a declared degradation, ``{kind: gaussian, sigma: 0.1}`` (sigma in
  units of the [0, 1] data range, not clipped) or ``{kind: poisson, peak: 30}``
  (photon counts at full intensity: low-dose-like). skimage ships a fundus photo,
  microaneurysms, cells and an IHC slide; pydicom its CT and MR test files (each
  normalised by its own min and max); MedMNIST files give many small images.
- ``folders: {input: DIR, target: DIR}``: paired folders (same file names), e.g. two MRI
  modalities of the same slice, for modality conversion.
- ``hf: {path: NAME_OR_DIR, input_column: ..., target_column: ...}``: a Hugging Face
  dataset with an input and a target image column.

Splits are made by *source image* (MedMNIST keeps its official splits; otherwise images
are ordered by a hash of their id and dealt 60/20/20), and patches are cut from each
image inside its split (grid of ``patch`` px, stride ``patch`` in val/test and
``train_stride`` in train, at most ``max_patches_per_image`` evenly spaced), so no
patch of a test image is ever in training. The noise of each patch is seeded by its
id, so the data are the same whatever the order of loading.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.api.dataset import SPLITS
from bench.api.errors import DataError


@dataclass(frozen=True)
class PairedSpec:
    name: str
    channels: int
    size: int  # patch side
    degradation: dict
    data_range: float = 1.0
    source: str = ""
    licence: str = ""
    task: str = "restoration"
    class_names: tuple = ()
    synthetic: bool = False
    citation: str = ""


@dataclass
class PairedSplit:
    inputs: np.ndarray  # float32 [N, p, p, C]
    targets: np.ndarray  # float32 [N, p, p, C] in [0, 1]
    ids: list[str]  # "<image id>@<row>,<col>"
    images: list[str]  # the source image of each patch

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class PairedBundle:
    spec: PairedSpec
    splits: dict[str, PairedSplit]
    files: dict[str, str] = field(default_factory=dict)
    split_hash: str = ""
    duplicates_across_splits: int = 0  # source images in more than one split (must be 0)


# ------------------------------------------------------------------------ clean images


def _to_channels(im: np.ndarray, channels: int) -> np.ndarray:
    im = np.asarray(im, dtype=np.float32)
    if im.ndim == 2:
        im = im[..., None]
    if im.shape[-1] == 4:
        im = im[..., :3]
    if channels == 1 and im.shape[-1] == 3:
        im = (im @ np.array([0.2125, 0.7154, 0.0721], dtype=np.float32))[
            ..., None
        ]  # skimage.color.rgb2gray weights
    elif channels == 3 and im.shape[-1] == 1:
        im = np.repeat(im, 3, axis=-1)
    return im


def _unit_range(im: np.ndarray) -> np.ndarray:
    im = np.asarray(im, dtype=np.float32)
    lo, hi = float(im.min()), float(im.max())
    return (im - lo) / (hi - lo) if hi > lo else np.zeros_like(im)


def skimage_images() -> list[tuple[str, np.ndarray, str]]:
    from skimage import data

    out = []
    for name in ("retina", "microaneurysms", "cell", "immunohistochemistry"):
        im = getattr(data, name)()
        out.append((f"skimage/{name}", im.astype(np.float32) / 255.0, f"skimage.data.{name}"))
    return out


def pydicom_images(modalities=("CT", "MR")) -> list[tuple[str, np.ndarray, str]]:
    """pydicom's bundled CT/MR test files with 2-D pixel data (no download attempted)."""
    import warnings

    import pydicom
    from pydicom.data import get_testdata_files

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = sorted(p for p in get_testdata_files("*.dcm") if Path(p).is_file())
        for path in paths:
            try:
                ds = pydicom.dcmread(path)
                if getattr(ds, "Modality", None) not in modalities:
                    continue
                px = ds.pixel_array
            except Exception:  # noqa: BLE001 - compressed files need codecs we may not have
                continue
            if px.ndim == 3 and px.shape[-1] not in (3, 4):
                px = px[px.shape[0] // 2]  # a multi-frame volume: its middle slice
            if px.ndim != 2 or min(px.shape) < 32:
                continue
            out.append(
                (
                    f"pydicom/{Path(path).name}",
                    _unit_range(px),
                    f"pydicom test file {Path(path).name} ({ds.Modality})",
                )
            )
    if not out:
        raise DataError("pydicom: no CT/MR test file with readable pixel data was found")
    return out


def medmnist_images(
    flag: str, data_dir=None, download=None
) -> tuple[dict[str, list[tuple[str, np.ndarray, str]]], dict]:
    """A MedMNIST file's images per official split (each 28 px image is one source
    image), and its files with their MD5s."""
    from bench.api.registry import DATASETS  # the registered MedMNIST source, not the suite loader

    bundle = DATASETS.get(flag).load(data_dir=data_dir, download=download)
    return {
        s: [
            (f"{flag}/{i}", im.astype(np.float32) / 255.0, flag)
            for i, im in zip(split.ids, split.images)
        ]
        for s, split in bundle.splits.items()
    }, bundle.files


def unique_images(items: list) -> list:
    """Drop images whose pixels repeat an earlier one (pydicom ships one MR slice in
    seven encodings: kept once, or it would sit in train and test at once)."""
    seen, out = set(), []
    for item in sorted(items, key=lambda it: it[0]):
        h = hashlib.sha256(np.ascontiguousarray(item[1], dtype=np.float32).tobytes()).hexdigest()
        if h not in seen:
            seen.add(h)
            out.append(item)
    return out


def _hash_order(ids: list[str]) -> list[str]:
    return sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())


def deal_images(items: list, fractions=(0.6, 0.2, 0.2)) -> dict[str, list]:
    """Whole images to train/val/test by a hash of their id (each split gets >= 1)."""
    if len(items) < 3:
        raise DataError(f"at least 3 source images are needed for train/val/test, got {len(items)}")
    order = {i: k for k, i in enumerate(_hash_order([it[0] for it in items]))}
    items = sorted(items, key=lambda it: order[it[0]])
    n = len(items)
    n_val = max(1, int(round(fractions[1] * n)))
    n_test = max(1, int(round(fractions[2] * n)))
    return {
        "train": items[: n - n_val - n_test],
        "val": items[n - n_val - n_test : n - n_test],
        "test": items[n - n_test :],
    }


# --------------------------------------------------------------------------- patches


def patch_grid(h: int, w: int, patch: int, stride: int, limit: int | None) -> list[tuple[int, int]]:
    """Upper-left corners of a patch grid, at most `limit` evenly spaced ones."""
    if h < patch or w < patch:
        return []
    corners = [
        (r, c) for r in range(0, h - patch + 1, stride) for c in range(0, w - patch + 1, stride)
    ]
    if limit and len(corners) > limit:
        corners = [corners[i] for i in np.linspace(0, len(corners) - 1, limit).round().astype(int)]
    return corners


def degrade(clean: np.ndarray, degradation: dict, key: str) -> np.ndarray:
    """The declared degradation of one clean patch, seeded by the patch id."""
    seed = int.from_bytes(
        hashlib.sha256(f"{key}|{sorted(degradation.items())}".encode()).digest()[:8], "little"
    )
    rng = np.random.default_rng(seed)
    kind = degradation.get("kind")
    if kind == "gaussian":
        return (clean + rng.normal(0.0, float(degradation["sigma"]), clean.shape)).astype(
            np.float32
        )
    if kind == "poisson":
        peak = float(degradation["peak"])
        return (rng.poisson(np.clip(clean, 0, 1) * peak) / peak).astype(np.float32)
    raise DataError(
        f"unknown degradation {degradation!r}: use {{kind: gaussian, sigma: S}} or {{kind: poisson, peak: P}}"
    )


def cut_pairs(
    items: list, patch: int, stride: int, limit: int | None, degradation: dict | None, channels: int
) -> PairedSplit:
    """items: (id, clean [H, W, C]) or (id, clean, target-or-None) -> patches."""
    inputs, targets, ids, images = [], [], [], []
    for item in items:
        image_id, first = item[0], _to_channels(item[1], channels)
        second = (
            _to_channels(item[2], channels)
            if len(item) > 2 and isinstance(item[2], np.ndarray)
            else None
        )
        for r, c in patch_grid(first.shape[0], first.shape[1], patch, stride, limit):
            pid = f"{image_id}@{r},{c}"
            a = first[r : r + patch, c : c + patch]
            if second is None:  # clean image + declared degradation
                inputs.append(degrade(a, degradation, pid))
                targets.append(a)
            else:  # paired (input, target)
                inputs.append(a)
                targets.append(second[r : r + patch, c : c + patch])
            ids.append(pid)
            images.append(image_id)
    if not ids:
        raise DataError(f"no {patch} px patch could be cut from {len(items)} images (too small?)")
    return PairedSplit(
        np.stack(inputs).astype(np.float32), np.stack(targets).astype(np.float32), ids, images
    )


# ---------------------------------------------------------------------------- loader


def _paired_folders(spec: dict, data_dir) -> list:
    from PIL import Image

    root = Path(data_dir or ".")
    a, b = (
        Path(spec[k]) if Path(spec[k]).is_absolute() else root / spec[k]
        for k in ("input", "target")
    )
    for d in (a, b):
        if not d.is_dir():
            raise DataError(f"paired folders: {d} is not a folder")
    names = sorted(p.name for p in a.iterdir() if p.is_file())
    missing = [n for n in names if not (b / n).is_file()]
    if missing:
        raise DataError(
            f"paired folders: {len(missing)} input images have no target of the same name in {b}, e.g. {missing[0]}"
        )
    items = []
    for n in names:
        try:
            items.append(
                (
                    f"folder/{n}",
                    np.asarray(Image.open(a / n)).astype(np.float32) / 255.0,
                    np.asarray(Image.open(b / n)).astype(np.float32) / 255.0,
                )
            )
        except OSError as exc:
            raise DataError(f"paired folders: cannot read {n}: {exc}") from exc
    return items


def _hf_pairs(spec: dict, data_dir) -> list:
    from bench.data.hf import open_hf_dataset

    dsd = open_hf_dataset(spec["path"], data_dir)
    items = []
    for split_name, ds in dsd.items():
        for col in (spec.get("input_column", "input"), spec.get("target_column", "target")):
            if col not in ds.column_names:
                raise DataError(
                    f"Hugging Face dataset {spec['path']!r}: no column {col!r} (has {ds.column_names})"
                )
        for i, row in enumerate(ds):
            items.append(
                (
                    f"hf/{split_name}/{i}",
                    np.asarray(row[spec.get("input_column", "input")]).astype(np.float32) / 255.0,
                    np.asarray(row[spec.get("target_column", "target")]).astype(np.float32) / 255.0,
                )
            )
    return items


def load_paired(
    name: str,
    patch: int = 32,
    channels: int = 1,
    images: list[str] | None = None,
    degradation: dict | None = None,
    folders: dict | None = None,
    hf: dict | None = None,
    train_stride: int | None = None,
    max_patches_per_image: int | None = 64,
    licence: str = "",
    task: str = "restoration",
    data_dir=None,
    download=None,
) -> PairedBundle:
    if sum(x is not None for x in (images, folders, hf)) != 1:
        raise DataError(
            f"paired dataset {name!r}: give exactly one of images (+ degradation), folders, hf"
        )
    if images is not None and not degradation:
        raise DataError(f"paired dataset {name!r}: clean images need a declared degradation")
    per_split: dict[str, list] = {s: [] for s in SPLITS}
    files, sources = {}, []
    if images is not None:
        pooled = []
        for src in images:
            if src == "skimage":
                pooled += skimage_images()
            elif src == "pydicom":
                pooled += pydicom_images()
            elif src.startswith("medmnist:"):
                splits, f = medmnist_images(src.split(":", 1)[1], data_dir, download)
                files.update(f)
                for s in SPLITS:
                    per_split[s] += splits[s]
            else:
                raise DataError(
                    f"paired dataset {name!r}: unknown image source {src!r} (skimage, pydicom, medmnist:<flag>)"
                )
            sources.append(src)
        if pooled:
            pooled = unique_images(pooled)
            for s, items in deal_images(pooled).items():
                per_split[s] += items
        per_split = {s: [(i, im) for i, im, *_ in items] for s, items in per_split.items()}
    else:
        pairs = (
            _paired_folders(folders, data_dir) if folders is not None else _hf_pairs(hf, data_dir)
        )
        per_split = deal_images(pairs)
        sources.append("paired folders" if folders is not None else f"huggingface {hf['path']}")
    out = {}
    for s in SPLITS:
        stride = (train_stride or patch) if s == "train" else patch
        out[s] = cut_pairs(
            per_split[s], patch, stride, max_patches_per_image, degradation, channels
        )
    bundle = PairedBundle(
        PairedSpec(
            name,
            channels,
            patch,
            dict(degradation or {"kind": "paired"}),
            source=", ".join(sources),
            licence=licence,
            task=task,
        ),
        out,
        files,
    )
    bundle.split_hash = paired_split_hash(out)
    owners = {}
    for s, split in out.items():
        for im in set(split.images):
            owners.setdefault(im, set()).add(s)
    bundle.duplicates_across_splits = sum(len(v) > 1 for v in owners.values())
    if bundle.duplicates_across_splits:
        raise DataError(
            f"paired dataset {name!r}: {bundle.duplicates_across_splits} source images in several splits"
        )
    return bundle


def paired_split_hash(splits: dict[str, PairedSplit]) -> str:
    h = hashlib.sha256()
    for s in sorted(splits):
        h.update(s.encode())
        h.update("\n".join(splits[s].ids).encode())
        h.update(np.ascontiguousarray(splits[s].inputs).tobytes())
    return h.hexdigest()[:16]
