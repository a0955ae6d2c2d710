"""timm feature encoders (trunks, feature maps, pooled and map encoders), gated
attention, and the ROI selection and tiling of the DCG's local branch."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.api.errors import BenchError
from bench.nn.timm_models import use_small_input_stem


def timm_trunk(name: str, in_chans: int, small_input_stem: bool = False, **kwargs) -> nn.Module:
    """A timm model without its classifier; ``forward_features`` gives maps or tokens."""
    import timm

    try:
        model = timm.create_model(
            name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs
        )
    except RuntimeError as exc:
        raise BenchError(f"timm cannot build encoder {name!r}: {exc}") from exc
    if small_input_stem:
        use_small_input_stem(model, in_chans, name)
    return model


def feature_map(trunk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[B, D, h, w] from a CNN trunk, or patch tokens of a ViT reshaped to a map."""
    f = trunk.forward_features(x)
    if f.dim() == 3:  # tokens [B, prefix + N, D]
        f = f[:, getattr(trunk, "num_prefix_tokens", 0) :]
        side = int(round(f.shape[1] ** 0.5))
        f = f.transpose(1, 2).reshape(f.shape[0], f.shape[2], side, -1)
    return f


class MapEncoder(nn.Module):
    """Image -> trunk feature map -> 1x1 conv to `dim` -> global average pool (the
    DiffMIC-v2 global encoder; the authors use EfficientSAM ViT-S, any timm model here)."""

    def __init__(
        self, name: str, in_chans: int, dim: int, small_input_stem: bool = False, **kwargs
    ):
        super().__init__()
        self.trunk = timm_trunk(name, in_chans, small_input_stem, **kwargs)
        self.proj = nn.Conv2d(self.trunk.num_features, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(feature_map(self.trunk, x)).mean(dim=(2, 3))


class PooledEncoder(nn.Module):
    """Image -> timm pooled features -> linear to `dim` (the ROI / CARD image encoder)."""

    def __init__(
        self, name: str, in_chans: int, dim: int, small_input_stem: bool = False, **kwargs
    ):
        super().__init__()
        self.trunk = timm_trunk(name, in_chans, small_input_stem, **kwargs)
        self.proj = nn.Linear(self.trunk.num_features, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.trunk(x))


class GatedAttention(nn.Module):
    """Gated attention MIL pooling (Ilse et al. 2018; DiffMIC-v2 eq. 2-3):
    alpha_k = softmax_k(w^T (tanh(V r_k) * sigmoid(U r_k))), z = sum_k alpha_k r_k."""

    def __init__(self, dim: int, attn_dim: int = 128):
        super().__init__()
        self.V = nn.Linear(dim, attn_dim, bias=False)
        self.U = nn.Linear(dim, attn_dim, bias=False)
        self.w = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = torch.softmax(
            self.w(torch.tanh(self.V(r)) * torch.sigmoid(self.U(r))).squeeze(-1), dim=1
        )
        return (alpha.unsqueeze(-1) * r).sum(dim=1), alpha


def select_roi_cells(saliency: torch.Tensor, k: int, window: int = 1) -> torch.Tensor:
    """Greedy top-K windows of the class-summed, min-max normalised saliency map.

    saliency [B, C, h, w] -> cell positions [B, K, 2] (row, col of the window's upper
    left); a picked window is masked out so no cell is taken twice.
    """
    b, c, h, w = saliency.shape
    flat = saliency.detach().float().reshape(b, c, -1)
    lo, hi = flat.min(dim=2, keepdim=True).values, flat.max(dim=2, keepdim=True).values
    score = ((flat - lo) / (hi - lo).clamp_min(1e-12)).sum(dim=1).reshape(b, 1, h, w)
    window = max(1, min(window, h, w))
    positions = []
    for _ in range(k):
        pooled = F.avg_pool2d(score, window, stride=1)  # [B, 1, h-win+1, w-win+1]
        best = pooled.reshape(b, -1).argmax(dim=1)
        row, col = best // pooled.shape[-1], best % pooled.shape[-1]
        positions.append(torch.stack([row, col], dim=1))
        rows = torch.arange(h, device=score.device)[None, :, None]
        cols = torch.arange(w, device=score.device)[None, None, :]
        inside = (
            (rows >= row[:, None, None])
            & (rows < row[:, None, None] + window)
            & (cols >= col[:, None, None])
            & (cols < col[:, None, None] + window)
        )
        score = score.masked_fill(inside[:, None], -1.0)  # below every normalised score
    return torch.stack(positions, dim=1)


def crop_tiles(
    x: torch.Tensor, cells: torch.Tensor, grid: tuple[int, int], size: int
) -> torch.Tensor:
    """Crop size x size tiles whose upper-left corners are the grid cells mapped to pixels.

    x [B, ch, H, W], cells [B, K, 2] on a grid of `grid` cells -> [B, K, ch, size, size];
    tiles near the border are shifted inside the image.
    """
    b, ch, H, W = x.shape
    k = cells.shape[1]
    top = torch.round(cells[..., 0].float() * H / grid[0]).long().clamp(0, max(H - size, 0))
    left = torch.round(cells[..., 1].float() * W / grid[1]).long().clamp(0, max(W - size, 0))
    offs = torch.arange(size, device=x.device)
    rows = (top[..., None] + offs).clamp(max=H - 1)  # [B, K, size]
    cols = (left[..., None] + offs).clamp(max=W - 1)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    tiles = x.permute(0, 2, 3, 1)[
        bi, rows[..., :, None], cols[..., None, :]
    ]  # [B, K, size, size, ch]
    return tiles.permute(0, 1, 4, 2, 3).reshape(b, k, ch, size, size)
