"""Stage 2's head on the frozen U-ViT's hyper-features (token mixing, timm sub-features,
multi-kernel conv stages, two FC layers) and the cycle loss."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.nn.diffusion import q_sample
from bench.nn.encoders import feature_map, timm_trunk
from methods.dcube.uvit import UViT


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
