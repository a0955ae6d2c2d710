"""``TimeScaledMLP``: the CARD head (linear layers scaled by a learned embedding of t,
BatchNorm, softplus, image feature multiplied in after the first layer), which the
DiffMIC-v2 authors also use point-wise on their N_p x N_p grid."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


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
