"""DiffMIC-v2, the registered method (see the package docstring for what it follows):
its config, the Table IV ablations, training, sampling and readout, registrations."""

from __future__ import annotations

import numpy as np
import torch

from bench.api.dataset import SplitData
from bench.api.method import (
    ClassificationMethod,
    Param,
    Prediction,
    RunContext,
    register_method,
)
from bench.metrics.classification import METRICS
from bench.nn.dcg import DCG, dcg_prior_predictions, fit_dcg
from bench.nn.diffusion import ddim_scheduler, q_sample
from bench.nn.labels import (
    classification_loss,
    one_hot_targets,
    prior_agreement,
    prior_probabilities,
    scores_to_probabilities,
)
from bench.nn.pretraining import cached_pretraining
from bench.nn.priors import batched_inference
from bench.train.batches import Schedule, augmented_batch
from bench.train.training import Optimisation, Validation, train_loop
from methods.diffmic_v2.config import ABLATIONS, DiffMICv2Config, components
from methods.diffmic_v2.network import DiffMICv2Net, draw_timesteps, guidance_map


@register_method(
    "diffmic_v2",
    "DiffMIC-v2 (TMI 2025): heterologous label diffusion with dual-granularity guidance",
)
class DiffMICv2(ClassificationMethod):
    """DiffMIC-v2: heterologous label diffusion with dual-granularity guidance."""

    Config = DiffMICv2Config
    #: the reference code's inference, for `bench perf --authors-pattern`
    AUTHORS_PATTERN = {"recompute_conditions": True}
    #: paper Fig. 4 (N_p 1..10) and Table V (K 2..10, H 2048..8192)
    SEARCH_SPACE = {
        "np": Param("num_points", low=1, high=10, integer=True),
        "k": Param("num_rois", choices=(2, 4, 6, 8, 10)),
        "h": Param("latent_dim", choices=(2048, 4096, 6144, 8192)),
    }

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.comps = components(config)
        self.multilabel = spec.task == "multilabel"

    # -------------------------------------------------------------------- building
    def build(self, ctx: RunContext) -> None:
        cfg, C = self.config, self.spec.num_classes
        # the precision the networks run in, fixed with their device when built
        self.autocast = ctx.accelerator.autocast
        self.dcg = DCG(
            C, self.spec.channels, cfg.dcg_backbone, cfg.dcg_small_stem, cfg.num_rois, cfg.roi_size
        ).to(ctx.device)
        self.net = (
            DiffMICv2Net(
                cfg, self.comps, C, self.spec.channels, self.dcg.global_trunk.num_features
            ).to(ctx.device)
            if self.comps.diffusion
            else None
        )
        self.scheduler = ddim_scheduler(cfg.timesteps, cfg.beta_start, cfg.beta_end)
        self.sampler = ddim_scheduler(cfg.timesteps, cfg.beta_start, cfg.beta_end)
        self.sampler.set_timesteps(cfg.sampling_steps)

    def dcg_payload(self) -> dict:
        cfg = self.config
        keys = (
            "image_size",
            "num_rois",
            "roi_size",
            "dcg_backbone",
            "dcg_small_stem",
            "dcg_lr",
            "dcg_epochs",
            "dcg_batch_size",
            "augment",
        )
        return {
            "model": "dcg-v2",
            "task": self.spec.task,
            "classes": self.spec.num_classes,
            "channels": self.spec.channels,
            **{k: getattr(cfg, k) for k in keys},
        }

    def pretrain_dcg(self, train: SplitData, val: SplitData, ctx: RunContext) -> dict:
        """Cross-entropy on the global and local predictions (paper), then frozen."""
        cfg = self.config

        def loss(x, y0):
            out = self.dcg(x)
            return classification_loss(
                out.global_.float(), y0, self.multilabel
            ) + classification_loss(out.local.float(), y0, self.multilabel)

        def train_dcg():
            return fit_dcg(
                self.dcg, loss, train, val, ctx, self.spec, cfg,
                epochs=cfg.dcg_epochs, batch_size=cfg.dcg_batch_size,
            )  # fmt: skip

        payload = {**self.dcg_payload(), "max_steps": ctx.budget.max_steps}
        summary = cached_pretraining("dcg", payload, self.dcg, train_dcg, ctx)
        self.dcg.requires_grad_(False).eval()
        return summary

    # -------------------------------------------------------------------- training
    def training_loss(
        self, x: torch.Tensor, y0: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Focal-weighted noise MSE of one batch (x already on the device, y0 one/multi-hot)."""
        cfg = self.config
        n, b = cfg.num_points, x.shape[0]
        with torch.no_grad():
            dcg = self.dcg(x)
            weights = (
                1
                + cfg.focal_alpha
                * (1 - prior_agreement(dcg.fused.float(), y0, self.multilabel)) ** cfg.focal_gamma
            )
        t = draw_timesteps(b, n, cfg.timesteps, self.comps.heterologous, generator).to(x.device)
        grid = y0[:, :, None, None].expand(-1, -1, n, n)
        noise = torch.randn(grid.shape, generator=generator).to(x.device)
        y_t = q_sample(self.scheduler.alphas_cumprod, grid, t[:, None], noise)
        with self.autocast():
            eps = self.net(y_t, t, self.net.conditions(x, dcg)).float()
        return (weights[:, None, None, None] * (eps - noise) ** 2).mean()

    def fit(self, train: SplitData, val: SplitData, ctx: RunContext) -> dict:
        cfg = self.config
        self.build(ctx)
        dcg_summary = self.pretrain_dcg(train, val, ctx)
        if not self.comps.diffusion:  # C1: the DCG's global branch is a ResNet-18 trained with CE
            return {"dcg": dcg_summary, "train_images_seen": 0}
        budget = ctx.budget
        schedule = Schedule.of_budget(len(train), budget)
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(schedule.total_steps, 1), eta_min=cfg.lr_min
        )
        gen = torch.Generator().manual_seed(ctx.seed + 3)
        metric = METRICS.get("auroc")

        def step(idx):
            x = augmented_batch(train.images, idx, ctx, cfg.image_size, cfg.augment, gen)
            return self.training_loss(
                x,
                one_hot_targets(
                    train.labels[idx], self.spec.num_classes, self.multilabel, ctx.device
                ),
                gen,
            )

        def evaluate():
            return metric(val.labels, self.predict(val, ctx), self.spec.task)

        summary = train_loop(
            self.net,
            step,
            ctx,
            schedule,
            Optimisation(opt, sched),
            Validation(evaluate, "auroc", every=cfg.eval_every),
            generators=(gen,),
            desc="DiffMIC-v2",
        )
        return {"dcg": dcg_summary, **summary}

    # ------------------------------------------------------------------- inference
    @torch.no_grad()
    def sample_scores(
        self, x: torch.Tensor, generator: torch.Generator, trajectory: list | None = None
    ) -> torch.Tensor:
        """Class scores [B, C] for a batch: DDIM over the label grid, then the grid mean.
        With `trajectory`, the grid after each step is appended to it ([B, C * N_p^2])."""
        cfg = self.config
        dcg = self.dcg(x)
        if not self.comps.diffusion:
            return prior_probabilities(dcg.global_.float(), self.multilabel)
        with self.autocast():
            cond = self.net.conditions(x, dcg)
        n, b, c = cfg.num_points, x.shape[0], self.spec.num_classes
        if cfg.sample_init == "authors":
            rand = torch.rand((2, b, c), generator=generator).to(x.device)
            y = guidance_map(rand[0], rand[1], n, "dense")
        else:
            mean = (
                cond.guide.float()
                if cond.guide is not None
                else torch.zeros(b, c, n, n, device=x.device)
            )
            y = mean + torch.randn((b, c, n, n), generator=generator).to(x.device)
        for t in self.sampler.timesteps:
            if cfg.recompute_conditions:  # the authors' pattern: every encoder again at every step
                dcg = self.dcg(x)
                with self.autocast():
                    cond = self.net.conditions(x, dcg)
            t_grid = torch.full((b, n, n), int(t), device=x.device, dtype=torch.long)
            with self.autocast():
                eps = self.net(y, t_grid, cond).float()
            y = self.sampler.step(
                eps, t, y, eta=0.0, use_clipped_model_output=cfg.ddim_eps == "rederived"
            ).prev_sample
            if trajectory is not None:
                trajectory.append(y.flatten(1).float().cpu())
        return y.mean(dim=(2, 3))

    def predict(self, split: SplitData, ctx: RunContext) -> np.ndarray:
        return self.predict_with_extras(split, ctx).probs

    def predict_with_extras(self, split: SplitData, ctx: RunContext) -> Prediction:
        """The probabilities, and with `save_trajectory` the label grids after each
        sampling step (``trajectory``, float16 [N, steps, C * N_p^2])."""
        self.dcg.eval()
        if self.net is not None:
            self.net.eval()
        gen = torch.Generator().manual_seed(
            ctx.seed + 4
        )  # same draws for every call: deterministic predictions
        steps: list = []  # per batch, the grids after each step
        keep = self.config.save_trajectory and self.comps.diffusion

        def scores_of(x):
            trajectory = [] if keep else None
            out = self.sample_scores(x, gen, trajectory)
            if keep:
                steps.append(torch.stack(trajectory, dim=1))  # [B, steps, C * N_p^2]
            return out

        scores = batched_inference(scores_of, split.images, ctx, self.config.image_size)
        extras = {"trajectory": torch.cat(steps).numpy().astype(np.float16)} if keep else {}
        if not self.comps.diffusion:
            return Prediction(scores.numpy().astype(np.float64), extras)
        temperature = self.config.readout_temperature if self.config.readout == "softmax" else None
        probs = scores_to_probabilities(scores, self.multilabel, temperature)
        return Prediction(probs.numpy().astype(np.float64), extras)

    def prior_predictions(self, split: SplitData, ctx: RunContext) -> dict[str, np.ndarray]:
        return dcg_prior_predictions(self.dcg, split, ctx, self.config.image_size, self.multilabel)


for _name, _ in ABLATIONS.items():
    if _name != "full":
        register_method(
            f"diffmic_v2_{_name.lower()}",
            f"DiffMIC-v2 ablation {_name} (paper Table IV)",
            preset_options_of="diffmic_v2",
            ablation=_name,
        )(DiffMICv2)
