"""timm models built by name, with the adapters small inputs need, and local weights.

Shared by the timm baselines, the methods that use a timm trunk (D-Cube's sub-features)
and the harness's own FID feature extractor, so none of them imports another."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from bench.api.errors import BenchError


@dataclass(frozen=True)
class TimmArch:
    """What builds a timm model (the architecture part of a timm baseline's config)."""

    model: str = "resnet18"
    pretrained: bool = False
    weights_file: str | None = None
    input_size: int | None = None
    small_input_stem: bool = False
    model_kwargs: dict[str, Any] = field(default_factory=dict)


def build_timm_model(cfg, in_chans: int, num_classes: int) -> nn.Module:
    """A timm model from `cfg` (a `TimmArch`, or any config with its fields, such as the
    timm baselines' config): from scratch or a local checkpoint, with the 28 px adapters."""
    import timm

    if cfg.pretrained and not cfg.weights_file:
        raise BenchError(
            f"{cfg.model}: pretrained=True needs weights_file (a local timm/ImageNet checkpoint); "
            "hub downloads are not attempted"
        )
    kwargs = dict(cfg.model_kwargs)
    if cfg.input_size and any(family in cfg.model for family in ("vit", "swin")):
        kwargs.setdefault("img_size", cfg.input_size)
    try:
        model = timm.create_model(
            cfg.model, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs
        )
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise BenchError(f"timm cannot build {cfg.model!r}: {exc}") from exc
    if cfg.weights_file:
        load_weights(model, cfg.weights_file)
    if cfg.small_input_stem:
        use_small_input_stem(model, in_chans, cfg.model)
    return model


def use_small_input_stem(model: nn.Module, in_chans: int, name: str) -> None:
    """The 28 px stem of MedMNIST's "ResNet (28)": a 3x3 stride-1 first convolution and no
    max-pooling, in place of a ResNet's 7x7 stride-2 convolution and pooling."""
    if not (isinstance(getattr(model, "conv1", None), nn.Conv2d) and hasattr(model, "maxpool")):
        raise BenchError(f"small_input_stem applies to ResNet-style models, not {name}")
    model.conv1 = nn.Conv2d(
        in_chans, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False
    )
    model.maxpool = nn.Identity()


def load_weights(model: nn.Module, path: str) -> None:
    """Load a local checkpoint, skipping the classifier head and shape mismatches."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise BenchError(f"cannot read weights_file {path}: {exc}") from exc
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise BenchError(f"weights_file {path}: no tensor matches {model.__class__.__name__}")
    model.load_state_dict(usable, strict=False)
