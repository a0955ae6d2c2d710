"""An exponential moving average of a network's weights for the diffusion models
(Ho et al. sample from one): timm ``ModelEmaV3`` with warm-up, so that a short
training's average is not dominated by the initial weights."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn


def with_ema(
    module: nn.Module, decay: float | None
) -> tuple[nn.Module, nn.Module, Callable[[int], None] | None]:
    """(what train_loop trains and checkpoints, what validation scores and sampling uses,
    the after-step hook that updates the average); without `decay`, the module itself
    for both and no hook."""
    if not decay:
        return module, module, None
    from timm.utils import ModelEmaV3

    ema = ModelEmaV3(module, decay=decay, use_warmup=True)
    ema.module.requires_grad_(False)  # an optimiser over the pair leaves the average alone
    return (
        nn.ModuleDict({"trained": module, "ema": ema.module}),
        ema.module,
        lambda step: ema.update(module, step=step),
    )
