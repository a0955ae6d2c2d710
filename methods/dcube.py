"""D-Cube (Diffusion-Driven Diagnosis): classification on a frozen image diffusion
model's hyper-features, layers chosen by a Gaussianity (Kolmogorov-Smirnov) test.

Stage 1 trains a class-conditional U-ViT on the training images with the noise loss on
both images of a pair plus a contrastive loss on their mid-block features (the pair
shares t and noise; same class with probability 1/2; target 0 for the same class, a
hinge of margin 0.1 otherwise). It is cached by a hash of its settings, data and seed,
and reused by stage 2 and by "+Syn" (``syn:<method>``).

Stage 2 freezes it, feeds the clean image with a random t, tests every block output
against a Gaussian (KS, p < 0.05 = non-Gaussian = kept, as in the paper; the authors'
code hard-codes three layers: ``feature_layers: code``), and trains the head: the
kept layers' tokens (LayerNorm, token-mixing 1x1 conv onto a grid), a timm CNN's
sub-features and class scores (sum-pooled) that expand the single-channel fused map to
C channels, 3x3 + 5x5 conv stages and two FC layers. Loss = CE + lambda_cyc cycle +
0.1 consistency (logits of the image vs its horizontal flip), EMA of the head weights.

Paper vs authors' code (medical-ai-cv/D-Cube), each behind an option:
- ``cycle_form``: "paper" feeds the softmax-weighted class embedding of the prediction
  to the frozen model, so the cycle loss trains the classifier; "code" uses the argmax
  under no_grad, a constant that trains nothing.
- ``ema_decay``: the paper evaluates an EMA (0.999) of the head; the code computes one
  and never uses it (``ema_decay: null``).
- ``feature_layers``: "ks" (paper) or "code" (mid block, out blocks 1 and 2).
- Sub-feature CNN: ResNet-50 as in the code (the paper's tables name ResNeXt-101);
  ImageNet weights only from a local ``sub_weights_file`` (no downloads here).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.api.dataset import SplitData
from bench.api.errors import BenchError
from bench.api.method import (
    ClassificationMethod,
    MethodSpec,
    Param,
    RunContext,
    build_config,
    config_dict,
    register_method,
    register_method_prefix,
)
from bench.api.registry import METHODS
from bench.engine.images import save_class_grid
from bench.engine.training import (
    batches,
    from_device_batch,
    plan_steps,
    to_device_batch,
    train_loop,
)
from bench.nn.diffusion import ddim_scheduler, ddpm_scheduler, q_sample, reverse_process
from bench.nn.encoders import feature_map, timm_trunk
from bench.nn.labels import require_single_label
from bench.nn.pretraining import cache_key, cached_pretraining

# ------------------------------------------------------------------------ stage-1 model


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

    def __post_init__(self):
        if self.contrastive_reduction not in ("sum", "mean"):
            raise BenchError(
                f"D-Cube stage1.contrastive_reduction must be 'sum' or 'mean', not {self.contrastive_reduction!r}"
            )
        if self.depth % 2:
            raise BenchError(
                f"D-Cube stage1.depth must be even (in + out blocks), got {self.depth}"
            )


def stage1_config(overrides: dict[str, Any] | Stage1Config) -> Stage1Config:
    if isinstance(overrides, Stage1Config):
        return overrides
    return build_config(Stage1Config, overrides, "D-Cube stage1")


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


def contrastive_loss(
    a: torch.Tensor, b: torch.Tensor, different: torch.Tensor, margin: float, reduction: str = "sum"
) -> torch.Tensor:
    """Per pair: d = squared L2 between the flattened features (summed, or averaged per
    feature); loss = d for the same class, max(0, margin - d) for different classes
    (the authors' form). Returns the per-pair losses [B]."""
    sq = (a.flatten(1).float() - b.flatten(1).float()) ** 2
    d = sq.sum(dim=1) if reduction == "sum" else sq.mean(dim=1)
    different = different.to(d.dtype)
    return (1 - different) * d + different * torch.clamp(margin - d, min=0)


def partner_indices(
    labels: np.ndarray, anchors: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each anchor, a partner of the same class (probability 1/2) or of another
    class; returns (partner indices, different-class flags). With one class present,
    every partner is of the same class."""
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    partners, different = np.empty(len(anchors), dtype=np.int64), np.zeros(len(anchors), dtype=bool)
    for i, a in enumerate(anchors):
        own = labels[a]
        others = [c for c in by_class if c != own]
        if others and rng.random() < 0.5:
            pool = by_class[others[rng.integers(len(others))]]
            different[i] = True
        else:
            pool = by_class[own]
        partners[i] = pool[rng.integers(len(pool))]
    return partners, different


def train_stage1(
    unet: UViT,
    cfg: Stage1Config,
    train: SplitData,
    val: SplitData,
    ctx: RunContext,
    image_size: int,
) -> dict:
    """Noise MSE on both images of each pair (per-image sums over pixels, as the code)
    + contrastive loss on the mid-block tokens; AdamW; keeps the weights with the lowest
    validation noise loss (fixed t and noise). The suite's ``max_steps`` caps it."""
    alphas = ddpm_scheduler(cfg.timesteps, cfg.beta_start, cfg.beta_end).alphas_cumprod.to(
        ctx.device
    )
    total, epochs = plan_steps(len(train), cfg.batch_size, cfg.epochs, ctx.budget.max_steps)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(ctx.seed + 11)
    rng = np.random.default_rng(ctx.seed + 11)
    labels = np.asarray(train.labels)

    def step(idx):
        partners, different = partner_indices(labels, idx, rng)
        x1 = to_device_batch(train.images[idx], ctx.device, image_size)
        x2 = to_device_batch(train.images[partners], ctx.device, image_size)
        t = torch.randint(1, cfg.timesteps, (len(idx),), generator=gen).to(ctx.device)
        noise = torch.randn(x1.shape, generator=gen).to(ctx.device)
        y1 = torch.as_tensor(labels[idx], device=ctx.device).long()
        y2 = torch.as_tensor(labels[partners], device=ctx.device).long()
        with ctx.accelerator.autocast():
            e1, m1 = unet(q_sample(alphas, x1, t, noise), t, y1, return_mid=True)
            e2, m2 = unet(q_sample(alphas, x2, t, noise), t, y2, return_mid=True)
        mse = ((e1.float() - noise) ** 2).flatten(1).sum(1) + ((e2.float() - noise) ** 2).flatten(
            1
        ).sum(1)
        con = contrastive_loss(
            m1,
            m2,
            torch.as_tensor(different, device=ctx.device),
            cfg.margin,
            cfg.contrastive_reduction,
        )
        return (mse + cfg.contrastive_weight * con).mean()

    probe = np.arange(min(len(val), 256))
    probe_gen = torch.Generator().manual_seed(1234)
    probe_t = torch.randint(1, cfg.timesteps, (len(probe),), generator=probe_gen)
    probe_noise = torch.randn(
        (len(probe), unet.in_chans, image_size, image_size), generator=probe_gen
    )

    @torch.no_grad()
    def evaluate():  # mean per-image noise loss on a fixed validation probe (lower is better)
        total_loss = 0.0
        for chunk in batches(len(probe), ctx.budget.eval_batch_size):
            x = to_device_batch(val.images[probe[chunk]], ctx.device, image_size)
            t, n = probe_t[chunk].to(ctx.device), probe_noise[chunk].to(ctx.device)
            y = torch.as_tensor(val.labels[probe[chunk]], device=ctx.device).long()
            with ctx.accelerator.autocast():
                eps = unet(q_sample(alphas, x, t, n), t, y).float()
            total_loss += ((eps - n) ** 2).flatten(1).sum(1).sum().item()
        return total_loss / len(probe)

    return train_loop(
        unet,
        step,
        evaluate,
        ctx,
        n_train=len(train),
        batch_size=cfg.batch_size,
        total_steps=total,
        epochs=epochs,
        optimizer=opt,
        higher_is_better=False,
        metric_name="noise_mse",
        eval_every=cfg.eval_every,
        generators=(gen, rng),
        desc="D-Cube stage 1",
    )


def stage1_model(
    cfg: Stage1Config, spec, train: SplitData, val: SplitData, ctx: RunContext
) -> tuple[UViT, dict]:
    """The trained stage-1 U-ViT for this data, seed and config: from the shared cache
    when it was trained before (by D-Cube or by a "+Syn" run), else trained and stored."""
    require_single_label("D-Cube", spec)
    size = cfg.image_size or spec.size
    unet = UViT(cfg, size, spec.channels, spec.num_classes).to(ctx.device)
    payload = {
        "model": "dcube-uvit",
        "stage1": dataclasses.asdict(cfg),
        "image_size": size,
        "classes": spec.num_classes,
        "channels": spec.channels,
        "max_steps": ctx.budget.max_steps,
    }
    summary = cached_pretraining(
        "dcube_stage1", payload, unet, lambda: train_stage1(unet, cfg, train, val, ctx, size), ctx
    )
    unet.requires_grad_(False).eval()
    return unet, summary


# ------------------------------------------------------------------- layer selection


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


# ------------------------------------------------------------------------ stage-2 head


class MultiKernelStage(nn.Module):
    """3x3 and 5x5 conv branches (ReLU) summed, then BatchNorm; no pooling."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv3 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv5 = nn.Conv2d(cin, cout, 5, padding=2)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.relu(self.conv3(x)) + F.relu(self.conv5(x)))


class DCubeHead(nn.Module):
    """The trainable classifier on the frozen model's selected block outputs.

    Tokens of the kept layers (shared LayerNorm) are concatenated along the token axis
    and mixed by a 1x1 conv onto a grid x grid map with `dim` channels; a timm CNN
    gives a sub-feature map (3x3 conv to `dim`, resized to the grid) and class scores
    (1x1 conv, sum-pooled). A 1x1 conv fuses both maps to one channel x, and
    x + x * scores expands it to C channels; then three multi-kernel stages (C -> 64 ->
    32 -> 4) and two FC layers (-> 32 -> C, dropout 0.5).
    """

    def __init__(
        self,
        n_layers: int,
        tokens: int,
        dim: int,
        grid: int,
        in_chans: int,
        num_classes: int,
        sub_model: str,
        sub_small_stem: bool,
        use_sub_features: bool = True,
    ):
        super().__init__()
        self.grid, self.use_sub = grid, use_sub_features
        self.norm_f = nn.LayerNorm(dim)
        self.mix = nn.Conv1d(n_layers * tokens, grid * grid, kernel_size=1)
        if use_sub_features:
            self.to_rgb = nn.Conv2d(in_chans, 3, kernel_size=3, padding=1)
            self.trunk = timm_trunk(sub_model, 3, sub_small_stem)
            self.sub_proj = nn.Conv2d(self.trunk.num_features, dim, kernel_size=3, padding=1)
            self.score = nn.Conv2d(self.trunk.num_features, num_classes, kernel_size=1)
        self.fuse = nn.Conv2d(2 * dim if use_sub_features else dim, 1, kernel_size=1)
        chans = [num_classes if use_sub_features else 1, 64, 32, 4]
        self.stages = nn.Sequential(*(MultiKernelStage(a, b) for a, b in zip(chans, chans[1:])))
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(4 * grid * grid, 32),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(32, num_classes),
        )

    def forward(self, layers: list[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.norm_f(h) for h in layers], dim=1)  # [B, n * L, dim]
        b, _, dim = tokens.shape
        x = self.mix(tokens).transpose(1, 2).reshape(b, dim, self.grid, self.grid)
        if not self.use_sub:
            return self.fc(self.stages(self.fuse(x)))
        f = feature_map(self.trunk, self.to_rgb(image))
        sub = F.interpolate(
            self.sub_proj(f), size=(self.grid, self.grid), mode="bilinear", align_corners=False
        )
        scores = self.score(f).sum(dim=(2, 3), keepdim=True)  # [B, C, 1, 1]
        x = self.fuse(torch.cat([x, sub], dim=1))  # [B, 1, g, g]
        return self.fc(self.stages(x + x * scores))


def cycle_loss(
    unet: UViT,
    x0: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    alphas: torch.Tensor,
    form: str,
    generator: torch.Generator,
    timesteps: int,
) -> torch.Tensor:
    """MSE between the frozen model's noise predictions for the same x_t and t under
    the predicted class and under the true class. "paper": the prediction enters as
    the softmax-weighted class embedding (differentiable); "code": as the argmax,
    everything under no_grad (a constant)."""
    t = torch.randint(1, timesteps, (len(x0),), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    x_t = q_sample(alphas, x0, t, noise)
    with torch.no_grad():
        target = unet(x_t, t, labels).float()
        if form == "code":
            return F.mse_loss(unet(x_t, t, logits.argmax(dim=1)).float(), target)
    return F.mse_loss(unet(x_t, t, probs=torch.softmax(logits.float(), dim=1)).float(), target)


# ------------------------------------------------------------------------------ method


@dataclass
class DCubeConfig:
    stage1: dict = field(default_factory=dict)  # Stage1Config overrides; recorded resolved
    feature_layers: Any = "ks"  # "ks" (paper), "code" (mid, out1, out2), "last", or block indices
    ks_alpha: float = 0.05
    ks_batch: int = 64  # training images whose features are tested
    ks_samples: int = 1000  # values drawn from each layer's features for the test
    head_grid: int | None = None  # side of the mixed-token map; None: the U-ViT patch grid
    sub_model: str = "resnet50"  # timm CNN for sub-features (code: ResNet-50; paper: ResNeXt-101)
    sub_small_stem: bool = False  # 3x3/1 stem for 28 px inputs
    sub_weights_file: str | None = None  # local ImageNet weights for the sub-feature CNN
    use_sub_features: bool = True
    lr: float = 2e-4
    weight_decay: float = 0.03  # code; the paper uses 0.1 for its small breast set
    cycle_weight: float = 10.0  # paper: 10 (pancreas), 100 (breast)
    cycle_form: str = "paper"  # "paper" (differentiable) | "code" (argmax, no gradient)
    consistency_weight: float = 0.1
    ema_decay: float | None = 0.999  # None: evaluate the raw weights (what the code does)
    hflip: bool = True  # random horizontal flips, p = 0.5
    eval_every: int = 1

    def __post_init__(self):
        self.stage1 = dataclasses.asdict(stage1_config(self.stage1))
        if self.cycle_form not in ("paper", "code"):
            raise BenchError(
                f"D-Cube cycle_form must be 'paper' or 'code', not {self.cycle_form!r}"
            )
        if not (
            isinstance(self.feature_layers, (list, tuple))
            or self.feature_layers in ("ks", "code", "last")
        ):
            raise BenchError(
                f"D-Cube feature_layers must be 'ks', 'code', 'last' or a list of block indices, not {self.feature_layers!r}"
            )


@register_method(
    "dcube",
    "D-Cube: frozen class-conditional U-ViT hyper-features, KS layer selection, CNN sub-features",
)
class DCube(ClassificationMethod):
    Config = DCubeConfig
    #: the paper tunes lambda_cyc per dataset (10, 100) and fixes alpha = 0.05, lambda_cr = 0.1
    SEARCH_SPACE = {
        "lambda_cyc": Param("cycle_weight", choices=(1.0, 10.0, 100.0)),
        "alpha": Param("ks_alpha", choices=(0.01, 0.05, 0.1)),
        "lambda_cr": Param("consistency_weight", choices=(0.0, 0.1, 1.0)),
        "lr": Param("lr", low=1e-5, high=1e-3, log=True),
    }

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.extras = {}
        self.s1 = Stage1Config(**config.stage1)
        self.image_size = self.s1.image_size or spec.size

    def fixed_layers(self, unet: UViT) -> list[int] | None:
        h = len(unet.in_blocks)
        choice = self.config.feature_layers
        if choice == "ks":
            return None
        if choice == "code":
            return [h, h + 2, h + 3] if h >= 3 else [h] + list(range(h + 1, unet.num_blocks))
        if choice == "last":
            return [unet.num_blocks - 1]
        bad = [i for i in choice if not 0 <= int(i) < unet.num_blocks]
        if bad:
            raise BenchError(
                f"D-Cube feature_layers {bad} out of range 0..{unet.num_blocks - 1} ({unet.block_names()})"
            )
        return sorted(int(i) for i in choice)

    def select_layers(self, train: SplitData, ctx: RunContext) -> dict:
        names = self.unet.block_names()
        fixed = self.fixed_layers(self.unet)
        if fixed is not None:
            return {
                "method": self.config.feature_layers,
                "kept": fixed,
                "kept_names": [names[i] for i in fixed],
            }
        cfg = self.config
        idx = np.random.default_rng(ctx.seed + 13).permutation(len(train))[: cfg.ks_batch]
        gen = torch.Generator().manual_seed(ctx.seed + 13)
        with torch.no_grad():
            x = to_device_batch(train.images[idx], ctx.device, self.image_size)
            t = torch.randint(1, self.s1.timesteps, (len(idx),), generator=gen).to(ctx.device)
            feats = [h.float().cpu().numpy() for h in self.unet.blocks(x, t)]
        result = ks_layer_selection(feats, names, cfg.ks_alpha, cfg.ks_samples, seed=ctx.seed)
        result["method"] = "ks"
        if ctx.artifact_stem is not None:
            path = ctx.artifact_stem.parent / f"{ctx.artifact_stem.name}.ks.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            plot_ks(result, path, f"D-Cube KS test, {self.spec.name}, seed {ctx.seed}")
            result["plot"] = path.name
        return result

    def build_head(self) -> DCubeHead:
        cfg = self.config
        head = DCubeHead(
            len(self.layers),
            self.unet.tokens,
            self.s1.dim,
            cfg.head_grid or self.unet.grid,
            self.spec.channels,
            self.spec.num_classes,
            cfg.sub_model,
            cfg.sub_small_stem,
            cfg.use_sub_features,
        )
        if cfg.sub_weights_file and cfg.use_sub_features:
            from bench.nn.timm_models import load_weights

            load_weights(head.trunk, cfg.sub_weights_file)
        return head

    def logits(self, head: DCubeHead, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            blocks = self.unet.blocks(x, t, upto=self.layers[-1])
        return head([blocks[i] for i in self.layers], x)

    def fit(self, train: SplitData, val: SplitData, ctx: RunContext) -> dict:
        from timm.utils import ModelEmaV3

        from bench.metrics.classification import METRICS

        cfg, s1 = self.config, self.s1
        self.unet, stage1 = stage1_model(s1, self.spec, train, val, ctx)
        selection = self.select_layers(train, ctx)
        self.layers = selection["kept"]
        ctx.log(f"D-Cube: layers {selection['kept_names']} ({selection['method']})")
        head = self.build_head().to(ctx.device)
        ema = ModelEmaV3(head, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay else None
        self.model = nn.ModuleDict({"head": head, **({"ema": ema.module} if ema else {})})
        alphas = ddpm_scheduler(s1.timesteps, s1.beta_start, s1.beta_end).alphas_cumprod.to(
            ctx.device
        )
        budget = ctx.budget
        total, epochs = plan_steps(len(train), budget.batch_size, budget.epochs, budget.max_steps)
        opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(ctx.seed + 17)
        auroc = METRICS.get("auroc")

        def step(idx):
            x = to_device_batch(train.images[idx], ctx.device, self.image_size)
            if cfg.hflip:
                flip = (torch.rand(len(idx), generator=gen) < 0.5).to(x.device)
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            y = torch.as_tensor(train.labels[idx], device=ctx.device).long()
            t = torch.randint(1, s1.timesteps, (len(idx),), generator=gen).to(ctx.device)
            with ctx.accelerator.autocast():
                logits = self.logits(head, x, t).float()
                loss = F.cross_entropy(logits, y)
                if cfg.consistency_weight:
                    loss = loss + cfg.consistency_weight * F.mse_loss(
                        self.logits(head, x.flip(-1), t).float(), logits
                    )
                if cfg.cycle_weight:
                    loss = loss + cfg.cycle_weight * cycle_loss(
                        self.unet, x, logits, y, alphas, cfg.cycle_form, gen, s1.timesteps
                    )
            return loss

        def evaluate():
            return auroc(val.labels, self.predict(val, ctx), self.spec.task)

        summary = train_loop(
            self.model,
            step,
            evaluate,
            ctx,
            n_train=len(train),
            batch_size=budget.batch_size,
            total_steps=total,
            epochs=epochs,
            optimizer=opt,
            metric_name="auroc",
            eval_every=cfg.eval_every,
            after_step=(lambda s: ema.update(head, step=s)) if ema else None,
            generators=(gen,),
            desc="D-Cube stage 2",
        )
        self.probe = self.fit_probe(train, ctx)
        return {**summary, "stage1": stage1, "layers": selection}

    def eval_timesteps(self, n: int, ctx: RunContext) -> torch.Tensor:
        """Each evaluated image's random t, seeded: the same for every call on a split."""
        return torch.randint(
            1, self.s1.timesteps, (n,), generator=torch.Generator().manual_seed(ctx.seed + 19)
        )

    @torch.no_grad()
    def hyper_features(self, split: SplitData, ctx: RunContext) -> np.ndarray:
        """The kept layers' tokens, mean-pooled and concatenated [N, layers * dim], at one
        seeded random t per image (as in predict)."""
        ts = self.eval_timesteps(len(split), ctx)
        out = []
        for idx in batches(len(split), ctx.budget.eval_batch_size):
            x = to_device_batch(split.images[idx], ctx.device, self.image_size)
            with ctx.accelerator.autocast():
                blocks = self.unet.blocks(x, ts[idx].to(ctx.device), upto=self.layers[-1])
            out.append(torch.cat([blocks[i].float().mean(dim=1) for i in self.layers], dim=1).cpu())
        return torch.cat(out).numpy()

    def fit_probe(self, train: SplitData, ctx: RunContext):
        """What the frozen stage-1 features give alone: a logistic regression on them
        (scikit-learn, standardised), D-Cube's counterpart of the other methods' priors."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(
            self.hyper_features(train, ctx), train.labels
        )

    def prior_predictions(self, split: SplitData, ctx: RunContext) -> dict[str, np.ndarray]:
        probs = np.zeros((len(split), self.spec.num_classes))
        probs[:, self.probe.classes_] = self.probe.predict_proba(self.hyper_features(split, ctx))
        return {"U-ViT features, linear probe": probs}

    @torch.no_grad()
    def predict(self, split: SplitData, ctx: RunContext) -> np.ndarray:
        head = self.model["ema"] if "ema" in self.model else self.model["head"]
        head.eval()
        ts = self.eval_timesteps(len(split), ctx)
        out = []
        for idx in batches(len(split), ctx.budget.eval_batch_size):
            x = to_device_batch(split.images[idx], ctx.device, self.image_size)
            with ctx.accelerator.autocast():
                out.append(
                    torch.softmax(self.logits(head, x, ts[idx].to(ctx.device)).float(), dim=1).cpu()
                )
        return torch.cat(out).numpy().astype(np.float64)


# ---------------------------------------------------------------------------- "+Syn"


@torch.no_grad()
def sample_images(
    unet: UViT,
    labels: np.ndarray,
    cfg: Stage1Config,
    ctx: RunContext,
    *,
    sampler: str,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
    rederived_eps: bool = True,
) -> torch.Tensor:
    """Class-conditional samples in [-1, 1]: diffusers DDPM (posterior variance, as the
    authors' sampler) or DDIM (eta 0, x0 clipped; `rederived_eps`: the direction term
    uses the eps of the clipped x0), `steps` steps; no guidance (the model has no
    unconditional branch)."""
    scheduler = (ddpm_scheduler if sampler == "ddpm" else ddim_scheduler)(
        cfg.timesteps, cfg.beta_start, cfg.beta_end
    )
    scheduler.set_timesteps(steps)
    size = unet.grid * unet.patch
    out = []
    for idx in batches(len(labels), batch_size):
        y = torch.as_tensor(labels[idx], device=ctx.device).long()
        x = torch.randn((len(idx), unet.in_chans, size, size), generator=generator).to(ctx.device)

        def eps(x_t, t, y=y):
            with ctx.accelerator.autocast():
                return unet(x_t, t, y)

        out.append(
            reverse_process(eps, x, scheduler, generator, rederived_eps and sampler == "ddim")
            .clamp(-1, 1)
            .cpu()
        )
    return torch.cat(out)


def synthetic_counts(
    counts: np.ndarray, balance: float, add_per_class: list[int] | None
) -> np.ndarray:
    """Images to add per class: explicit counts, or enough to bring every class up to
    `balance` x the largest class's count (1.0 = balanced)."""
    if add_per_class is not None:
        add = np.asarray(add_per_class, dtype=np.int64)
        if add.shape != counts.shape or (add < 0).any():
            raise BenchError(
                f"+Syn add_per_class needs {len(counts)} non-negative counts, got {add_per_class}"
            )
        return add
    target = int(math.ceil(balance * counts.max()))
    return np.maximum(target - counts, 0)


@dataclass
class SynConfig:
    base: str = "resnet18"  # the wrapped method's registry name
    base_options: dict = field(default_factory=dict)  # its options; recorded resolved
    stage1: dict = field(
        default_factory=dict
    )  # D-Cube stage-1 options (same key = same cached model)
    balance: float = 1.0
    add_per_class: list | None = None  # explicit images to add per class (overrides balance)
    sampler: str = "ddpm"  # the authors': ancestral DDPM over all T steps
    sampling_steps: int = 1000
    sample_batch: int = 256
    ddim_eps: str = "rederived"  # with sampler ddim: eps re-derived from the clipped x0 | raw (diffusers' default)

    def __post_init__(self):
        if self.ddim_eps not in ("rederived", "raw"):
            raise BenchError(f"+Syn ddim_eps must be 'rederived' or 'raw', not {self.ddim_eps!r}")
        if self.base.startswith("syn:"):
            raise BenchError("+Syn cannot wrap another +Syn method")
        self.stage1 = dataclasses.asdict(stage1_config(self.stage1))
        self.base_options = config_dict(METHODS.get(self.base).make_config(self.base_options))
        if self.sampler not in ("ddpm", "ddim"):
            raise BenchError(f"+Syn sampler must be 'ddpm' or 'ddim', not {self.sampler!r}")


class SynAugmented(ClassificationMethod):
    """+Syn (D-Cube Table III): train a method on the training split rebalanced with
    minority-class images sampled from the (cached) D-Cube stage-1 model."""

    Config = SynConfig

    def __init__(self, config, spec):
        super().__init__(config, spec)
        base = METHODS.get(config.base)
        self.inner = base.cls(base.make_config(config.base_options), spec)
        self.s1 = Stage1Config(**config.stage1)

    @property
    def extras(self):
        return self.inner.extras

    def synthesise(
        self, train: SplitData, val: SplitData, ctx: RunContext
    ) -> tuple[SplitData, dict]:
        cfg = self.config
        unet, stage1 = stage1_model(self.s1, self.spec, train, val, ctx)
        counts = np.bincount(train.labels, minlength=self.spec.num_classes)
        add = synthetic_counts(counts, cfg.balance, cfg.add_per_class)
        labels = np.repeat(np.arange(len(add)), add)
        key = cache_key(
            {
                "stage1": stage1["file"],
                "labels": add.tolist(),
                "sampler": cfg.sampler,
                "steps": cfg.sampling_steps,
                "seed": ctx.seed,
                **({"ddim_eps": cfg.ddim_eps} if cfg.sampler == "ddim" else {}),
            }
        )
        path = (ctx.cache_dir or ctx.checkpoint_dir) / "dcube_syn" / f"{key}.npz"
        if path.is_file():
            with np.load(path) as f:
                images, cache = f["images"], "hit"
        else:
            ctx.log(
                f"+Syn: sampling {len(labels)} images {add.tolist()} ({cfg.sampler}, {cfg.sampling_steps} steps)"
            )
            gen = torch.Generator().manual_seed(ctx.seed + 23)
            x = (
                sample_images(
                    unet,
                    labels,
                    self.s1,
                    ctx,
                    sampler=cfg.sampler,
                    steps=cfg.sampling_steps,
                    batch_size=cfg.sample_batch,
                    generator=gen,
                    rederived_eps=cfg.ddim_eps == "rederived",
                )
                if len(labels)
                else torch.zeros(0, self.spec.channels, self.spec.size, self.spec.size)
            )
            images, cache = from_device_batch(x, self.spec.size), "miss"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, images=images, labels=labels)
        augmented = SplitData(
            np.concatenate([train.images, images]),
            np.concatenate([train.labels, labels]),
            list(train.ids) + [f"syn-{c}-{i}" for i, c in enumerate(labels)],
        )
        info = {
            "counts_before": counts.tolist(),
            "added": add.tolist(),
            "counts_after": np.bincount(augmented.labels, minlength=self.spec.num_classes).tolist(),
            "sampler": cfg.sampler,
            "steps": cfg.sampling_steps,
            "cache": cache,
            "stage1": stage1,
        }
        if ctx.artifact_stem is not None and len(labels):
            grid = save_class_grid(
                images, labels, ctx.artifact_stem.parent / f"{ctx.artifact_stem.name}.synthetic.png"
            )
            info["samples_png"] = grid.name
        return augmented, info

    def fit(self, train: SplitData, val: SplitData, ctx: RunContext) -> dict:
        augmented, info = self.synthesise(train, val, ctx)
        ctx.log(f"+Syn: class counts {info['counts_before']} -> {info['counts_after']}")
        return {**(self.inner.fit(augmented, val, ctx) or {}), "synthetic": info}

    def predict(self, split: SplitData, ctx: RunContext) -> np.ndarray:
        return self.inner.predict(split, ctx)


def _syn_spec(base: str) -> MethodSpec:
    METHODS.get(base)  # unknown base names fail here, with a suggestion
    return MethodSpec(
        SynAugmented,
        {"base": base},
        f"{base} trained on a set rebalanced with D-Cube stage-1 samples",
    )


register_method_prefix(
    "syn",
    _syn_spec,
    "+Syn: any method on a training set rebalanced with D-Cube stage-1 samples, e.g. syn:resnet18",
)
