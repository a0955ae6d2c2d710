"""Stage 1's model: the class-conditional U-ViT (in, mid and out blocks with long skips)
and its configuration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from bench.api.errors import BenchError
from bench.api.method import build_config, without_later_defaults


@dataclass
class Stage1Config:
    """The class-conditional U-ViT and its training (authors' code: 128 px, patch 8,
    dim 512, depth 12 = 6 in + mid + 6 out blocks, 8 heads, AdamW 2e-4, batch 64, 70
    epochs; the paper trains 280-950 epochs "until FID stabilised")."""

    image_size: int | None = None  # None: the data's size; must be a multiple of patch_size
    patch_size: int = 8
    dim: int = 512
    depth: int = 12  # in + out blocks; plus one mid block
    heads: int = 8
    mlp_ratio: float = 4.0
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    epochs: int = 70
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.01  # AdamW's default, as in the code
    margin: float = 0.1
    contrastive_weight: float = 1.0
    # "sum": squared L2 summed over the flattened mid-block tokens (the code; the margin
    # then rarely binds); "mean": averaged per feature, so the margin of 0.1 matters
    contrastive_reduction: str = "sum"
    eval_every: int = 10  # validation denoising loss, for keeping the best weights
    # stop after this many validations without a lower noise loss (a plateau); None: all
    # `epochs`, as the authors' code. Added later: left out of the identity when None
    patience: int | None = None
    # one stage 1 for every seed of a dataset (trained with this seed, then from the cache;
    # each seed still trains its own head); None: each unit's own seed. Added later
    seed: int | None = None

    def __post_init__(self):
        if self.contrastive_reduction not in ("sum", "mean"):
            raise BenchError(
                f"D-Cube stage1.contrastive_reduction must be 'sum' or 'mean', not {self.contrastive_reduction!r}"
            )
        if self.depth % 2:
            raise BenchError(
                f"D-Cube stage1.depth must be even (in + out blocks), got {self.depth}"
            )


LATER_STAGE1_DEFAULTS = {"patience": None, "seed": None}


def stage1_config(overrides: dict[str, Any] | Stage1Config) -> Stage1Config:
    if isinstance(overrides, Stage1Config):
        return overrides
    return build_config(Stage1Config, overrides, "D-Cube stage1")


def stage1_identity(overrides: dict[str, Any] | Stage1Config) -> dict[str, Any]:
    """The resolved stage-1 settings as a config records them (and its cache is keyed):
    fields added later are left out at their defaults, so earlier units keep their hash."""
    fields = dataclasses.asdict(stage1_config(overrides))
    return without_later_defaults(fields, LATER_STAGE1_DEFAULTS)


class UViTBlock(nn.Module):
    """A pre-norm transformer block (timm), with U-ViT's long-skip input: concatenate
    the matching in-block's output and project back to `dim` first."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, skip: bool):
        super().__init__()
        from timm.models.vision_transformer import Block

        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.block = Block(dim, heads, mlp_ratio, qkv_bias=False)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        return self.block(x)


class UViT(nn.Module):
    """U-ViT (Bao et al. 2023) as in the D-Cube code: patch tokens plus one time token
    (the raw sinusoidal embedding), the class embedding added to every token, long
    skips from in-blocks to out-blocks, then LayerNorm, linear to patches, 3x3 conv."""

    def __init__(self, cfg: Stage1Config, image_size: int, in_chans: int, num_classes: int):
        super().__init__()
        if image_size % cfg.patch_size:
            raise BenchError(
                f"D-Cube: image size {image_size} is not a multiple of patch_size {cfg.patch_size}"
            )
        self.patch, self.in_chans, self.dim = cfg.patch_size, in_chans, cfg.dim
        self.grid = image_size // cfg.patch_size
        self.patch_embed = nn.Conv2d(
            in_chans, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size
        )
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, cfg.dim))
        self.label_emb = nn.Embedding(num_classes, cfg.dim)
        half = cfg.depth // 2
        self.in_blocks = nn.ModuleList(
            UViTBlock(cfg.dim, cfg.heads, cfg.mlp_ratio, skip=False) for _ in range(half)
        )
        self.mid_block = UViTBlock(cfg.dim, cfg.heads, cfg.mlp_ratio, skip=False)
        self.out_blocks = nn.ModuleList(
            UViTBlock(cfg.dim, cfg.heads, cfg.mlp_ratio, skip=True) for _ in range(half)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self.decoder_pred = nn.Linear(cfg.dim, cfg.patch_size**2 * in_chans)
        self.final_layer = nn.Conv2d(in_chans, in_chans, kernel_size=3, padding=1)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(_init_weights)

    @property
    def num_blocks(self) -> int:
        return len(self.in_blocks) + 1 + len(self.out_blocks)

    @property
    def tokens(self) -> int:
        return 1 + self.grid**2

    def block_names(self) -> list[str]:
        h = len(self.in_blocks)
        return [f"in{i}" for i in range(h)] + ["mid"] + [f"out{i}" for i in range(h)]

    def class_embedding(
        self, y: torch.Tensor | None = None, probs: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Embedding of labels `y`, or the probability-weighted mix for soft labels."""
        if probs is not None:
            return probs.to(self.label_emb.weight.dtype) @ self.label_emb.weight
        return None if y is None else self.label_emb(y)

    def blocks(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        class_emb: torch.Tensor | None = None,
        upto: int | None = None,
    ) -> list[torch.Tensor]:
        """Every block's output [B, 1 + N, dim] in order (in..., mid, out...), stopping
        after block `upto` when given (stage 2 needs no more)."""
        from diffusers.models.embeddings import get_timestep_embedding

        last = self.num_blocks - 1 if upto is None else upto
        h = self.patch_embed(x).flatten(2).transpose(1, 2)
        temb = get_timestep_embedding(t, self.dim, flip_sin_to_cos=True, downscale_freq_shift=0).to(
            h.dtype
        )
        h = torch.cat([temb[:, None, :], h], dim=1) + self.pos_embed
        if class_emb is not None:
            h = h + class_emb[:, None, :].to(h.dtype)
        outputs, skips = [], []
        for block in self.in_blocks:
            h = block(h)
            skips.append(h)
            outputs.append(h)
            if len(outputs) > last:
                return outputs
        h = self.mid_block(h)
        outputs.append(h)
        for block in self.out_blocks:
            if len(outputs) > last:
                return outputs
            h = block(h, skips.pop())
            outputs.append(h)
        return outputs

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        b = h.shape[0]
        p, g, c = self.patch, self.grid, self.in_chans
        x = self.decoder_pred(self.norm(h))[:, 1:]  # drop the time token
        x = x.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, g * p, g * p)
        return self.final_layer(x)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        probs: torch.Tensor | None = None,
        return_mid: bool = False,
    ):
        """Predicted noise; with `return_mid`, also the mid-block tokens (contrastive loss)."""
        outs = self.blocks(x, t, self.class_embedding(y, probs))
        eps = self.decode(outs[-1])
        return (eps, outs[len(self.in_blocks)]) if return_mid else eps


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
