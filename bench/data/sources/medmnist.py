"""MedMNIST v2 / MedMNIST+ 2D datasets: every flag at 28, 64, 128 and 224 px.

File names, URLs and MD5s come from the official INFO table (``medmnist_info.json``,
taken from the `medmnist` package 3.0.2). Splits are the official ones.
Citation: Yang et al., "MedMNIST v2", Scientific Data 2023; plus each source dataset.
"""

from __future__ import annotations

import json
import zipfile
from functools import partial
from pathlib import Path

import numpy as np

from bench.api.dataset import (
    DatasetBundle,
    DatasetSource,
    DatasetSpec,
    SplitData,
    image_problem,
    validate_bundle,
    whole_labels,
)
from bench.api.errors import DataError
from bench.api.registry import DATASETS
from bench.data.locate import locate_file

INFO = json.loads((Path(__file__).with_name("medmnist_info.json")).read_text())
SIZES = (28, 64, 128, 224)
TASK_NAMES = {
    "binary-class": "binary",
    "multi-class": "multiclass",
    "ordinal-regression": "ordinal",
    "multi-label, binary-class": "multilabel",
}
CITATION = (
    "Yang, J. et al. MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D "
    "biomedical image classification. Scientific Data 10, 41 (2023)."
)


def file_name(flag: str, size: int) -> str:
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def load_medmnist(flag: str, size: int, data_dir=None, download=None) -> DatasetBundle:
    info = INFO["datasets"][flag]
    fname = file_name(flag, size)
    expected = info["md5"][str(size)]
    path, md5 = locate_file(
        fname,
        subdir="medmnist",
        expected_md5=expected,
        url=INFO["url_template"].format(file=fname),
        data_dir=data_dir,
        download=download,
    )
    task = TASK_NAMES[info["task"]]
    spec = DatasetSpec(
        name=dataset_name(flag, size),
        task=task,
        class_names=tuple(info["labels"]),
        channels=info["n_channels"],
        size=size,
        source=f"MedMNIST {fname} ({path})",
        licence=info["license"],
        citation=CITATION,
    )
    try:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable MedMNIST .npz file ({exc})") from exc
    splits = {}
    for split in ("train", "val", "test"):
        for key in (f"{split}_images", f"{split}_labels"):
            if key not in arrays:
                raise DataError(f"{path}: array {key!r} is missing (has {sorted(arrays)})")
        images = arrays[f"{split}_images"]
        if image_problem(images):
            raise DataError(f"{path}: {split}_images holds {image_problem(images)}")
        if images.ndim == 3:
            images = images[..., None]
        labels = whole_labels(arrays[f"{split}_labels"], f"{path}: {split}_labels")
        if task != "multilabel":
            labels = labels.reshape(-1)
        splits[split] = SplitData(images, labels, [f"{split}/{i}" for i in range(len(labels))])
    notes = [] if md5 == expected else [f"{fname}: MD5 {md5} is not the official {expected}"]
    return validate_bundle(DatasetBundle(spec, splits, files={str(path): md5}, notes=notes))


def dataset_name(flag: str, size: int) -> str:
    return flag if size == 28 else f"{flag}_{size}"


for _flag, _info in INFO["datasets"].items():
    for _size in SIZES:
        _name = dataset_name(_flag, _size)
        _desc = f"MedMNIST {_flag} {_size}px: {TASK_NAMES[_info['task']]}, {len(_info['labels'])} classes ({_info['license']})"
        DATASETS.add(
            _name,
            DatasetSource(
                _name, TASK_NAMES[_info["task"]], partial(load_medmnist, _flag, _size), _desc
            ),
            _desc,
        )
