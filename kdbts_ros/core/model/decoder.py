"""Monodepth2-style decoder that turns the encoder pyramid into a pixel-aligned feature map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Conv3x3(nn.Module):
    """Reflection-padded 3x3 convolution (official key names ``.conv``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(cin, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


class ConvBlock(nn.Module):
    """Conv3x3 followed by ELU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = Conv3x3(cin, cout)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.conv(x))


class Decoder(nn.Module):
    """Five up-convolution levels with skips and 64-channel output heads at scales 0..3.

    The module list order (upconv 4,0 / 4,1 / ... / 0,1 then dispconv 0..3) fixes
    the official key indices ``decoder.{0..13}``. Only scale 0 (full input
    resolution) is used at inference, so the other heads are kept for loading
    but not computed.
    """

    def __init__(
        self,
        num_ch_enc: list[int],
        d_out: int = 64,
        num_ch_dec: tuple[int, ...] = (32, 32, 64, 128, 256),
        scales: tuple[int, ...] = (0, 1, 2, 3),
    ):
        super().__init__()
        dec = [max(d_out, c) for c in num_ch_dec]
        convs: list[nn.Module] = []
        for i in range(4, -1, -1):
            cin = num_ch_enc[-1] if i == 4 else dec[i + 1]
            convs.append(ConvBlock(cin, dec[i]))
            cin = dec[i] + (num_ch_enc[i - 1] if i > 0 else 0)
            convs.append(ConvBlock(cin, dec[i]))
        convs += [Conv3x3(dec[s], d_out) for s in scales]
        self.decoder = nn.ModuleList(convs)
        self.d_out = d_out
        # output convs of scales > 0: loaded from official weights, never computed
        self.load_only = tuple(f"decoder.{10 + i}." for i in range(1, len(scales)))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Scale-0 feature map (B, d_out, H, W) at the input resolution."""
        x = features[-1]
        for level, i in enumerate(range(4, -1, -1)):
            x = self.decoder[2 * level](x)
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            if i > 0:
                skip = features[i - 1]
                # odd input sizes make the upsampled map one pixel larger than the skip
                x = x[..., : skip.shape[-2], : skip.shape[-1]]
                x = torch.cat([x, skip], 1)
            x = self.decoder[2 * level + 1](x)
        return self.decoder[10](x)
