"""Temperature scaling (Guo et al. 2017): one temperature T, fitted by minimising the NLL
of softmax(logits / T) on held-out labels, rescales a model's probabilities without
changing its argmax (nor, for a binary task, its ranking: its AUROC).

A method's probabilities are turned back into logits as their logs (any constant per row
cancels in the softmax), so the same scaling applies to every classifier whatever its
readout (a softmax, a mean over diffusion samples, DiffMIC-v2's grid means).
Multilabel probabilities are scaled per label as sigmoids of their log-odds."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_softmax, logit, softmax

#: the search interval of T: wide enough for an over-confident readout (DiffMIC-v2's
#: fixed 0.1 temperature needs T ~ 0.3-0.5 on its log-probabilities) and a timid one
T_BOUNDS = (0.01, 100.0)
#: exact zeros (and multilabel ones) are moved this far inside (0, 1) before their logs:
#: float32 probabilities can hold 0, and any larger bound would tie distinct small values
EPS = 1e-300


def logits_of(probs: np.ndarray, task: str) -> np.ndarray:
    """Logits whose softmax (multilabel: sigmoid) gives back `probs`."""
    p = np.asarray(probs, np.float64)
    if task == "multilabel":
        return logit(np.clip(p, EPS, np.nextafter(1.0, 0.0)))
    return np.log(np.maximum(p, EPS))


def scaled(logits: np.ndarray, temperature: float, task: str) -> np.ndarray:
    """Probabilities of `logits` at `temperature`."""
    z = np.asarray(logits, np.float64) / temperature
    return expit(z) if task == "multilabel" else softmax(z, axis=1)


def nll(logits: np.ndarray, labels: np.ndarray, task: str, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `labels` under softmax (sigmoid) of logits / T."""
    z, y = np.asarray(logits, np.float64) / temperature, np.asarray(labels)
    if task == "multilabel":  # mean over (sample, label) pairs of the binary NLL
        return float(np.mean(np.logaddexp(0, z) - y * z))
    return float(-log_softmax(z, axis=1)[np.arange(len(y)), y.astype(int)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, task: str) -> tuple[float, float]:
    """(T, NLL at T): the temperature minimising the NLL on (`logits`, `labels`), by a
    bounded 1-D search on log T over `T_BOUNDS`."""
    if len(labels) == 0:
        raise ValueError("fitting a temperature needs at least one labelled sample")
    lo, hi = np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])
    best = minimize_scalar(
        lambda log_t: nll(logits, labels, task, np.exp(log_t)),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(best.x)), float(best.fun)
