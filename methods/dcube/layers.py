"""Which U-ViT layers feed the head: the Kolmogorov-Smirnov Gaussianity test of each block's
output (p < 0.05 = non-Gaussian = kept, as in the paper), and its plot."""

from __future__ import annotations

import numpy as np


def ks_layer_selection(
    features: list[np.ndarray],
    names: list[str],
    alpha: float = 0.05,
    samples: int = 1000,
    seed: int = 0,
) -> dict:
    """Kolmogorov-Smirnov test of each layer's features against a Gaussian.

    For each layer, `samples` values drawn at random (fixed seed) from the batch's
    feature maps are standardised with the layer's mean and std and compared with
    N(0, 1) (scipy.stats.kstest). p < alpha = non-Gaussian = semantic = kept (paper
    Sec. III-B2). If no layer is kept, the least Gaussian one is, and that is said.
    """
    from scipy.stats import kstest

    rng = np.random.default_rng(seed)
    layers = []
    for i, (name, f) in enumerate(zip(names, features)):
        v = np.asarray(f, dtype=np.float64).ravel()
        v = v[rng.choice(v.size, size=min(samples, v.size), replace=False)] if samples else v
        std = float(np.std(f)) or 1.0
        res = kstest((v - float(np.mean(f))) / std, "norm")
        layers.append(
            {
                "index": i,
                "name": name,
                "statistic": float(res.statistic),
                "p_value": float(res.pvalue),
            }
        )
    kept = [layer["index"] for layer in layers if layer["p_value"] < alpha]
    note = None
    if not kept:
        kept = [min(layers, key=lambda layer: layer["p_value"])["index"]]
        note = f"no layer had p < {alpha}; kept the least Gaussian one"
    for layer in layers:
        layer["kept"] = layer["index"] in kept
    return {
        "alpha": alpha,
        "samples": samples,
        "layers": layers,
        "kept": kept,
        "kept_names": [names[i] for i in kept],
        "note": note,
    }


def plot_ks(selection: dict, path, title: str = "") -> None:
    """p-value per layer (log scale), the alpha line, kept layers starred (paper Fig. 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = selection["layers"]
    x = np.arange(len(layers))
    p = np.array([max(layer["p_value"], 1e-300) for layer in layers])
    kept = np.array([layer["kept"] for layer in layers])
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(layers) + 2), 3))
    ax.plot(x, p, color="0.5", lw=1)
    ax.scatter(
        x[kept],
        p[kept],
        marker="*",
        s=120,
        color="gold",
        edgecolor="k",
        label="kept (non-Gaussian)",
        zorder=3,
    )
    ax.scatter(
        x[~kept], p[~kept], marker="x", s=50, color="red", label="dropped (Gaussian)", zorder=3
    )
    ax.axhline(selection["alpha"], color="k", ls="--", lw=0.8, label=f"p = {selection['alpha']}")
    ax.set_yscale("log")
    ax.set_xticks(x, [layer["name"] for layer in layers], rotation=45, fontsize=8)
    ax.set_ylabel("KS p-value")
    ax.set_title(title or "D-Cube: Gaussianity of block outputs", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
