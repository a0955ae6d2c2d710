"""Building blocks shared by the label-diffusion classifiers (CARD, DiffMIC, DiffMIC-v2).

These methods diffuse the *label* (a one-hot or multi-hot vector, or a grid of them),
not the image. Shared here, so each method file only holds what is its own:

- noise schedules (diffusers schedulers) and forward noising with per-element timesteps;
  the diffusers DDPM U-Net of the image-diffusion methods (ODM, the restoration denoiser);
- ``TimeScaledMLP``: the CARD head (linear layers scaled by a learned embedding of t,
  BatchNorm, softplus, image feature multiplied in after the first layer), which the
  DiffMIC-v2 authors also use point-wise on their N_p x N_p grid;
- the DCG prior model (global saliency map, top-K ROI tiles, local branch with gated
  attention) of DiffMIC / DiffMIC-v2, after the authors' ``pretraining/`` code;
- timm feature encoders, and a cache for pretrained priors keyed by a hash of what
  defines them (data and splits, seed, config, budget).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.api.errors import BenchError
from bench.api.method import RunContext

# ---------------------------------------------------------------------------- schedules


def ddim_scheduler(timesteps: int, beta_start: float, beta_end: float, clip_sample: bool = True):
    """diffusers DDIM with linear betas; x0 clipped to [-1, 1], alpha_prev(0) = 1."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=timesteps,
        beta_start=beta_start,
        beta_end=beta_end,
        beta_schedule="linear",
        clip_sample=clip_sample,
        set_alpha_to_one=True,
    )


def ddpm_scheduler(timesteps: int, beta_start: float, beta_end: float):
    """diffusers DDPM (posterior variance, no clipping), as CARD's reverse chain."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=timesteps,
        beta_start=beta_start,
        beta_end=beta_end,
        beta_schedule="linear",
        clip_sample=False,
        variance_type="fixed_small",
    )


def diffusers_unet(
    size: int,
    in_channels: int,
    out_channels: int,
    block_out_channels,
    layers_per_block: int,
    attention_resolution: int,
    norm_num_groups: int,
    dropout: float,
    num_class_embeds: int | None = None,
):
    """Ho et al.'s DDPM U-Net as diffusers ``UNet2DModel``: residual blocks, self-attention
    at the level whose feature map is `attention_resolution` px, optional class embeddings."""
    from diffusers import UNet2DModel

    attn = [size // 2**i == attention_resolution for i in range(len(block_out_channels))]
    return UNet2DModel(
        sample_size=size,
        in_channels=in_channels,
        out_channels=out_channels,
        layers_per_block=layers_per_block,
        block_out_channels=tuple(block_out_channels),
        norm_num_groups=norm_num_groups,
        dropout=dropout,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        num_class_embeds=num_class_embeds,
    )


def q_sample(
    alphas_cumprod: torch.Tensor, y0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """sqrt(ab_t) y0 + sqrt(1 - ab_t) noise, with `t` broadcastable to `y0` (per point)."""
    ab = alphas_cumprod.to(y0.device)[t].to(y0.dtype)
    while ab.dim() < y0.dim():
        ab = ab.unsqueeze(-1)
    return ab.sqrt() * y0 + (1 - ab).sqrt() * noise


def antithetic_timesteps(
    n: int, timesteps: int, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """CARD's antithetic sampling: t and T-1-t in pairs."""
    t = torch.randint(0, timesteps, (n // 2 + 1,), generator=generator)
    return torch.cat([t, timesteps - 1 - t])[:n].to(device)


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


# ----------------------------------------------------------------------------- the head


class TimeScaledLinear(nn.Module):
    """Linear layer whose output is scaled element-wise by an embedding of the timestep
    (CARD's ConditionalLinear; the embedding table is initialised uniform [0, 1))."""

    def __init__(self, num_in: int, num_out: int, n_steps: int):
        super().__init__()
        self.lin = nn.Linear(num_in, num_out)
        self.embed = nn.Embedding(n_steps, num_out)
        nn.init.uniform_(self.embed.weight)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * self.embed(t)


class TimeScaledMLP(nn.Module):
    """CARD's conditional head: 3 x (time-scaled linear, BatchNorm, softplus), the image
    feature multiplied in after the first block, then a linear layer to the output.

    Works on points: x [B, P, in], t [B, P], feature [B, hidden] (shared by the P points
    of an image) -> [B, P, out]. CARD / DiffMIC use P = 1; DiffMIC-v2's authors' denoiser
    is this head on the N_p x N_p grid (their 1x1 convolutions are point-wise linears and
    BatchNorm2d over the grid equals BatchNorm over all points).
    """

    def __init__(self, num_in: int, hidden: int, num_out: int, n_steps: int):
        super().__init__()
        self.lin1 = TimeScaledLinear(num_in, hidden, n_steps)
        self.lin2 = TimeScaledLinear(hidden, hidden, n_steps)
        self.lin3 = TimeScaledLinear(hidden, hidden, n_steps)
        self.norms = nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(3))
        self.out = nn.Linear(hidden, num_out)

    def _block(self, lin, norm, h, t):
        b, p = t.shape
        h = lin(h, t)
        return F.softplus(norm(h.reshape(b * p, -1)).reshape(b, p, -1))

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, feature: torch.Tensor | None
    ) -> torch.Tensor:
        h = self._block(self.lin1, self.norms[0], x, t)
        if feature is not None:
            h = h * feature[:, None, :]
        h = self._block(self.lin2, self.norms[1], h, t)
        h = self._block(self.lin3, self.norms[2], h, t)
        return self.out(h)


# ------------------------------------------------------------------------------ encoders


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
        if not (isinstance(getattr(model, "conv1", None), nn.Conv2d) and hasattr(model, "maxpool")):
            raise BenchError(f"small_input_stem applies to ResNet-style encoders, not {name}")
        model.conv1 = nn.Conv2d(
            in_chans, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False
        )
        model.maxpool = nn.Identity()
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


# ----------------------------------------------------------------------------------- DCG


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


@dataclass
class DCGOutput:
    fused: torch.Tensor  # [B, C] logits: 0.5 (global + local), as in the authors' code
    global_: torch.Tensor  # [B, C] mean of the saliency map
    local: torch.Tensor  # [B, C] from the gated-attention pooled ROI features
    rois: torch.Tensor  # [B, K, ch, r, r] the cropped tiles
    roi_attention: torch.Tensor  # [B, K]
    saliency: torch.Tensor  # [B, C, h, w]


class DCG(nn.Module):
    """Dual-granularity conditional guidance model (DiffMIC / DiffMIC-v2).

    Global branch: trunk -> 1x1 conv (no bias) -> C-channel saliency map; global prior =
    its mean. Local branch: K tiles of `roi_size` px at the most salient cells -> trunk
    -> gated attention -> linear (no bias) -> local prior. Priors are logits.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int,
        backbone: str = "resnet18",
        small_input_stem: bool = False,
        num_rois: int = 6,
        roi_size: int = 32,
        attn_dim: int = 128,
    ):
        super().__init__()
        self.num_rois, self.roi_size = num_rois, roi_size
        self.global_trunk = timm_trunk(backbone, in_chans, small_input_stem)
        self.saliency = nn.Conv2d(
            self.global_trunk.num_features, num_classes, kernel_size=1, bias=False
        )
        self.local_trunk = timm_trunk(backbone, in_chans, small_input_stem)
        self.attention = GatedAttention(self.local_trunk.num_features, attn_dim)
        self.local_head = nn.Linear(self.local_trunk.num_features, num_classes, bias=False)

    def global_prior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        saliency = self.saliency(feature_map(self.global_trunk, x))
        return saliency.mean(dim=(2, 3)), saliency

    def forward(self, x: torch.Tensor) -> DCGOutput:
        y_global, saliency = self.global_prior(x)
        h, w = saliency.shape[-2:]
        window = max(1, int(round(self.roi_size * h / x.shape[-2])))
        cells = select_roi_cells(saliency, self.num_rois, window)
        rois = crop_tiles(x, cells, (h, w), self.roi_size)
        b, k = rois.shape[:2]
        r = self.local_trunk(rois.reshape(b * k, *rois.shape[2:])).reshape(b, k, -1)
        z, alpha = self.attention(r)
        y_local = self.local_head(z)
        return DCGOutput(0.5 * (y_global + y_local), y_global, y_local, rois, alpha, saliency)


# ------------------------------------------------------------------ supervised priors


def fit_prior(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    train,
    val,
    ctx: RunContext,
    spec,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    image_size: int | None,
    augment: bool,
    desc: str,
) -> dict:
    """Train a prior classifier with cross-entropy (Adam, constant lr), keeping the
    weights with the best validation AUROC. The suite's ``max_steps`` caps it too."""
    from bench.engine.training import augmented_batch, plan_steps, train_loop
    from bench.metrics.classification import METRICS

    multilabel = spec.task == "multilabel"
    total, n_epochs = plan_steps(len(train), batch_size, epochs, ctx.budget.max_steps)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(ctx.seed + 2)
    auroc = METRICS.get("auroc")

    def step(idx):
        x = augmented_batch(train.images, idx, ctx, image_size, augment, gen)
        with ctx.accelerator.autocast():
            return loss_fn(
                x, one_hot_targets(train.labels[idx], spec.num_classes, multilabel, ctx.device)
            )

    def evaluate():
        probs = batched_inference(
            lambda x: prior_probabilities(logits_fn(x).float(), multilabel),
            val.images,
            ctx,
            image_size,
        )
        return auroc(val.labels, probs.numpy(), spec.task)

    return train_loop(
        model,
        step,
        evaluate,
        ctx,
        n_train=len(train),
        batch_size=batch_size,
        total_steps=total,
        epochs=n_epochs,
        optimizer=opt,
        metric_name="auroc",
        generators=(gen,),
        desc=desc,
    )


@torch.no_grad()
def batched_inference(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: np.ndarray,
    ctx: RunContext,
    image_size: int | None,
) -> torch.Tensor:
    """Apply `fn` to the images in eval batches (on the device, autocast); CPU float result."""
    from bench.engine.training import batches, to_device_batch

    out = []
    for idx in batches(len(images), ctx.budget.eval_batch_size):
        x = to_device_batch(images[idx], ctx.device, image_size)
        with ctx.accelerator.autocast():
            out.append(fn(x).float().cpu())
    return torch.cat(out)


def dcg_prior_predictions(
    dcg: nn.Module, split, ctx: RunContext, image_size: int | None, multilabel: bool
) -> dict[str, np.ndarray]:
    """A DCG's own predictions (global, local and fused branches) on a split."""
    dcg.eval()
    with torch.no_grad():
        out = batched_inference(
            lambda x: torch.stack([(o := dcg(x)).global_, o.local, o.fused], dim=1),
            split.images,
            ctx,
            image_size,
        )
    return {
        f"DCG {name}": prior_probabilities(out[:, i], multilabel).numpy().astype(np.float64)
        for i, name in enumerate(("global", "local", "fused"))
    }


# ------------------------------------------------- CARD-style prior-mean diffusion


def prior_mean_noising(
    alphas_cumprod: torch.Tensor,
    y0: torch.Tensor,
    prior: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """CARD's forward process: sqrt(ab) y0 + (1 - sqrt(ab)) prior + sqrt(1 - ab) noise,
    i.e. plain DDPM noising of the residual y0 - prior, shifted back by the prior."""
    return prior + q_sample(alphas_cumprod, y0 - prior, t, noise)


def noise_draws(
    batch: int, num_classes: int, draws: int, timesteps: int, generator: torch.Generator, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """`draws` (t, noise) pairs per image for CARD's loss: t [B, D], antithetic over all
    B * D draws, and noise [B, D, C]. One draw per image is CARD's; more reuse an image's
    feature and prior for several pairs, lowering the variance of the same loss at the
    cost of the (small) head only. Noise y_t with `prior_mean_noising` on y0[:, None]."""
    t = antithetic_timesteps(batch * draws, timesteps, generator, device).reshape(batch, draws)
    return t, torch.randn((batch, draws, num_classes), generator=generator).to(device)


@torch.no_grad()
def sample_prior_mean(
    eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    prior: torch.Tensor,
    scheduler,
    generator: torch.Generator,
) -> torch.Tensor:
    """CARD's reverse chain, as diffusers DDPM on z = y - prior: z_T ~ N(0, I); each step
    z_{t-1} ~ the DDPM posterior; the last step returns the reparameterised y0 without
    noise. CARD's coefficients gamma_0..2 on (y0, y_t, prior) sum to one, which makes
    its chain exactly this one. `eps_fn(y_t, t)` predicts the noise; the scheduler's
    ``set_timesteps`` decides the steps (T = all of them, as in CARD)."""
    z = torch.randn(prior.shape, generator=generator).to(prior.device)
    return reverse_process(lambda z_t, t: eps_fn(z_t + prior, t), z, scheduler, generator) + prior


@torch.no_grad()
def reverse_process(
    eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    scheduler,
    generator: torch.Generator | None = None,
    rederived_eps: bool = False,
) -> torch.Tensor:
    """A diffusers scheduler's reverse chain from x_T over its ``timesteps``: at each,
    ``eps_fn(x_t, t)`` (t: one long per sample) predicts the noise and the scheduler steps.
    `rederived_eps` (DDIM only): the direction term uses the eps re-derived from the
    clipped x0 instead of the raw prediction (see methods/diffmic_v2.py)."""
    kwargs = {"use_clipped_model_output": True} if rederived_eps else {}
    for t in scheduler.timesteps:
        t_batch = torch.full(x.shape[:1], int(t), device=x.device, dtype=torch.long)
        x = scheduler.step(
            eps_fn(x, t_batch).float(), t, x, generator=generator, **kwargs
        ).prev_sample
    return x


def gaussian_mmd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Biased MMD^2 between two batches of vectors with the Gaussian kernel
    exp(-||x - y||^2 / D^2) (D = vector dimension), as in the DiffMIC code."""
    d = a.shape[1]

    def k(x, y):
        return torch.exp(-((x[:, None, :] - y[None, :, :]) ** 2).mean(dim=2) / d)

    return k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean()


def warmup_cosine(optimizer, total_steps: int, warmup_fraction: float, final_fraction: float = 0.0):
    """Linear warm-up, then half-cosine to `final_fraction` of the lr, per step (CARD/DiffMIC)."""
    import math

    warmup = int(round(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return final_fraction + (1 - final_fraction) * 0.5 * (
            1 + math.cos(math.pi * min(1.0, progress))
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
