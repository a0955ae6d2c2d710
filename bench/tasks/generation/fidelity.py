"""Generation metrics through torch-fidelity: FID, KID and precision/recall (k = 3),
overall and per class, on the features of a named, versioned extractor.

Two extractors:
- ``inception-v3-compat`` (torch-fidelity's port of the TF-FID Inception), when its
  weights are available as a local file (they cannot be downloaded here);
- ``bench-classifier``: a timm classifier trained by the harness on the real training
  split (registered with torch-fidelity), which works offline. Its version is the hash
  of its weights file, and what it was trained on is recorded with it.

Features are extracted once per image set and the metrics are computed from them, so
per-class FID reuses the overall features. torch-fidelity's convention is kept: for
precision/recall, input 1 is the generated set, input 2 the real one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.api.errors import BenchError
from bench.api.record import atomic_write

CLASSIFIER_EXTRACTOR = "bench-classifier"


def _fidelity():
    import torch_fidelity

    if CLASSIFIER_EXTRACTOR not in torch_fidelity.registry.FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor(
            CLASSIFIER_EXTRACTOR, _classifier_features_class()
        )
    return torch_fidelity


def _classifier_features_class():
    """The torch-fidelity extractor class for harness-trained classifiers (built lazily:
    torch-fidelity is imported only when generation metrics are computed)."""
    from torch_fidelity import FeatureExtractorBase

    class HarnessClassifierFeatures(FeatureExtractorBase):
        """Pooled pre-logit features of a timm classifier saved by `save_classifier_extractor`."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            if not feature_extractor_weights_path:
                raise BenchError(
                    f"{CLASSIFIER_EXTRACTOR}: feature_extractor_weights_path (a saved classifier) is required"
                )
            self.model, self.in_chans, self.input_size = load_classifier(
                feature_extractor_weights_path
            )
            self.requires_grad_(False)
            self.eval()

        @staticmethod
        def get_provided_features_list():
            return ("pool",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "pool"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 28, 28, dtype=torch.uint8)

        def forward(self, x):
            if not (
                torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3
            ):
                raise BenchError(
                    f"{CLASSIFIER_EXTRACTOR}: expects uint8 [B, 3, H, W] images, got {getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))}"
                )
            x = classifier_input(x, self.in_chans, self.input_size)
            return (
                self.model.forward_head(self.model.forward_features(x), pre_logits=True).float(),
            )

    return HarnessClassifierFeatures


def load_classifier(path) -> tuple[torch.nn.Module, int, int | None]:
    """(model, in_chans, input_size) of a classifier saved by `save_classifier_extractor`."""
    from bench.nn.timm_models import TimmArch, build_timm_model

    blob = torch.load(path, map_location="cpu", weights_only=True)
    cfg = TimmArch(model=blob["model"], small_input_stem=blob["small_input_stem"])
    model = build_timm_model(cfg, blob["in_chans"], blob["num_classes"])
    model.load_state_dict(blob["state"])
    return model.eval(), blob["in_chans"], blob["input_size"]


def classifier_input(x: torch.Tensor, in_chans: int, input_size: int | None) -> torch.Tensor:
    """uint8 [B, 3, H, W] images as the saved classifier was trained on them."""
    x = x.float().div(127.5).sub(1.0)
    if in_chans == 1:
        x = x.mean(dim=1, keepdim=True)
    if input_size and x.shape[-1] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False)
    return x


@dataclass
class Extractor:
    """A feature extractor as torch-fidelity creates it, and how records name it."""

    name: str  # torch-fidelity registry name
    kwargs: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(
        default_factory=dict
    )  # recorded: name, version, what it was trained on

    def create(self):
        tf = _fidelity()
        cuda = torch.cuda.is_available()
        return tf.utils.create_feature_extractor(
            self.name,
            ["pool" if self.name == CLASSIFIER_EXTRACTOR else "2048"],
            cuda=cuda,
            verbose=False,
            **self.kwargs,
        )


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def inception_extractor(weights_path: str | None) -> Extractor:
    """torch-fidelity's Inception (FID's standard) from a local weights file; offline
    there is nothing else to load, so a missing file is an error naming it."""
    if not weights_path or not Path(weights_path).is_file():
        raise BenchError(
            f"Inception weights not found ({weights_path or 'no path given'}): pass a local copy of torch-fidelity's "
            "'weights-inception-2015-12-05-6726825d.pth' (downloads are not attempted offline), or use the "
            f"{CLASSIFIER_EXTRACTOR!r} extractor"
        )
    return Extractor(
        "inception-v3-compat",
        {"feature_extractor_weights_path": str(weights_path)},
        {
            "name": "inception-v3-compat",
            "version": file_sha256(weights_path)[:16],
            "weights": str(weights_path),
            "source": "torch-fidelity (TF-FID Inception port)",
        },
    )


def save_classifier_extractor(
    path: Path,
    model: torch.nn.Module,
    *,
    model_name: str,
    in_chans: int,
    num_classes: int,
    input_size: int | None,
    small_input_stem: bool,
    trained_on: dict,
) -> Extractor:
    """Store a trained timm classifier as a `bench-classifier` extractor file.

    Another process sharing the cache (a sweep worker, a `--jobs` process) loads the file
    as soon as it exists, so it is written whole (`atomic_write`), under its own name so
    that its bytes, and with them the extractor's version, are a direct save's."""
    path = Path(path)
    blob = {
        "model": model_name,
        "in_chans": in_chans,
        "num_classes": num_classes,
        "input_size": input_size,
        "small_input_stem": small_input_stem,
        "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    atomic_write(path, lambda staged: torch.save(blob, staged), by_path=True)
    return classifier_extractor(path, trained_on)


def classifier_extractor(path: Path, trained_on: dict) -> Extractor:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return Extractor(
        CLASSIFIER_EXTRACTOR,
        {"feature_extractor_weights_path": str(path)},
        {
            "name": CLASSIFIER_EXTRACTOR,
            "model": blob["model"],
            "version": file_sha256(path)[:16],
            "file": str(path),
            "trained_on": trained_on,
        },
    )


def as_fidelity_images(images: np.ndarray, what: str) -> torch.Tensor:
    """uint8 [N, H, W, C] (C = 1 or 3) -> uint8 [N, 3, H, W], checked."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise BenchError(f"{what}: images must be uint8 (0..255), got {images.dtype}")
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise BenchError(f"{what}: images must be [N, H, W, 1 or 3], got shape {images.shape}")
    if len(images) < 2:
        raise BenchError(f"{what}: at least 2 images are needed, got {len(images)}")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x


class _Images(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def extract_features(
    images: np.ndarray, extractor: Extractor, what: str = "images", batch_size: int = 64
) -> torch.Tensor:
    """[N, D] float64 features of uint8 images (grey images are repeated to 3 channels)."""
    tf = _fidelity()
    fx = extractor.create()
    feats = tf.utils.get_featuresdict_from_dataset(
        _Images(as_fidelity_images(images, what)),
        fx,
        batch_size,
        torch.cuda.is_available(),
        True,
        False,
    )
    return next(iter(feats.values())).double()


def fidelity_metrics(
    real: torch.Tensor,
    generated: torch.Tensor,
    *,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    k: int = 3,
    seed: int = 2020,
) -> dict[str, float]:
    """FID, KID (mean, std over subsets; polynomial kernel) and precision/recall with a
    k-NN manifold (Kynkaenniemi et al.) from features of the real and generated sets."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    n_gen, n_real = len(generated), len(real)
    if min(n_gen, n_real) < kid_subset_size:
        raise BenchError(
            f"KID needs at least kid_subset_size = {kid_subset_size} images in each set; got {n_gen} generated and "
            f"{n_real} real. Generate more images or lower kid_subset_size."
        )
    if min(n_gen, n_real) <= k:
        raise BenchError(
            f"precision/recall with k = {k} needs more than {k} images per set; got {n_gen} generated, {n_real} real"
        )
    fid = fid_statistics_to_metric(
        fid_features_to_statistics(generated.cpu()), fid_features_to_statistics(real.cpu()), False
    )
    kid = kid_features_to_metric(
        generated,
        real,
        kid_subset_size=kid_subset_size,
        kid_subsets=kid_subsets,
        rng_seed=seed,
        verbose=False,
    )
    prc = prc_features_to_metric(
        generated, real, prc_neighborhood=k, save_cpu_ram=True, verbose=False
    )
    return {
        "fid": fid["frechet_inception_distance"],
        "kid_mean": kid["kernel_inception_distance_mean"],
        "kid_std": kid["kernel_inception_distance_std"],
        "precision": float(prc["precision"]),
        "recall": float(prc["recall"]),
    }


def per_class_fid(
    real: torch.Tensor,
    real_labels: np.ndarray,
    generated: torch.Tensor,
    generated_labels: np.ndarray,
    num_classes: int,
) -> list[float | None]:
    """FID between the real and generated images of each class (None where either set
    has fewer than 2 images of that class)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    out = []
    for c in range(num_classes):
        r, g = real[np.asarray(real_labels) == c], generated[np.asarray(generated_labels) == c]
        if len(r) < 2 or len(g) < 2:
            out.append(None)
            continue
        out.append(
            fid_statistics_to_metric(
                fid_features_to_statistics(g.cpu()), fid_features_to_statistics(r.cpu()), False
            )["frechet_inception_distance"]
        )
    return out
