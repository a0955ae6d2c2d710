"""timm image classifiers as baselines: ResNet, ResNeXt, ViT, Swin, PVT, ... by name.

Defaults follow the MedMNIST v2 benchmark protocol (Yang et al. 2023): from scratch,
Adam lr 1e-3, lr x0.1 at 50 % and 75 % of training, cross-entropy (BCE for
multilabel), model selected on validation AUROC. ``pretrained=True`` needs a local
``weights_file`` (ImageNet weights cannot be fetched offline); the classifier head is
re-initialised for the task.

Small inputs (28 px) need an adapter, recorded in the config: ``input_size`` resizes
on the device; ``small_input_stem`` swaps a ResNet's 7x7/2 stem and max-pool for a
3x3/1 conv (the "ResNet-18 (28)" of MedMNIST v2). ``model_kwargs`` go to
``timm.create_model`` (e.g. ``patch_size: 8`` for a ViT on 32 px inputs).
timm has no ShuffleNet V2; use another small model (e.g. ``timm:mobilenetv3_small_100``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.api.dataset import SplitData
from bench.api.method import (
    ClassificationMethod,
    MethodSpec,
    Param,
    RunContext,
    register_method,
    register_method_prefix,
)
from bench.api.registry import UnknownNameError
from bench.nn.timm_models import build_timm_model
from bench.train.batches import predict_probs
from bench.train.supervised import SupervisedSettings, train_supervised


@dataclass
class TimmClassifierConfig:
    model: str = "resnet18"
    pretrained: bool = False
    weights_file: str | None = None
    input_size: int | None = None  # None: the data's own size
    small_input_stem: bool = False
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_milestones: tuple[float, ...] = (0.5, 0.75)
    lr_gamma: float = 0.1
    selection_metric: str = "auroc"
    hflip: bool = False


class TimmClassifier(ClassificationMethod):
    """timm classifier trained from scratch (MedMNIST v2 protocol)."""

    Config = TimmClassifierConfig
    SEARCH_SPACE = {
        "lr": Param("lr", low=1e-4, high=1e-2, log=True),
        "wd": Param("weight_decay", choices=(0.0, 1e-4, 1e-3)),
    }

    def fit(self, train: SplitData, val: SplitData, ctx: RunContext) -> dict:
        cfg = self.config
        self.model = build_timm_model(cfg, self.spec.channels, self.spec.num_classes).to(ctx.device)
        settings = SupervisedSettings(
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            lr_milestones=tuple(cfg.lr_milestones),
            lr_gamma=cfg.lr_gamma,
            selection_metric=cfg.selection_metric,
            input_size=cfg.input_size,
            hflip=cfg.hflip,
        )
        return train_supervised(self.model, train, val, ctx, settings, self.spec.task)

    def predict(self, split: SplitData, ctx: RunContext) -> np.ndarray:
        return predict_probs(
            self.model, split, ctx, self.config.input_size, self.spec.task == "multilabel"
        )


NAMED = {
    "resnet18": "ResNet-18",
    "resnet50": "ResNet-50",
    "resnet101": "ResNet-101",
    "resnext50_32x4d": "ResNeXt-50 32x4d",
    "vit_tiny_patch16_224": "ViT-Tiny/16",
    "vit_small_patch16_224": "ViT-Small/16",
    "vit_base_patch16_224": "ViT-Base/16",
    "swin_tiny_patch4_window7_224": "Swin-T",
    "pvt_v2_b0": "PVT-v2-b0",
    "efficientnet_b0": "EfficientNet-B0",
    "mobilenetv3_small_100": "MobileNetV3-Small",
}
for _name, _title in NAMED.items():
    register_method(_name, f"{_title} (timm), from scratch", model=_name)(TimmClassifier)


def _timm_spec(model: str) -> MethodSpec:
    import difflib

    import timm

    if not timm.is_model(model):
        close = difflib.get_close_matches(model, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join('timm:' + c for c in close)}?" if close else ""
        raise UnknownNameError(f"timm has no model {model!r}{hint}")
    return MethodSpec(TimmClassifier, {"model": model}, f"timm {model}")


register_method_prefix("timm", _timm_spec, "any timm classifier by name, e.g. timm:convnext_atto")
