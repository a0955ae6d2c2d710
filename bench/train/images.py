"""Image strips for humans: sample grids saved as PNG beside the records."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_class_grid(images: np.ndarray, labels: np.ndarray, path: Path, per_class: int = 8) -> Path:
    """uint8 [N, H, W, C] -> a PNG with one row per class present (in class order),
    up to `per_class` images each, black where a class has fewer."""
    from PIL import Image

    size_h, size_w, ch = images.shape[1:]
    rows = []
    for c in np.unique(labels):
        row = np.zeros((size_h, per_class * size_w, ch), dtype=np.uint8)
        for i, im in enumerate(images[np.asarray(labels) == c][:per_class]):
            row[:, i * size_w : (i + 1) * size_w] = im
        rows.append(row)
    grid = np.concatenate(rows, axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if ch == 1 else grid).save(path)
    return path


def save_strip(rows: list[np.ndarray], path: Path) -> Path:
    """Float images [N, H, W, C] on [0, 1], one row per array (e.g. input, output,
    target), N columns; values outside [0, 1] are clipped for display."""
    from PIL import Image

    tiles = [np.concatenate(list(np.clip(r, 0, 1)), axis=1) for r in rows]
    grid = (np.concatenate(tiles, axis=0) * 255).round().astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return path
