"""Label vectors of the label-diffusion classifiers: one-hot targets, scores to
probabilities, prior losses and agreement, and the MMD loss of DiffMIC."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bench.api.errors import BenchError


def one_hot_targets(labels: np.ndarray, num_classes: int, multilabel: bool, device) -> torch.Tensor:
    """y0: one-hot rows (multi-hot for multilabel data), float."""
    y = torch.as_tensor(np.asarray(labels), device=device)
    return y.float() if multilabel else F.one_hot(y.long(), num_classes).float()


def scores_to_probabilities(
    scores: torch.Tensor, multilabel: bool, temperature: float | None = None
) -> torch.Tensor:
    """Denoised label estimates -> probabilities. With a `temperature`: a softmax of the
    estimates / temperature over the classes (per label: a sigmoid of (estimate - 0.5) /
    temperature), which keeps their ranking. Without: clipped to [0, 1] (per label) and
    renormalised to sum to one for single-label tasks (ties all-negative rows)."""
    if temperature is not None:
        s = scores.float() / temperature
        return torch.sigmoid(s - 0.5 / temperature) if multilabel else torch.softmax(s, dim=1)
    p = scores.float().clamp(0, 1)
    if multilabel:
        return p
    p = p + 1e-6
    return p / p.sum(dim=1, keepdim=True)


def prior_agreement(logits: torch.Tensor, y0: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Probability the prior gives the true label (mean per-label agreement if multilabel)."""
    if multilabel:
        p = torch.sigmoid(logits)
        return (y0 * p + (1 - y0) * (1 - p)).mean(dim=1)
    return (torch.softmax(logits, dim=1) * y0).sum(dim=1)


def require_single_label(method: str, spec) -> None:
    if spec.task == "multilabel":
        raise BenchError(
            f"{method}: multilabel data is not supported (its readout is a softmax over classes; use diffmic_v2)"
        )


def prior_probabilities(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


def classification_loss(logits: torch.Tensor, y0: torch.Tensor, multilabel: bool) -> torch.Tensor:
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, y0)
    return F.cross_entropy(logits, y0.argmax(dim=1))


def gaussian_mmd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Biased MMD^2 between two batches of vectors with the Gaussian kernel
    exp(-||x - y||^2 / D^2) (D = vector dimension), as in the DiffMIC code."""
    d = a.shape[1]

    def k(x, y):
        return torch.exp(-((x[:, None, :] - y[None, :, :]) ** 2).mean(dim=2) / d)

    return k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean()
