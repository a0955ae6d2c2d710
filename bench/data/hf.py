"""Hugging Face `datasets` as a source: a hub name or a local path (save_to_disk or files).

Image and label columns are named in the spec. Splits named train / validation (or val)
/ test are used as they are; missing ones are made deterministically from train.
Offline (HF_HUB_OFFLINE=1) a hub name that is not cached fails at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.api.dataset import SPLIT_ALIASES, DatasetBundle, DatasetSpec, SplitData, validate_bundle
from bench.api.errors import DataError
from bench.data.folder import to_uint8_image
from bench.data.splits import split_off, stratify_key


def open_hf_dataset(path_or_name: str, data_dir):
    import datasets

    local = Path(path_or_name).expanduser()
    if not local.is_absolute() and data_dir and (Path(data_dir) / local).exists():
        local = Path(data_dir) / local
    try:
        if (local / "dataset_dict.json").exists() or (local / "dataset_info.json").exists():
            loaded = datasets.load_from_disk(str(local))
        else:
            loaded = datasets.load_dataset(str(local) if local.exists() else path_or_name)
    except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, ...)
        raise DataError(
            f"Hugging Face dataset {path_or_name!r} could not be loaded: {exc}"
        ) from exc
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    return loaded


def load_hf(
    name: str,
    path: str,
    image_column: str = "image",
    label_column: str = "label",
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
    dsd = open_hf_dataset(path, data_dir)
    parts: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}
    for hf_split, ds in dsd.items():
        ours = SPLIT_ALIASES.get(hf_split)
        if ours is None:
            continue
        for col in (image_column, label_column):
            if col not in ds.column_names:
                raise DataError(
                    f"Hugging Face dataset {path!r} split {hf_split!r}: no column {col!r} (has {ds.column_names})"
                )
        feature = ds.features[label_column]
        if class_names is None and hasattr(feature, "names"):
            class_names = list(feature.names)
        images = np.stack([to_uint8_image(im, channels, size) for im in ds[image_column]])
        labels = np.asarray(ds[label_column], dtype=np.int64)
        parts[ours] = (images, labels, [f"{hf_split}/{i}" for i in range(len(labels))])
    if "train" not in parts:
        raise DataError(f"Hugging Face dataset {path!r} has no train split (has {list(dsd)})")
    if class_names is None:
        class_names = [str(i) for i in range(int(max(p[1].max() for p in parts.values())) + 1)]
    if "test" not in parts or "val" not in parts:
        parts = _complete_splits(parts, val_fraction, test_fraction, split_seed)
    splits = {s: SplitData(*parts[s]) for s in ("train", "val", "test")}
    spec = DatasetSpec(
        name,
        task,
        tuple(class_names),
        channels,
        size,
        source=f"huggingface {path}",
        licence=licence,
        citation=citation,
    )
    return validate_bundle(
        DatasetBundle(spec, splits, files={f"hf:{path}": dsd["train"]._fingerprint})
    )


def _complete_splits(parts, val_fraction, test_fraction, seed):
    """Carve each missing split (val, test) out of train, deterministically."""
    out = dict(parts)
    for offset, (split, fraction) in enumerate((("test", test_fraction), ("val", val_fraction))):
        if split in out:
            continue
        images, labels, ids = out["train"]
        kept, taken = split_off(stratify_key(labels), None, fraction, seed + offset)
        out["train"] = (images[kept], labels[kept], [ids[i] for i in kept])
        out[split] = (images[taken], labels[taken], [ids[i] for i in taken])
    return out
