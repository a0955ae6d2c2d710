"""D-Cube, the registered method: stage 1 (cached), the layer selection, and the head
trained with CE + cycle + consistency losses and an EMA of its weights."""

from __future__ import annotations

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
    Param,
    RunContext,
    register_method,
)
from bench.nn.diffusion import ddpm_scheduler
from bench.train.batches import Schedule, batches, to_device_batch
from bench.train.training import Optimisation, Validation, train_loop
from methods.dcube.head import DCubeHead, cycle_loss
from methods.dcube.layers import ks_layer_selection, plot_ks
from methods.dcube.stage1 import stage1_model
from methods.dcube.uvit import Stage1Config, UViT, stage1_identity


@dataclass
class DCubeConfig:
    stage1: dict = field(default_factory=dict)  # Stage1Config overrides; recorded resolved
    # "ks" (paper), "worst" (the layers the KS test drops: the paper's Table VI), "code"
    # (mid, out1, out2), "last", or block indices
    feature_layers: Any = "ks"
    ks_alpha: float = 0.05
    ks_batch: int = 64  # training images per KS batch (the paper's batch size B)
    ks_batches: int = 8  # batches (own images and t) whose majority decides (layers.py)
    ks_samples: int | None = None  # per test: None = one value per image; n = n from all maps
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
        self.stage1 = stage1_identity(self.stage1)
        if self.cycle_form not in ("paper", "code"):
            raise BenchError(
                f"D-Cube cycle_form must be 'paper' or 'code', not {self.cycle_form!r}"
            )
        if not (
            isinstance(self.feature_layers, (list, tuple))
            or self.feature_layers in ("ks", "worst", "code", "last")
        ):
            raise BenchError(
                f"D-Cube feature_layers must be 'ks', 'worst', 'code', 'last' or a list of block indices, not {self.feature_layers!r}"
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
        self.s1 = Stage1Config(**config.stage1)
        self.image_size = self.s1.image_size or spec.size

    def fixed_layers(self, unet: UViT) -> list[int] | None:
        h = len(unet.in_blocks)
        choice = self.config.feature_layers
        if choice in ("ks", "worst"):
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
        rng = np.random.default_rng(ctx.seed + 13)
        gen = torch.Generator().manual_seed(ctx.seed + 13)
        batches = []
        for _ in range(cfg.ks_batches):
            idx = rng.permutation(len(train))[: cfg.ks_batch]
            with torch.no_grad():
                x = to_device_batch(train.images[idx], ctx.device, self.image_size)
                t = torch.randint(1, self.s1.timesteps, (len(idx),), generator=gen).to(ctx.device)
                batches.append([h.float().cpu().numpy() for h in self.unet.blocks(x, t)])
        result = ks_layer_selection(batches, names, cfg.ks_alpha, cfg.ks_samples, seed=ctx.seed)
        result["method"] = "ks"
        if cfg.feature_layers == "worst":  # the layers the test calls Gaussian (Table VI)
            worst = [i for i in range(len(names)) if i not in result["kept"]] or [
                int(np.argmin([layer["statistic"] for layer in result["layers"]]))
            ]
            result.update(method="ks-worst", kept=worst, kept_names=[names[i] for i in worst])
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
        schedule = Schedule.of_budget(len(train), budget)
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
            ctx,
            schedule,
            Optimisation(opt, after_step=(lambda s: ema.update(head, step=s)) if ema else None),
            Validation(evaluate, "auroc", every=cfg.eval_every),
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


# What the diffusion branch adds (paper Table IV analogue): the frozen U-ViT's selected
# features alone, without the CNN sub-features, sized like dcube in a preset.
register_method(
    "dcube_nosub",
    "D-Cube without the CNN sub-features: the diffusion features alone (its Table IV analogue)",
    preset_options_of="dcube",
    use_sub_features=False,
)(DCube)
