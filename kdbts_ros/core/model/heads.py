"""Density heads: the single-view MLP (BTS / KDBTS student) and the released multi-view head."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """``lin_out(relu(lin_in(x)))``: the official ResnetFC with zero residual blocks."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int):
        super().__init__()
        self.lin_in = nn.Linear(d_in, d_hidden)
        self.lin_out = nn.Linear(d_hidden, d_out)
        for lin in (self.lin_in, self.lin_out):
            nn.init.kaiming_normal_(lin.weight, a=0, mode="fan_in")
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin_out(torch.relu(self.lin_in(x)))


class MultiViewHead(nn.Module):
    """Confidence-weighted fusion over views (official ``MultiViewHead3``).

    A per-view MLP gives a confidence logit and a feature; a softmax over the
    valid views weights the features; a second MLP maps their sum to a density
    logit. With one valid view the weight is 1, so it reduces to
    ``mlp2(mlp(x)[1:])``; when no view is valid the weights are uniform.
    """

    def __init__(self, d_in: int = 103, d_hidden: int = 128, d_feature: int = 16):
        super().__init__()
        self.mlp = MLP(d_in, d_hidden, d_feature + 1)
        self.mlp2 = MLP(d_feature, d_feature, 1)

    def forward(self, x: torch.Tensor, invalid: torch.Tensor) -> torch.Tensor:
        """x (N, V, d_in), invalid (N, V) -> raw density logit (N, 1)."""
        out = self.mlp(x)
        # the dtype's lowest value rather than -1e9 so fp16 does not overflow to -inf
        logits = out[..., 0].masked_fill(invalid, torch.finfo(out.dtype).min)
        weights = torch.softmax(logits, dim=-1)
        fused = (weights.unsqueeze(-1) * out[..., 1:]).sum(-2)
        return self.mlp2(fused)
