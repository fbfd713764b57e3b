"""The density field: encoder-decoder features, projection, positional code and both heads.

Module names follow the official ``MVBTSNet`` (``encoder.encoder.encoder.*``,
``encoder.decoder.decoder.{i}.*``, ``code_xyz.*``, ``heads.singleviewhead.*``,
``heads.multiviewhead3.*``) so official weights map one to one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdbts_ros.core.camera import project, to_camera
from kdbts_ros.core.model.code import PositionalEncoding, z_code
from kdbts_ros.core.model.decoder import Decoder
from kdbts_ros.core.model.heads import MLP, MultiViewHead
from kdbts_ros.core.model.resnet import ResnetEncoder

SV_HEAD = "singleviewhead"
MV_HEAD = "multiviewhead3"
HEAD_NAMES = {"sv": SV_HEAD, "mv": MV_HEAD}


def absent_head_prefixes(heads: list[str]) -> tuple[str, ...]:
    """State-dict prefixes of the heads ('sv', 'mv') not in ``heads``."""
    return tuple(f"heads.{name}." for short, name in HEAD_NAMES.items() if short not in heads)


@dataclass(frozen=True)
class Architecture:
    """Shapes that define a network; stored with every checkpoint."""

    backbone: str = "resnet50"
    feature_dim: int = 64
    sv_hidden: int = 64
    mv_hidden: int = 128
    mv_feature_dim: int = 16
    z_near: float = 3.0
    z_far: float = 80.0
    grey_input: bool = False  # the encoder sees luma only (networks trained on grey and colour cameras alike)


def architecture_of(shape: Any, grey_input: bool = False) -> Architecture:
    """The architecture a config's network-shape fields describe (core.config.shape_field)."""
    return Architecture(
        shape.backbone,
        shape.feature_dim,
        64,
        shape.mv_hidden,
        shape.mv_feature_dim,
        shape.z_near,
        shape.z_far,
        grey_input,
    )


# BT.601 luma, as cv2's RGB2GRAY: what a grey camera records of a colour scene, near enough
LUMA = (0.299, 0.587, 0.114)


@dataclass
class Views:
    """Encoded, posed frames a query can use; tensors carry a leading batch dimension B.

    ``w2c`` maps query-frame points into each view's camera; view 0 is the frame
    the single-view head reads.
    """

    features: torch.Tensor  # (B, V, C, H, W)
    Kn: torch.Tensor  # (B, V, 3, 3) normalised intrinsics
    w2c: torch.Tensor  # (B, V, 4, 4)

    def subset(self, idx: list[int]) -> Views:
        """The views with the given indices, in that order."""
        return Views(self.features[:, idx], self.Kn[:, idx], self.w2c[:, idx])


def to_grey(image01: torch.Tensor) -> torch.Tensor:
    """RGB images (..., 3, H, W) as their luma repeated in three channels."""
    luma = torch.tensor(LUMA, dtype=image01.dtype, device=image01.device).view(3, 1, 1)
    return (image01 * luma).sum(-3, keepdim=True).expand_as(image01)


class Monodepth2(nn.Module):
    """ResNet encoder plus decoder; input RGB in [0, 1], output (B, d_out, H, W)."""

    def __init__(self, backbone: str, d_out: int):
        super().__init__()
        self.encoder = ResnetEncoder(backbone)
        self.decoder = Decoder(self.encoder.num_ch_enc, d_out)

    def forward(self, image01: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(image01))


class DensityField(nn.Module):
    """BTS / MVBTS / KDBTS network: one encoder and decoder, a single-view and a multi-view head."""

    def __init__(self, arch: Architecture = Architecture()):
        super().__init__()
        self.arch = arch
        self.encoder = Monodepth2(arch.backbone, arch.feature_dim)
        self.code_xyz = PositionalEncoding()
        d_in = arch.feature_dim + self.code_xyz.d_out
        self.heads = nn.ModuleDict(
            {
                SV_HEAD: MLP(d_in, arch.sv_hidden, 1),
                MV_HEAD: MultiViewHead(d_in, arch.mv_hidden, arch.mv_feature_dim),
            }
        )
        # heads whose weights are real; a BTS checkpoint has no multi-view head
        self.available_heads = ["sv", "mv"]

    def load_only_parameters(self) -> tuple[str, ...]:
        """Name prefixes of parameters kept only so official weights load (torchvision's fc, the decoder's coarse
        outputs).
        """
        return ("encoder.encoder.encoder.fc.",) + tuple(f"encoder.decoder.{p}" for p in self.encoder.decoder.load_only)

    def encode(self, image01: torch.Tensor) -> torch.Tensor:
        """Pixel-aligned features (B, C, H, W) of RGB images in [0, 1] (B, 3, H, W)."""
        if self.arch.grey_input:
            image01 = to_grey(image01)
        return self.encoder(image01)

    def point_inputs(self, points: torch.Tensor, views: Views) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-view head inputs (B, N, V, C + 39) and invalid mask (B, N, V) of query points (B, N, 3)."""
        B, V, C, H, W = views.features.shape
        N = points.shape[1]
        cam = to_camera(views.w2c, points[:, None])  # (B, V, N, 3)
        xy, z, invalid = project(cam, views.Kn)
        code_in = torch.cat([xy, z_code(z, self.arch.z_near, self.arch.z_far)], -1)
        code = self.code_xyz(code_in.reshape(-1, 3)).view(B, V, N, -1)
        # out-of-image points still get a feature (border padding), as in the official model
        feats = F.grid_sample(
            views.features.reshape(B * V, C, H, W),
            xy.reshape(B * V, 1, N, 2),
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )
        feats = feats.view(B, V, C, N).permute(0, 1, 3, 2)
        x = torch.cat([feats, code], -1).permute(0, 2, 1, 3)  # (B, N, V, C + 39)
        return x, invalid.permute(0, 2, 1)

    def sample_images(
        self, points: torch.Tensor, images: torch.Tensor, Kn: torch.Tensor, w2c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Values of posed images at the projections of query points (B, N, 3).

        images (B, V, C, H, W), e.g. RGB in [0, 1] for image-based colour (the
        network predicts no colour itself) or feature maps; returns (B, N, V, C)
        sampled bilinearly (border padding, align_corners=False, as the features)
        and the invalid mask (B, N, V).
        """
        B, V, C, H, W = images.shape
        N = points.shape[1]
        cam = to_camera(w2c, points[:, None])
        xy, _, invalid = project(cam, Kn)
        values = F.grid_sample(
            images.reshape(B * V, C, H, W),
            xy.reshape(B * V, 1, N, 2),
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )
        return values.view(B, V, C, N).permute(0, 3, 1, 2), invalid.permute(0, 2, 1)

    def head_logits(
        self, points: torch.Tensor, views: Views, heads: tuple[str, ...], hidden: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Raw (pre-softplus) outputs (B, N) of several heads ('sv', 'mv') sharing one feature lookup, and the invalid
          mask (B, N, V).

        ``hidden`` (B, N, V) bool hides views from the multi-view head point by point (training's
        view dropout); the returned mask is the views' own validity.
        """
        for head in heads:
            if head not in HEAD_NAMES:
                raise ValueError(f"head must be 'sv' or 'mv', not {head!r}")
            if head not in self.available_heads:
                raise ValueError(f"the loaded weights have no {head!r} head (available: {self.available_heads})")
        x, invalid = self.point_inputs(points, views)
        out = {}
        for head in heads:
            y = (
                self.heads[SV_HEAD](x[:, :, 0])
                if head == "sv"
                else self.heads[MV_HEAD](x, invalid if hidden is None else invalid | hidden)
            )
            out[head] = y[..., 0]
        return out, invalid

    def density_logits(self, points: torch.Tensor, views: Views, head: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (pre-softplus) head output (B, N) and invalid mask (B, N, V); head is 'sv' or 'mv'."""
        out, invalid = self.head_logits(points, views, (head,))
        return out[head], invalid

    def density(self, points: torch.Tensor, views: Views, head: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Softplus density (B, N) in 1/m and invalid mask (B, N, V)."""
        logits, invalid = self.density_logits(points, views, head)
        return F.softplus(logits), invalid

    def point_density(self, views: Views, head: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """Densities (P,) of points (P, 3) in batch 0 of ``views``: the function rendering integrates."""
        return lambda p: self.density(p[None], views, head)[0][0]

    def query(self, points: torch.Tensor, views: Views, head: str, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`density` in chunks of ``chunk`` points to bound memory."""
        sig, inv = [], []
        for start in range(0, points.shape[1], chunk):
            s, i = self.density(points[:, start : start + chunk], views, head)
            sig.append(s)
            inv.append(i)
        return torch.cat(sig, 1), torch.cat(inv, 1)
