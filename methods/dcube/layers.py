"""Which U-ViT layers feed the head: the Kolmogorov-Smirnov Gaussianity test of each block's
output (p < 0.05 = non-Gaussian = kept, as in the paper) over several batches, and its plot."""

from __future__ import annotations

import numpy as np


def ks_values(features: np.ndarray, samples: int | None, rng: np.random.Generator) -> np.ndarray:
    """The values one KS test reads from a layer's batch of feature maps (B, ...), each
    standardised with the batch's mean and std. `samples` None: one value per image, at a
    random position: B independent values (different images, different t), the paper's
    "empirical CDF ... based on the batch size B". An int: that many values drawn from all
    maps; values of one image are correlated, so the p-value then shrinks with the count
    rather than with the evidence (on an untrained U-ViT n = 64 keeps 0-1 layers, n =
    10,000 keeps 5-6)."""
    f = np.asarray(features, dtype=np.float64)
    flat = f.reshape(len(f), -1)
    if samples is None:
        v = flat[np.arange(len(flat)), rng.integers(0, flat.shape[1], len(flat))]
    else:
        v = flat.ravel()
        v = v[rng.choice(v.size, size=min(samples, v.size), replace=False)] if samples else v
    return (v - float(f.mean())) / (float(f.std()) or 1.0)


def ks_layer_selection(
    batches: list[list[np.ndarray]],
    names: list[str],
    alpha: float = 0.05,
    samples: int | None = None,
    seed: int = 0,
) -> dict:
    """Kolmogorov-Smirnov test of each layer's features against a Gaussian, over several
    batches.

    `batches[b][l]` is layer l's feature maps on batch b (its own images and t). In each
    batch, each layer's `ks_values` are compared with N(0, 1) (scipy.stats.kstest); p < alpha
    = non-Gaussian = semantic (paper Sec. III-B2). A layer is kept when it is non-Gaussian
    in at least half of the batches; its statistic and p are the medians over batches, and
    `kept_share` the share of batches that kept it. `stability` is the mean Jaccard
    similarity of the batches' kept sets to the majority's (1: every batch chose it). If no
    layer is kept, no layer separates from a Gaussian (`separated` False, as on an
    untrained network): the least Gaussian one is kept, and that is said.
    """
    from scipy.stats import kstest

    rng = np.random.default_rng(seed)
    tests = np.array(
        [
            [
                (r.statistic, r.pvalue)
                for r in (kstest(ks_values(f, samples, rng), "norm") for f in batch)
            ]
            for batch in batches
        ]
    )  # (batches, layers, [statistic, p])
    chosen = tests[:, :, 1] < alpha
    share = chosen.mean(axis=0)
    layers = [
        {
            "index": i,
            "name": name,
            "statistic": float(np.median(tests[:, i, 0])),
            "p_value": float(np.median(tests[:, i, 1])),
            "kept_share": float(share[i]),
        }
        for i, name in enumerate(names)
    ]
    kept = [i for i in range(len(names)) if share[i] >= 0.5]
    majority = set(kept)

    def jaccard(picked: set) -> float:
        return len(picked & majority) / len(picked | majority) if picked | majority else 1.0

    stability = float(np.mean([jaccard(set(np.flatnonzero(c).tolist())) for c in chosen]))
    note = None
    if not kept:
        kept = [int(np.argmax([layer["statistic"] for layer in layers]))]
        note = f"no layer was non-Gaussian (p < {alpha}) in half of the batches; kept the least Gaussian one"
    final = set(kept)
    for layer in layers:
        layer["kept"] = layer["index"] in final
    return {
        "alpha": alpha,
        "samples": "one per image" if samples is None else samples,
        "batches": len(batches),
        "batch_size": len(batches[0][0]),
        "layers": layers,
        "kept": kept,
        "kept_names": [names[i] for i in kept],
        "separated": bool(majority),
        "stability": stability,
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
