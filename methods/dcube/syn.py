""" "+Syn" (``syn:<method>``): any classifier trained on its training split plus images
sampled from D-Cube's stage-1 U-ViT, as in the paper's Table III."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from bench.api.dataset import SplitData
from bench.api.errors import BenchError
from bench.api.method import (
    ClassificationMethod,
    MethodSpec,
    Prediction,
    RunContext,
    config_dict,
    register_method_prefix,
)
from bench.api.record import atomic_write
from bench.api.registry import METHODS
from bench.nn.diffusion import ddim_scheduler, ddpm_scheduler, reverse_process
from bench.nn.pretraining import cache_key
from bench.train.batches import batches, from_device_batch
from bench.train.images import save_class_grid
from methods.dcube.stage1 import stage1_model
from methods.dcube.uvit import Stage1Config, UViT, stage1_identity


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
    counts: np.ndarray,
    balance: float,
    add_per_class: list[int] | None,
    target_ratio: list[float] | None = None,
) -> np.ndarray:
    """Images to add per class: explicit counts; or, with `target_ratio`, the fewest that
    bring the class counts to that ratio (e.g. the paper's 2:2:3) without removing any
    real image; or enough to bring every class up to `balance` x the largest class's
    count (1.0 = balanced)."""
    if add_per_class is not None:
        add = np.asarray(add_per_class, dtype=np.int64)
        if add.shape != counts.shape or (add < 0).any():
            raise BenchError(
                f"+Syn add_per_class needs {len(counts)} non-negative counts, got {add_per_class}"
            )
        return add
    if target_ratio is not None:
        ratio = np.asarray(target_ratio, dtype=float)
        if ratio.shape != counts.shape or not (ratio > 0).all():
            raise BenchError(
                f"+Syn target_ratio needs {len(counts)} positive numbers, got {target_ratio}"
            )
        scale = (counts / ratio).max()  # the class furthest above its share sets the scale
        return np.maximum(np.ceil(scale * ratio - 1e-9).astype(np.int64) - counts, 0)
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
    target_ratio: list | None = (
        None  # class counts topped up to this ratio (paper: 2:2:3); overrides balance
    )
    sampler: str = "ddpm"  # the authors': ancestral DDPM over all T steps
    sampling_steps: int = 1000
    sample_batch: int = 256
    ddim_eps: str = "rederived"  # with sampler ddim: eps re-derived from the clipped x0 | raw (diffusers' default)

    def __post_init__(self):
        if self.ddim_eps not in ("rederived", "raw"):
            raise BenchError(f"+Syn ddim_eps must be 'rederived' or 'raw', not {self.ddim_eps!r}")
        if self.base.startswith("syn:"):
            raise BenchError("+Syn cannot wrap another +Syn method")
        self.stage1 = stage1_identity(self.stage1)
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

    def synthesise(
        self, train: SplitData, val: SplitData, ctx: RunContext
    ) -> tuple[SplitData, dict]:
        cfg = self.config
        unet, stage1 = stage1_model(self.s1, self.spec, train, val, ctx)
        counts = np.bincount(train.labels, minlength=self.spec.num_classes)
        add = synthetic_counts(counts, cfg.balance, cfg.add_per_class, cfg.target_ratio)
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
            # whole or absent: a unit of another base method (same seed, same set) may load it
            atomic_write(path, lambda f: np.savez_compressed(f, images=images, labels=labels))
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

    def predict_with_extras(self, split: SplitData, ctx: RunContext) -> Prediction:
        return self.inner.predict_with_extras(split, ctx)


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
