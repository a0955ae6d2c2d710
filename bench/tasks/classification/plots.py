"""The classification task's figures (`bench plots`): the figures researchers expect, from records and their .npz only:
ROC curves and confusion matrices per method, training curves (validation metric per
epoch, DiffMIC-v2's Fig. 6), and a t-SNE of DiffMIC-v2's denoised label grids along
the reverse process (its Fig. 5) where a record kept them (``save_trajectory``).
One seed per method (the lowest present), named in each title."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.api.record import Record


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _first_seed(records: list[Record]) -> dict[str, Record]:
    out = {}
    for r in sorted(records, key=lambda r: r.seed):
        out.setdefault(r.method, r)
    return out


def roc_figure(by_method: dict[str, Record], title: str, path: Path) -> Path:
    """Binary: the positive class's ROC; multiclass: the micro-average one-vs-rest ROC."""
    from sklearn.metrics import auc, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for method, rec in by_method.items():
        npz = rec.load_predictions()
        probs, labels = npz["test_probs"], npz["test_labels"]
        if probs.shape[1] == 2:
            fpr, tpr, _ = roc_curve(labels, probs[:, 1])
        else:
            onehot = np.eye(probs.shape[1])[labels]
            fpr, tpr, _ = roc_curve(onehot.ravel(), probs.ravel())
        ax.plot(fpr, tpr, label=f"{method} (AUC {auc(fpr, tpr):.3f}, seed {rec.seed})")
    ax.plot([0, 1], [0, 1], color="0.7", ls="--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_figure(
    by_method: dict[str, Record], class_names: list[str], title: str, path: Path
) -> Path:
    from sklearn.metrics import confusion_matrix

    plt = _plt()
    n = len(by_method)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3 * rows), squeeze=False)
    for ax, (method, rec) in zip(axes.flat, by_method.items()):
        npz = rec.load_predictions()
        k = npz["test_probs"].shape[1]
        cm = confusion_matrix(
            npz["test_labels"], npz["test_probs"].argmax(1), labels=list(range(k)), normalize="true"
        )
        ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    f"{cm[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if cm[i, j] > 0.5 else "black",
                )
        ax.set_xticks(
            range(k),
            class_names[:k] if len(class_names) >= k else range(k),
            fontsize=6,
            rotation=45,
        )
        ax.set_yticks(range(k), class_names[:k] if len(class_names) >= k else range(k), fontsize=6)
        ax.set_title(f"{method} (seed {rec.seed})", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title + " - rows: true class (normalised), columns: predicted", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def curves_figure(by_method: dict[str, Record], title: str, path: Path) -> Path | None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    drawn = 0
    for method, rec in by_method.items():
        sel = rec.selection
        key = f"val_{sel.selection_metric}"
        points = [(h["epoch"], h[key]) for h in sel.history or [] if h.get(key) is not None]
        if points:
            ax.plot(*zip(*points), marker=".", label=f"{method} (seed {rec.seed})")
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation selection metric")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def tsne_figure(rec: Record, title: str, path: Path, panels: int = 4) -> Path | None:
    """t-SNE (scikit-learn) of the denoised label grids at a few reverse steps."""
    from sklearn.manifold import TSNE

    npz = rec.load_predictions()
    if "test_trajectory" not in npz:
        return None
    traj, labels = npz["test_trajectory"].astype(np.float32), npz["test_labels"]
    steps = np.linspace(0, traj.shape[1] - 1, min(panels, traj.shape[1])).round().astype(int)
    plt = _plt()
    fig, axes = plt.subplots(1, len(steps), figsize=(3 * len(steps), 3), squeeze=False)
    for ax, s in zip(axes[0], steps):
        emb = TSNE(
            n_components=2, perplexity=min(30, len(labels) - 1), random_state=0, init="pca"
        ).fit_transform(traj[:, s])
        ax.scatter(emb[:, 0], emb[:, 1], c=labels, s=4, cmap="tab10")
        ax.set_title(f"after step {s + 1} of {traj.shape[1]}", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def classification_figures(records: list[Record], out: Path) -> list[Path]:
    """ROC, confusion, training curves and t-SNE figures per (preset, dataset) into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for key in sorted({(r.preset, r.dataset) for r in records}):
        group = [r for r in records if (r.preset, r.dataset) == key]
        by_method = _first_seed(group)
        stem = f"{key[0]}-{key[1]}"
        title = f"{key[1]} ({key[0]}), test split"
        written.append(roc_figure(by_method, f"ROC: {title}", out / f"{stem}-roc.png"))
        written.append(
            confusion_figure(
                by_method,
                group[0].class_names or [],
                f"Confusion: {title}",
                out / f"{stem}-confusion.png",
            )
        )
        curve = curves_figure(
            by_method, f"Training curves: {key[1]} ({key[0]})", out / f"{stem}-curves.png"
        )
        written += [curve] if curve else []
        for method, rec in by_method.items():
            tsne = tsne_figure(
                rec,
                f"{method}: t-SNE of denoised label grids along the reverse process ({key[1]}, seed {rec.seed})",
                out / f"{stem}-{method}-tsne.png",
            )
            written += [tsne] if tsne else []
    return written
