from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURE_DATA, official_file
from PIL import Image

from bench.api.dataset import DatasetBundle, DatasetSpec, SplitData, image_hashes, validate_bundle
from bench.api.errors import DataError
from bench.cli import main
from bench.data.folder import load_folder
from bench.data.hf import load_hf
from bench.data.load import load_bundle
from bench.data.locate import md5sum
from bench.data.splits import make_splits


def test_medmnist_files_load(data_dir):
    b = load_bundle("breastmnist")
    assert (
        b.spec.task == "binary"
        and b.spec.channels == 1
        and b.splits["train"].images.shape[1:] == (28, 28, 1)
    )
    assert list(b.files.values()) == [md5sum(data_dir / "breastmnist.npz")]
    r = load_bundle("retinamnist")
    assert (
        r.spec.task == "ordinal"
        and r.spec.num_classes == 5
        and r.splits["test"].images.shape[1:] == (28, 28, 3)
    )
    assert len(b.split_hash) == 16 and b.split_hash != r.split_hash
    assert b.duplicates_across_splits >= 0


def test_medmnist_official_files():
    b = load_bundle("breastmnist", data_dir=official_file("breastmnist").parent)
    assert {k: len(v) for k, v in b.splits.items()} == {"train": 546, "val": 78, "test": 156}
    assert np.bincount(b.splits["train"].labels).tolist() == [147, 399]
    assert list(b.files.values()) == ["750601b1f35ba3300ea97c75c52ff8f6"]
    r = load_bundle("retinamnist", data_dir=official_file("retinamnist").parent)
    assert r.splits["test"].images.shape == (400, 28, 28, 3)
    assert np.bincount(r.splits["test"].labels).tolist() == [174, 46, 92, 68, 20]


def test_committed_fixture_is_small_complete_and_loads():
    files = sorted(FIXTURE_DATA.glob("*.npz"))
    assert [f.name for f in files] == ["breastmnist.npz", "retinamnist.npz"]
    assert sum(f.stat().st_size for f in files) < 1_000_000
    for f in files:
        with pytest.warns(UserWarning, match="differs from the official"):
            b = load_bundle(f.stem, data_dir=FIXTURE_DATA)
        for split in b.splits.values():
            assert np.bincount(split.labels, minlength=b.spec.num_classes).min() >= 2
        with np.load(f) as npz:
            assert all(
                npz[f"{s}_images"].dtype == np.uint8
                and npz[f"{s}_labels"].shape == (len(b.splits[s]), 1)
                for s in b.splits
            )


@pytest.mark.parametrize("flag", ["breastmnist", "retinamnist"])
def test_committed_fixture_is_a_subset_of_the_official_file(flag):
    with np.load(official_file(flag)) as real, np.load(FIXTURE_DATA / f"{flag}.npz") as fixture:
        for s in ("train", "val", "test"):
            official = dict(zip(image_hashes(real[f"{s}_images"]), real[f"{s}_labels"].ravel()))
            ours = list(zip(image_hashes(fixture[f"{s}_images"]), fixture[f"{s}_labels"].ravel()))
            assert len(set(ours)) == len(ours) and all(official.get(h) == y for h, y in ours), s


def test_missing_file_offline_names_file_and_places(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(DataError) as err:
        load_bundle("dermamnist_64", data_dir=tmp_path / "given")
    msg = str(err.value)
    assert (
        "'dermamnist_64.npz'" in msg
        and str(tmp_path / "given") in msg
        and str(tmp_path / "empty") in msg
    )
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
    with (
        pytest.warns(UserWarning),
        pytest.raises(DataError, match="retinamnist.npz.*not a readable"),
    ):
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
    assert (
        validate_bundle(
            DatasetBundle(spec, {"train": train, "val": val, "test": test})
        ).duplicates_across_splits
        == 2
    )


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
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
            root / f"img{i}.png"
        )
        lines.append(f"img{i}.png,{label},{patient}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


def test_folder_dataset_by_name_with_stored_split(tmp_path):
    rows = [("benign" if i % 3 else "malignant", f"p{i // 2}") for i in range(60)]
    _write_folder(tmp_path / "ds", rows)
    b = load_folder("mine", tmp_path / "ds", size=16, channels=1, task="binary")
    assert b.spec.class_names == ("benign", "malignant") and b.splits["train"].images.shape[1:] == (
        16,
        16,
        1,
    )
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
    csv.write_text(
        csv.read_text().replace("img3.png,0", "img3.png,7").replace("img3.png", "img3.png", 1)
    )
    with pytest.raises(DataError, match="row 5: label 7 outside"):
        load_folder("bad", tmp_path / "bad", class_names=["0", "1"], task="binary")
    csv.write_text(csv.read_text().replace("img3.png,7", "img3.png,1"))
    (tmp_path / "bad" / "img4.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="row 6: cannot read image .*img4.png"):
        load_folder("bad", tmp_path / "bad", class_names=["0", "1"], task="binary")
    csv.write_text(csv.read_text().replace("img4.png", "../outside.png"))
    with pytest.raises(DataError, match="outside the data root"):
        load_folder("bad", tmp_path / "bad", class_names=["0", "1"], task="binary")


GRADES = ["none", "mild", "moderate", "severe", "proliferative"]


def test_ordinal_named_labels_take_their_order_from_class_names(tmp_path):
    _write_folder(tmp_path / "dr", [(GRADES[i % 5], f"p{i}") for i in range(50)])
    with pytest.raises(DataError) as err:
        load_folder("dr", tmp_path / "dr", task="ordinal", size=8)
    msg = str(err.value)
    assert (
        str(tmp_path / "dr" / "labels.csv") in msg
        and "['mild', 'moderate', 'none', 'proliferative', 'severe']" in msg
    )
    assert (
        "row 2: 'none'" in msg
        and "give class_names in the dataset entry, lowest grade first" in msg
    )
    b = load_folder("dr", tmp_path / "dr", task="ordinal", size=8, class_names=GRADES)
    assert b.spec.class_names == tuple(GRADES)
    manifest = (tmp_path / "dr" / "labels.splits.csv").read_text().splitlines()[1:]
    grade_of = {line.split(",")[0]: GRADES.index(line.split(",")[1]) for line in manifest}
    split = b.splits["train"]
    assert [grade_of[i] for i in split.ids] == split.labels.tolist()

    _write_folder(
        tmp_path / "num", [(str(i % 5), f"p{i}") for i in range(50)]
    )  # integer grades need no names
    assert load_folder("num", tmp_path / "num", task="ordinal", size=8).spec.class_names == (
        "0",
        "1",
        "2",
        "3",
        "4",
    )


def test_a_label_missing_from_class_names_is_named_with_its_row(tmp_path):
    _write_folder(
        tmp_path / "ds", [("benign" if i % 3 else "malignant", f"p{i}") for i in range(30)]
    )
    with pytest.raises(
        DataError,
        match=r"labels.csv: row 3: label 'benign' is not in class_names \['normal', 'malignant'\]",
    ):
        load_folder("ds", tmp_path / "ds", task="binary", class_names=["normal", "malignant"])
    with pytest.raises(
        DataError,
        match="class_names must be a list in class order, got the string 'benign, malignant'",
    ):
        load_folder("ds", tmp_path / "ds", task="binary", class_names="benign, malignant")
    assert load_folder("ds", tmp_path / "ds", task="binary", size=8).spec.class_names == (
        "benign",
        "malignant",
    )


def _with_split_column(root, splits):
    csv = root / "labels.csv"
    lines = [
        ",".join(line.split(",")[:3]) for line in csv.read_text().splitlines()
    ]  # path,label,patient_id
    csv.write_text(
        "\n".join([lines[0] + ",split"] + [f"{line},{s}" for line, s in zip(lines[1:], splits)])
        + "\n"
    )


def test_unknown_split_values_are_named_with_their_rows(tmp_path):
    _write_folder(tmp_path / "ds", [(str(i % 2), f"p{i}") for i in range(60)])
    splits = ["test" if i % 5 == 0 else "valid" if i % 5 == 1 else "train" for i in range(60)]
    _with_split_column(tmp_path / "ds", splits)
    assert {k: len(v) for k, v in load_folder("ds", tmp_path / "ds", size=8).splits.items()} == {
        "train": 36,
        "val": 12,
        "test": 12,
    }
    for i in range(2, 60, 6):  # 10 rows of 'Train', one 'tst'
        splits[i] = "Train"
    splits[55] = "tst"
    _with_split_column(tmp_path / "ds", splits)
    with pytest.raises(DataError) as err:
        load_folder("ds", tmp_path / "ds", size=8)
    assert str(err.value) == (
        f"manifest {tmp_path / 'ds' / 'labels.csv'}: column 'split' has unknown values: "
        "'Train' at rows 4, 10, 16, 22, 28 and 5 more; 'tst' at row 57; allowed: train, val (or valid, validation), test"
    )


def test_an_unwritable_split_file_is_named_and_an_unchanged_one_is_not_rewritten(
    tmp_path, monkeypatch
):
    _write_folder(tmp_path / "ds", [(str(i % 2), f"p{i}") for i in range(30)])
    split_file = tmp_path / "ds" / "labels.splits.csv"
    split_file.mkdir()  # not writable as a file, even for root
    with pytest.raises(DataError) as err:
        load_folder("ds", tmp_path / "ds", size=8)
    assert str(err.value) == (
        f"manifest {tmp_path / 'ds' / 'labels.csv'}: cannot write the split file {split_file} (Is a directory); "
        f"make {tmp_path / 'ds'} writable, or add a 'split' column (train, val or test on every row) to the manifest"
    )
    split_file.rmdir()
    first = load_folder("ds", tmp_path / "ds", size=8)

    def read_only(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "write_text", read_only)
    assert (
        load_folder("ds", tmp_path / "ds", size=8).split_hash == first.split_hash
    )  # stored split unchanged: no write
    with pytest.raises(
        DataError, match=r"cannot write the split file .*labels.splits.csv \(Permission denied\)"
    ):
        load_folder("ds", tmp_path / "ds", size=8, split_seed=1)


def test_an_unknown_inline_dataset_option_is_named_with_a_suggestion(tmp_path, capsys):
    entry = {"name": "myfolder", "loader": "folder", "root": str(tmp_path), "manifset": "x.csv"}
    with pytest.raises(DataError) as err:
        load_bundle(entry)
    assert str(err.value).startswith(
        "dataset 'myfolder': unknown option 'manifset' for loader 'folder' (did you mean 'manifest'?); "
        "valid options: root, manifest, task, size, channels, class_names,"
    )
    with pytest.raises(DataError, match="dataset 'myfolder': loader 'folder' needs option 'root'"):
        load_bundle({"name": "myfolder", "loader": "folder"})
    suite = tmp_path / "typo.yaml"
    suite.write_text(
        f"datasets: [{{name: myfolder, loader: folder, root: {tmp_path}, manifset: x.csv}}]\n"
        "methods: [resnet18]\npresets: {smoke: {budget: {epochs: 1}}}\n"
    )
    assert (
        main(
            [
                "run",
                "--suite",
                str(suite),
                "--results-dir",
                str(tmp_path / "r"),
                "--work-dir",
                str(tmp_path / "w"),
            ]
        )
        == 2
    )
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and err_lines[0].startswith(
        "bench: error: dataset 'myfolder': unknown option 'manifset'"
    )


def test_hf_dataset_from_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    feats = datasets.Features(
        {"img": datasets.Image(), "y": datasets.ClassLabel(names=["no", "mild", "severe"])}
    )
    train = datasets.Dataset.from_dict(
        {
            "img": [
                Image.fromarray(rng.integers(0, 255, (10, 10), dtype=np.uint8)) for _ in range(40)
            ],
            "y": [i % 3 for i in range(40)],
        },
        features=feats,
    )
    datasets.DatasetDict({"train": train, "test": train.select(range(9))}).save_to_disk(
        str(tmp_path / "hfds")
    )
    b = load_hf(
        "hfds", str(tmp_path / "hfds"), image_column="img", label_column="y", size=12, channels=1
    )
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


def test_a_split_too_small_to_stratify_is_still_made():
    """30 images in 5 classes: 10 % for validation is 3 images, fewer than the classes, so
    sklearn cannot stratify it (it raised a ValueError traceback); it is shuffled instead."""
    from bench.data.splits import make_splits

    labels = np.arange(30) % 5
    out = make_splits(labels)
    assert sorted(set(out)) == ["test", "train", "val"] and (out == "val").sum() == 3
    assert np.array_equal(out, make_splits(labels))  # deterministic


def test_a_download_is_kept_whole_and_only_with_the_expected_md5(tmp_path):
    """A file URL stands in for the server: the bytes arrive whole under the target name;
    a wrong MD5 keeps nothing (no target, no partial file) and names both digests."""
    from bench.data.locate import _download

    source = tmp_path / "served" / "tiny.npz"
    source.parent.mkdir()
    source.write_bytes(bytes(range(256)) * 4099)  # > one 1 MiB read
    cache = tmp_path / "cache"
    _download(source.as_uri(), cache / "tiny.npz", md5sum(source))
    assert (cache / "tiny.npz").read_bytes() == source.read_bytes()
    assert [p.name for p in cache.iterdir()] == ["tiny.npz"]
    with pytest.raises(DataError, match=r"has MD5 [0-9a-f]{32}, expected 0{32}; not kept"):
        _download(source.as_uri(), cache / "other.npz", "0" * 32)
    assert [p.name for p in cache.iterdir()] == ["tiny.npz"]
    with pytest.raises(DataError, match="could not download"):
        _download((tmp_path / "missing.npz").as_uri(), cache / "missing.npz", None)
    assert [p.name for p in cache.iterdir()] == ["tiny.npz"]
