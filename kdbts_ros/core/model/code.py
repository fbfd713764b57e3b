"""Positional code of a projected point: (x_ndc, y_ndc, inverse-depth code) and its frequency encoding."""

from __future__ import annotations

import math

import torch
from torch import nn


def z_code(z: torch.Tensor, z_near: float, z_far: float) -> torch.Tensor:
    """Camera depth mapped to [-1, 1] linearly in inverse depth (1 at z_near, -1 at z_far)."""
    inv = (1.0 / z.clamp_min(1e-3) - 1.0 / z_far) / (1.0 / z_near - 1.0 / z_far)
    return 2.0 * inv - 1.0


class PositionalEncoding(nn.Module):
    """[x, sin(f0 x), cos(f0 x), sin(f1 x), ...] with f_k = freq_factor * 2^k and no pi factor.

    Buffers ``_freqs`` and ``_phases`` (1, 2 num_freqs, 1) carry the official names.
    """

    _freqs: torch.Tensor
    _phases: torch.Tensor

    def __init__(self, num_freqs: int = 6, d_in: int = 3, freq_factor: float = 1.5):
        super().__init__()
        freqs = freq_factor * 2.0 ** torch.arange(num_freqs, dtype=torch.float32)
        phases = torch.zeros(2 * num_freqs)
        phases[1::2] = math.pi * 0.5
        self.register_buffer("_freqs", torch.repeat_interleave(freqs, 2).view(1, -1, 1))
        self.register_buffer("_phases", phases.view(1, -1, 1))
        self.d_out = 2 * num_freqs * d_in + d_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode (N, d_in) to (N, d_out)."""
        return torch.cat([x, self._embed(x.unsqueeze(1), self._freqs, self._phases).flatten(1)], -1)

    @staticmethod
    def _embed(x: torch.Tensor, freqs: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
        return torch.sin(torch.addcmul(phases.to(x.dtype), x, freqs.to(x.dtype)))
