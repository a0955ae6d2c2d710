
import numpy as np
import pytest
from PIL import Image

from bench.data.folder import load_folder
from bench.data.hf import load_hf
from bench.data.load import load_bundle
from bench.data.spec import DatasetBundle, DatasetSpec, SplitData, validate_bundle
from bench.data.splits import make_splits
from bench.errors import DataError


def test_medmnist_real_files(data_dir):
    b = load_bundle("breastmnist")
    assert {k: len(v) for k, v in b.splits.items()} == {"train": 546, "val": 78, "test": 156}
    assert b.spec.task == "binary" and b.spec.channels == 1
    assert np.bincount(b.splits["train"].labels).tolist() == [147, 399]
    assert list(b.files.values()) == ["750601b1f35ba3300ea97c75c52ff8f6"]
    r = load_bundle("retinamnist")
    assert r.spec.task == "ordinal" and r.spec.num_classes == 5 and r.splits["test"].images.shape == (400, 28, 28, 3)
    assert np.bincount(r.splits["test"].labels).tolist() == [174, 46, 92, 68, 20]
    assert len(b.split_hash) == 16 and b.split_hash != r.split_hash
    assert b.duplicates_across_splits >= 0


def test_missing_file_offline_names_file_and_places(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(DataError) as err:
        load_bundle("dermamnist_64", data_dir=tmp_path / "given")
    msg = str(err.value)
    assert "'dermamnist_64.npz'" in msg and str(tmp_path / "given") in msg and str(tmp_path / "empty") in msg
    assert "offline" in msg


def test_md5_mismatch_warns_and_records(data_dir, tmp_path):
    copy = tmp_path / "breastmnist.npz"
    with np.load(data_dir / "breastmnist.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    np.savez_compressed(copy, **arrays)
    with pytest.warns(UserWarning, match="differs from the official"):
        b = load_bundle("breastmnist", data_dir=tmp_path)
    (md5,) = b.files.values()
    assert md5 != "750601b1f35ba3300ea97c75c52ff8f6" and len(md5) == 32


def test_corrupt_npz_is_named(tmp_path):
    (tmp_path / "retinamnist.npz").write_bytes(b"not a zip file")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="retinamnist.npz.*not a readable"):
        load_bundle("retinamnist", data_dir=tmp_path)


def test_label_out_of_range_and_empty_split_are_named():
    spec = DatasetSpec("toy", "binary", ("a", "b"), 1, 4)
    img = np.zeros((3, 4, 4, 1), np.uint8)
    ok = SplitData(img, np.array([0, 1, 0]), ["x0", "x1", "x2"])
    bad = SplitData(img, np.array([0, 2, 1]), ["t0", "t1", "t2"])
    with pytest.raises(DataError, match="label 2 of sample 't1'.*outside 0..1"):
        validate_bundle(DatasetBundle(spec, {"train": ok, "val": ok, "test": bad}))
    empty = SplitData(img[:0], np.array([], int), [])
    with pytest.raises(DataError, match="split 'val' is empty"):
        validate_bundle(DatasetBundle(spec, {"train": ok, "val": empty, "test": ok}))


def test_cross_split_duplicates_are_counted():
    spec = DatasetSpec("toy", "binary", ("a", "b"), 1, 2)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (6, 2, 2, 1), dtype=np.uint8)
    train = SplitData(imgs[:3], np.array([0, 1, 0]), ["a", "b", "c"])
    val = SplitData(imgs[3:5], np.array([1, 0]), ["d", "e"])
    test = SplitData(np.concatenate([imgs[:1], imgs[5:]]), np.array([0, 1]), ["f", "g"])  # f == a
    assert validate_bundle(DatasetBundle(spec, {"train": train, "val": val, "test": test})).duplicates_across_splits == 2


def test_grouped_splits_are_deterministic_and_leak_free():
    rng = np.random.default_rng(1)
    patients = np.repeat(np.arange(60), 3)
    labels = rng.integers(0, 3, len(patients))
    a = make_splits(labels, patients, 0.1, 0.2, seed=7)
    assert (a == make_splits(labels, patients, 0.1, 0.2, seed=7)).all()
    assert not (a == make_splits(labels, patients, 0.1, 0.2, seed=8)).all()
    for p in range(60):
        assert len(set(a[patients == p])) == 1
    frac = {s: (a == s).mean() for s in ("train", "val", "test")}
    assert 0.12 < frac["test"] < 0.28 and 0.04 < frac["val"] < 0.18


def _write_folder(root, rows, size=8):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["path,label,patient_id"]
    for i, (label, patient) in enumerate(rows):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / f"img{i}.png")
        lines.append(f"img{i}.png,{label},{patient}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


def test_folder_dataset_by_name_with_stored_split(tmp_path):
    rows = [("benign" if i % 3 else "malignant", f"p{i // 2}") for i in range(60)]
    _write_folder(tmp_path / "ds", rows)
    b = load_folder("mine", tmp_path / "ds", size=16, channels=1, task="binary")
    assert b.spec.class_names == ("benign", "malignant") and b.splits["train"].images.shape[1:] == (16, 16, 1)
    stored = (tmp_path / "ds" / "labels.splits.csv").read_text().splitlines()
    assert stored[0].endswith(",split") and len(stored) == 61
    again = load_folder("mine", tmp_path / "ds", size=16, channels=1, task="binary")
    assert again.split_hash == b.split_hash


def test_folder_multilabel_and_errors(tmp_path):
    rows = [("a|b" if i % 2 else "c", f"p{i}") for i in range(30)]
    _write_folder(tmp_path / "ml", rows)
    b = load_folder("ml", tmp_path / "ml", task="multilabel", size=8)
    assert b.spec.class_names == ("a", "b", "c")
    assert b.splits["train"].labels.shape[1] == 3 and set(b.splits["train"].labels.sum(1)) <= {1, 2}

    _write_folder(tmp_path / "bad", [("0", "p0")] * 20)
    csv = tmp_path / "bad" / "labels.csv"
    csv.write_text(csv.read_text().replace("img3.png,0", "img3.png,7").replace("img3.png", "img3.png", 1))
    with pytest.raises(DataError, match="row 5: label 7 outside"):
        load_folder("bad", tmp_path / "bad", class_names=["0", "1"], task="binary")
    csv.write_text(csv.read_text().replace("img3.png,7", "img3.png,1"))
    (tmp_path / "bad" / "img4.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="row 6: cannot read image .*img4.png"):
        load_folder("bad", tmp_path / "bad", class_names=["0", "1"], task="binary")
    csv.write_text(csv.read_text().replace("img4.png", "../outside.png"))
    with pytest.raises(DataError, match="outside the data root"):
        load_folder("bad", tmp_path / "bad", class_names=["0", "1"], task="binary")


def test_hf_dataset_from_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    feats = datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=["no", "mild", "severe"])})
    train = datasets.Dataset.from_dict(
        {"img": [Image.fromarray(rng.integers(0, 255, (10, 10), dtype=np.uint8)) for _ in range(40)], "y": [i % 3 for i in range(40)]}, features=feats)
    datasets.DatasetDict({"train": train, "test": train.select(range(9))}).save_to_disk(str(tmp_path / "hfds"))
    b = load_hf("hfds", str(tmp_path / "hfds"), image_column="img", label_column="y", size=12, channels=1)
    assert b.spec.class_names == ("no", "mild", "severe")
    assert len(b.splits["test"]) == 9 and len(b.splits["train"]) + len(b.splits["val"]) == 40
    assert b.splits["val"].images.shape[1:] == (12, 12, 1)
    with pytest.raises(DataError, match="no column 'label'"):
        load_hf("hfds", str(tmp_path / "hfds"), image_column="img")


def test_synthetic_is_deterministic_and_flagged():
    a, b = load_bundle("synthetic_severity"), load_bundle("synthetic_severity")
    assert a.spec.synthetic and "SYNTHETIC" in a.spec.source and a.split_hash == b.split_hash
    assert np.array_equal(a.splits["test"].images, b.splits["test"].images)
    # the ordinal signal is real: mean brightness grows with the grade
    s = a.splits["train"]
    means = [s.images[s.labels == g].mean() for g in range(5)]
    assert all(x < y for x, y in zip(means, means[1:]))
