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
        if not self.training and t.numel() and bool((t == t.reshape(-1)[0]).all()):
            return self._forward_one_t(x, int(t.reshape(-1)[0]), feature)
        h = self._block(self.lin1, self.norms[0], x, t)
        if feature is not None:
            h = h * feature[:, None, :]
        h = self._block(self.lin2, self.norms[1], h, t)
        h = self._block(self.lin3, self.norms[2], h, t)
        return self.out(h)

    def _forward_one_t(self, x, t: int, feature):
        """Inference where every point has the same t (a sampler's step): the t scale and
        the eval BatchNorm are folded into each linear layer, so a block is one matmul and
        a softplus. The same function as `forward` up to float rounding, about 4x faster
        on a CPU (the per-row embedding gathers, scalings and BatchNorm passes were most of
        the time of CARD's and DiffMIC's 1000-step chains)."""
        h = x
        for i, (lin, norm) in enumerate(zip((self.lin1, self.lin2, self.lin3), self.norms)):
            inv_std = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            e = lin.embed.weight[t]
            weight = lin.lin.weight * (e * inv_std)[:, None]
            bias = (lin.lin.bias * e - norm.running_mean) * inv_std + norm.bias
            h = fast_softplus(F.linear(h, weight, bias).float())
            if i == 0 and feature is not None:
                h.mul_(feature[:, None, :])
        return self.out(h)


def fast_softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(x)) as relu(x) + log(1 + exp(-|x|)), in place of `x` (a temporary):
    torch's softplus and log1p are several times slower than exp and log on CPUs, and
    fresh [B, H] tensors cost as much as the arithmetic; the log's argument is in (1, 2],
    where log is exact to float32 rounding (absolute error < 1e-7)."""
    tail = x.abs().neg_().exp_().add_(1).log_()
    return x.clamp_min_(0).add_(tail)
