"""The site's figures, made to be looked at, from records and their .npz only: every
method's ROC curve of a table in one plot (mean over seeds, priors dashed), a forest plot
of a table's verdict, generation samples (upscaled without smoothing, one labelled row
per class, real test images beside them), restoration strips at a readable size
(degraded / restored / clean, with each image's PSNR), and sweep curves with the floor.

Each figure is bytes (SVG for plots, PNG for images) made deterministically: no date in
the SVG or PNG metadata and a fixed ``svg.hashsalt``, so rebuilding from the same records
gives the same bytes."""

from __future__ import annotations

import hashlib
import io
import re
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import sklearn.metrics

from bench.api.record import Record

RC = {
    "svg.hashsalt": "diffmed-bench",
    "svg.fonttype": "none",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
FPR = np.linspace(0, 1, 101)
NUMBER = r"[+-]?\d+(?:\.\d+)?"


@contextmanager
def figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context(RC):
        fig = plt.figure(*args, **kwargs)
        try:
            yield fig
        finally:
            plt.close(fig)


def svg_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return buf.getvalue()


def png_bytes(fig, dpi=100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def roc_points(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """TPR at `FPR`: the positive class's ROC (binary), else the micro-average one-vs-rest."""
    from sklearn.metrics import roc_curve

    if probs.shape[1] == 2:
        fpr, tpr, _ = roc_curve(labels, probs[:, 1])
    else:
        fpr, tpr, _ = roc_curve(np.eye(probs.shape[1])[labels].ravel(), probs.ravel())
    return np.interp(FPR, fpr, tpr)


def roc_figure(curves: list[tuple[str, list[Record], str, bool]], title: str) -> bytes | None:
    """`curves`: (row label, its records, the .npz key of its test probabilities, is a
    prior): each row's ROC averaged over its seeds (TPR at fixed FPR), priors dashed in
    their method's colour."""
    drawn = []
    for label, records, key, prior in curves:
        tprs = []
        for r in sorted(records, key=lambda r: r.seed):
            try:
                npz = r.load_predictions()
            except (OSError, ValueError, TypeError):
                continue
            if key in npz and "test_labels" in npz:
                tprs.append(roc_points(npz[key].astype(np.float64), npz["test_labels"]))
        if tprs:
            drawn.append((label, np.mean(tprs, axis=0), len(tprs), prior))
    if not drawn:
        return None
    with figure(figsize=(5.2, 4.6)) as fig:
        import matplotlib

        ax = fig.add_subplot()
        n_methods = sum(not prior for *_, prior in drawn)
        colours = matplotlib.colormaps["tab10" if n_methods <= 10 else "tab20"].colors
        owner, c = {}, -1
        for label, tpr, n, prior in drawn:
            if not prior:
                c += 1
                owner[label.split(" ")[0]] = c
            colour = colours[owner.get(label.split(" ")[0], max(c, 0)) % len(colours)]
            auc = float(sklearn.metrics.auc(FPR, tpr))
            ax.plot(
                FPR,
                tpr,
                ls="--" if prior else "-",
                lw=1.0 if prior else 1.6,
                color=colour,
                label=f"{label}: {auc:.3f} ({n} seed{'s' if n > 1 else ''})",
            )
        ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=0.8)
        ax.set_xlim(0, 1), ax.set_ylim(0, 1.01)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(title, fontsize=9)
        ax.legend(
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.02, 1),
            title="area under the mean curve",
            title_fontsize=7,
            frameon=False,
        )
        return svg_bytes(fig)


def verdict_rows(lines: list[str]) -> list[dict]:
    """The rows of a verdict block (bench/tasks/classification/verdict.py) as numbers:
    what the forest plot draws is what the table says."""
    rows = []
    for line in lines:
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if len(parts) != 9 or parts[0] == "method" or parts[0].startswith("---"):
            continue
        diff = re.fullmatch(NUMBER, parts[3])
        ci = [re.findall(NUMBER, parts[i]) for i in (4, 6)]
        if not diff or len(ci[0]) != 2:
            continue
        rows.append(
            {
                "label": f"{parts[0]} vs {parts[1].strip('`')}",
                "diff": float(diff.group()),
                "delong": tuple(map(float, ci[0])),
                "seeds": tuple(map(float, ci[1])) if len(ci[1]) == 2 else None,
                "verdict": parts[8],
            }
        )
    return rows


def forest_figure(lines: list[str], title: str) -> bytes | None:
    """Each verdict row's Δ AUROC with its DeLong 95 % interval (thick) and its seed-paired
    t interval (thin), the zero line drawn."""
    rows = verdict_rows(lines)
    if not rows:
        return None
    with figure(figsize=(7.2, 0.9 + 0.36 * len(rows))) as fig:
        ax = fig.add_subplot()
        y = np.arange(len(rows))[::-1]
        for yi, r in zip(y, rows):
            colour = {"better": "#1a7f37", "worse": "#cf222e"}.get(r["verdict"], "#444444")
            if r["seeds"]:
                ax.plot(r["seeds"], [yi - 0.18] * 2, color=colour, lw=1, alpha=0.7)
            ax.plot(r["delong"], [yi] * 2, color=colour, lw=3, solid_capstyle="butt")
            ax.plot([r["diff"]], [yi], "o", color=colour, ms=5)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, [r["label"] for r in rows], fontsize=7)
        ax.set_xlabel(
            "Δ test AUROC (row minus comparator); thick: 95 % DeLong, thin: 95 % over seeds (t)"
        )
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", color="0.9")
        return svg_bytes(fig)


def confusion_figure(record: Record, title: str) -> bytes | None:
    """The test confusion matrix of one record, each true class's row normalised."""
    try:
        npz = record.load_predictions()
    except (OSError, ValueError, TypeError):
        return None
    if "test_probs" not in npz or "test_labels" not in npz:
        return None
    k = npz["test_probs"].shape[1]
    cm = np.zeros((k, k))
    np.add.at(cm, (npz["test_labels"], npz["test_probs"].argmax(1)), 1)
    cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    names = (record.class_names or [])[:k]
    ticks = names if len(names) == k and max(map(len, names)) <= 12 else [str(i) for i in range(k)]
    with figure(figsize=(1.6 + 0.45 * k, 1.4 + 0.45 * k)) as fig:
        ax = fig.add_subplot()
        ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
        for i in range(k):
            for j in range(k):
                colour = "white" if cm[i, j] > 0.5 else "black"
                ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=7, color=colour)
        ax.set_xticks(range(k), ticks, fontsize=7, rotation=45 if k > 3 else 0)
        ax.set_yticks(range(k), ticks, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true (row normalised)", fontsize=8)
        ax.set_title(title, fontsize=8)
        return svg_bytes(fig)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour: each pixel becomes a factor x factor block (no smoothing)."""
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def as_rgb(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images[..., :3]


def tile_row(images: np.ndarray, n: int, size: tuple[int, int]) -> np.ndarray:
    row = np.full((size[0], n * size[1], 3), 255, dtype=np.uint8)
    for i, im in enumerate(as_rgb(images)[:n]):
        row[:, i * size[1] : (i + 1) * size[1]] = im
    return row


def real_test_images(record: Record) -> tuple[np.ndarray, np.ndarray] | str:
    """The test images and labels of a MedMNIST-style .npz the record names, with the MD5
    it recorded, found where the record says, in $BENCH_DATA_DIR, the cache or
    ../shared/data/medmnist (as `make run` looks); else why not."""
    from bench.data.locate import search_dirs

    for path, md5 in (record.data.files if record.data else {}).items():
        dirs = [*search_dirs(None, "medmnist"), Path("..", "shared", "data", "medmnist")]
        for candidate in (Path(path), *(d / Path(path).name for d in dirs)):
            found = _test_split(str(candidate.resolve()), md5)
            if found is not None:
                return found
        return f"{Path(path).name} (MD5 {md5}) not found"
    return "the record names no data file"


@lru_cache(maxsize=8)
def _test_split(path: str, md5: str):
    candidate = Path(path)
    if not candidate.is_file() or candidate.suffix != ".npz":
        return None
    if hashlib.md5(candidate.read_bytes()).hexdigest() != md5:
        return None
    with np.load(candidate) as z:
        if "test_images" not in z or "test_labels" not in z:
            return None
        return z["test_images"], np.asarray(z["test_labels"]).reshape(-1)


def samples_figure(record: Record, per_class: int = 8, real: int = 4) -> bytes | None:
    """One row per class: `per_class` generated images, then `real` test images of the class."""
    try:
        npz = record.load_predictions()
    except (OSError, ValueError, TypeError):
        return None
    if "generated_images" not in npz:
        return None
    images, labels = npz["generated_images"], npz["generated_labels"]
    size = images.shape[1:3]
    factor = max(1, 96 // max(size))
    truth = real_test_images(record)
    names = record.class_names or []
    classes = sorted(set(labels.tolist()))
    rows = []
    for c in classes:
        gen = tile_row(images[labels == c], per_class, size)
        gap = np.full((size[0], max(2, size[1] // 4), 3), 255, dtype=np.uint8)
        parts = [gen]
        if not isinstance(truth, str):
            size_real = truth[0].shape[1:3]
            picked = truth[0][truth[1] == c] if size_real == size else truth[0][:0]
            parts += [gap, tile_row(picked, real, size)]
        rows.append(np.concatenate(parts, axis=1))
    grid = upscale(np.concatenate(rows, axis=0), factor)
    h, w = grid.shape[:2]
    labels = [names[c] if c < len(names) else str(c) for c in classes]
    left = 20 + 7 * max(len(n) for n in labels)  # room for the class names
    with figure(figsize=((w + left + 20) / 100, (h + 54) / 100)) as fig:
        ax = fig.add_axes(
            [left / (w + left + 20), 24 / (h + 54), w / (w + left + 20), h / (h + 54)]
        )
        ax.imshow(grid, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([(i + 0.5) * size[0] * factor for i in range(len(classes))], labels)
        for spine in ax.spines.values():
            spine.set_visible(False)
        gen_w = per_class * size[1] * factor
        ax.text(gen_w / 2, -8, f"generated ({record.method}, seed {record.seed})", ha="center")
        if isinstance(truth, str):
            ax.text(
                gen_w, h + 4, f"real images not shown: {truth}", ha="right", va="top", fontsize=7
            )
        else:
            ax.text(gen_w + (w - gen_w) / 2, -8, "real (test split)", ha="center")
        return png_bytes(fig)


def strip_figure(record: Record, degraded_psnr: np.ndarray | None = None) -> bytes | None:
    """The record's degraded / restored / clean strip (``seed<k>.strip.png``) upscaled, each
    column titled with the PSNR of its degraded and restored image: the restored one's from
    the record's per-image scores, the degraded one's from `degraded_psnr` (the identity
    floor's per-image scores) where given, else from the strip's 8-bit pixels (≈)."""
    from PIL import Image

    name = record.evaluation.get("strip_png")
    if not name or not record.path or not (record.path.parent / name).is_file():
        return None
    strip = np.asarray(Image.open(record.path.parent / name).convert("L"), dtype=np.float64) / 255
    tile = strip.shape[0] // 3
    n = strip.shape[1] // tile
    try:
        restored_psnr = record.load_predictions().get("test_psnr")
    except (OSError, ValueError, TypeError):
        restored_psnr = None
    pick = None
    if restored_psnr is not None:
        pick = (
            np.linspace(0, len(restored_psnr) - 1, min(n, len(restored_psnr))).round().astype(int)
        )
    factor = max(1, 128 // tile)
    with figure(
        figsize=(n * (tile * factor + 14) / 100 + 1.1, 3 * (tile * factor + 30) / 100)
    ) as fig:
        axes = fig.subplots(3, n, squeeze=False)
        for j in range(n):
            tiles = [strip[i * tile : (i + 1) * tile, j * tile : (j + 1) * tile] for i in range(3)]
            if degraded_psnr is not None and pick is not None and len(degraded_psnr) > pick[j]:
                deg = f"{degraded_psnr[pick[j]]:.1f} dB"
            else:
                mse = np.mean((tiles[0] - tiles[2]) ** 2)
                deg = "≈ inf" if mse == 0 else f"≈ {10 * np.log10(1 / mse):.1f} dB"
            res = f"{restored_psnr[pick[j]]:.1f} dB" if pick is not None else ""
            for i, text in enumerate((deg, res, "")):
                ax = axes[i, j]
                ax.imshow(
                    upscale(tiles[i], factor), cmap="gray", vmin=0, vmax=1, interpolation="nearest"
                )
                ax.set_xticks([]), ax.set_yticks([])
                ax.set_title(text, fontsize=8, pad=2)
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if j == 0:
                    ax.set_ylabel(("degraded", "restored", "clean")[i], fontsize=9)
        fig.suptitle(
            f"{record.dataset}: {record.method} (seed {record.seed}), PSNR per image", fontsize=9
        )
        fig.tight_layout()
        return png_bytes(fig)


def sweep_figure(
    points: dict[str, dict], floors: dict[str, float], param: str, title: str
) -> bytes | None:
    """`points`: {metric: {value: mean over trials}}, one curve per metric, its floor dotted."""
    if not any(points.values()):
        return None
    with figure(figsize=(5.5, 3.4)) as fig:
        ax = fig.add_subplot()
        for metric, values in points.items():
            xs = sorted(values)
            if not xs:
                continue
            (line,) = ax.plot(xs, [values[x] for x in xs], marker="o", label=metric)
            if floors.get(metric) is not None:
                ax.axhline(
                    floors[metric], color=line.get_color(), ls=":", lw=1, label=f"{metric} floor"
                )
        ax.set_xlabel(param)
        ax.set_ylabel("test metric (mean over trials)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        return svg_bytes(fig)
