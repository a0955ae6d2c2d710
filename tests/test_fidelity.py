"""Generation metrics (bench.tasks.generation.fidelity): torch-fidelity's FID/KID/precision-recall on
features of a harness classifier, with input checks and per-class FID."""

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.api.errors import BenchError
from bench.tasks.generation.fidelity import (
    as_fidelity_images,
    extract_features,
    fidelity_metrics,
    inception_extractor,
    per_class_fid,
    save_classifier_extractor,
)


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    """A ResNet-18 (3x3 stem, random weights, fixed seed) saved as a bench-classifier."""
    from bench.nn.timm_models import TimmArch, build_timm_model

    torch.manual_seed(0)
    model = build_timm_model(TimmArch(model="resnet18", small_input_stem=True), 1, 2)
    return save_classifier_extractor(
        tmp_path_factory.mktemp("fx") / "fx.pt",
        model,
        model_name="resnet18",
        in_chans=1,
        num_classes=2,
        input_size=None,
        small_input_stem=True,
        trained_on={"test": True},
    )


def test_an_extractor_file_appears_whole_and_as_a_direct_save(tmp_path, monkeypatch):
    """Sweep workers sharing a cache load the extractor file as soon as it exists (one
    loaded a half-written file: 'failed finding central directory'): it is written
    elsewhere and renamed into place, with a direct save's bytes (its version)."""
    import hashlib

    from bench.nn.timm_models import TimmArch, build_timm_model
    from bench.tasks.generation import fidelity

    torch.manual_seed(0)
    model = build_timm_model(TimmArch(model="resnet18", small_input_stem=True), 1, 2)
    target = tmp_path / "cache" / "k.extractor.pt"
    seen = []
    real_save = torch.save

    def watched_save(obj, f, *args, **kwargs):
        seen.append((Path(f), target.exists()))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(fidelity.torch, "save", watched_save)
    ex = save_classifier_extractor(
        target, model, model_name="resnet18", in_chans=1, num_classes=2,
        input_size=None, small_input_stem=True, trained_on={},
    )  # fmt: skip
    monkeypatch.undo()
    assert len(seen) == 1 and seen[0][0] != target and seen[0][0].name == target.name
    assert not seen[0][1]  # nothing at the final name while it was being written
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no leftovers
    direct = tmp_path / "direct" / target.name
    direct.parent.mkdir()
    torch.save(torch.load(target, weights_only=True), direct)
    digest = hashlib.sha256(direct.read_bytes()).hexdigest()[:16]
    assert ex.info["version"] == digest


@pytest.fixture(scope="module")
def real_images():
    from conftest import real_data_dir

    with np.load(real_data_dir() / "breastmnist.npz") as f:
        return f["val_images"][..., None], f["val_labels"].ravel()


def noisy(images, sigma, seed=0):
    g = np.random.default_rng(seed)
    return np.clip(images + g.normal(0, sigma, images.shape), 0, 255).astype(np.uint8)


def test_fid_is_zero_against_itself_and_grows_with_noise(extractor, real_images):
    images, _ = real_images
    real = extract_features(images, extractor)
    assert real.shape == (len(images), 512)
    fids = [
        fidelity_metrics(real, extract_features(noisy(images, s), extractor), kid_subset_size=50)[
            "fid"
        ]
        for s in (0, 8, 32)
    ]
    assert abs(fids[0]) < 1e-6 * (1 + fids[2])
    assert 0 < fids[1] < fids[2]
    same = fidelity_metrics(real, real, kid_subset_size=50)
    assert abs(same["kid_mean"]) < 1e-3 and same["precision"] == 1.0 and same["recall"] == 1.0


def test_our_fid_equals_torch_fidelity_calculate_metrics(extractor, real_images):
    import torch_fidelity

    from bench.tasks.generation.fidelity import _fidelity, _Images

    images, _ = real_images
    gen = noisy(images, 16)
    ours = fidelity_metrics(
        extract_features(images, extractor), extract_features(gen, extractor), kid_subset_size=50
    )
    _fidelity()
    ref = torch_fidelity.calculate_metrics(
        input1=_Images(as_fidelity_images(gen, "g")),
        input2=_Images(as_fidelity_images(images, "r")),
        fid=True,
        kid=True,
        prc=True,
        kid_subset_size=50,
        feature_extractor=extractor.name,
        cuda=False,
        cache=False,
        verbose=False,
        save_cpu_ram=True,
        **extractor.kwargs,
    )
    assert ours["fid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-4)
    assert ours["kid_mean"] == pytest.approx(
        ref["kernel_inception_distance_mean"], rel=1e-3, abs=1e-7
    )  # float64 vs float32 features
    assert (ours["precision"], ours["recall"]) == pytest.approx((ref["precision"], ref["recall"]))


def test_kid_refuses_too_few_samples_with_a_clear_message(extractor, real_images):
    images, _ = real_images
    f = extract_features(images[:20], extractor)
    with pytest.raises(
        BenchError,
        match="KID needs at least kid_subset_size = 50 images in each set; got 20 generated and 20 real",
    ):
        fidelity_metrics(f, f, kid_subset_size=50)


def test_per_class_fid_is_computed_per_class(extractor, real_images):
    images, labels = real_images
    real = extract_features(images, extractor)
    gen_images = images.copy()
    gen_images[labels == 1] = noisy(images[labels == 1], 32)  # only class 1 is degraded
    gen = extract_features(gen_images, extractor)
    fid = per_class_fid(real, labels, gen, labels, 3)
    assert abs(fid[0]) < 1e-6 and fid[1] > 1e-3 and fid[2] is None  # class 2 has no images


def test_inputs_are_checked():
    with pytest.raises(BenchError, match="uint8"):
        as_fidelity_images(np.zeros((4, 8, 8, 1), dtype=np.float32), "generated")
    with pytest.raises(BenchError, match=r"\[N, H, W, 1 or 3\]"):
        as_fidelity_images(np.zeros((4, 8, 8, 2), dtype=np.uint8), "generated")
    assert as_fidelity_images(np.zeros((4, 8, 8, 1), dtype=np.uint8), "g").shape == (4, 3, 8, 8)
    with pytest.raises(BenchError, match="weights-inception-2015-12-05"):
        inception_extractor("/nonexistent/inception.pth")


def test_extractor_version_follows_its_weights(extractor, tmp_path):
    from bench.nn.timm_models import TimmArch, build_timm_model

    torch.manual_seed(1)
    other = build_timm_model(TimmArch(model="resnet18", small_input_stem=True), 1, 2)
    ex2 = save_classifier_extractor(
        tmp_path / "b.pt",
        other,
        model_name="resnet18",
        in_chans=1,
        num_classes=2,
        input_size=None,
        small_input_stem=True,
        trained_on={},
    )
    assert extractor.info["name"] == ex2.info["name"] == "bench-classifier"
    assert len(extractor.info["version"]) == 16 and extractor.info["version"] != ex2.info["version"]
