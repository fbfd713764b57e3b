"""The channels-last bilinear sampler against grid_sample, which it stands in for on a CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdbts_ros.core.model import bilinear, folded
from kdbts_ros.core.model.checkpoint import random_model
from kdbts_ros.core.model.network import Architecture


def _grid_sample(plane: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(
        plane[None].float(), xy[None, None], mode="bilinear", padding_mode="border", align_corners=False
    )[0, :, 0]


@pytest.mark.parametrize("channels,height,width", [(64, 48, 160), (128, 7, 5), (3, 1, 9)])
def test_samples_equal_grid_sample_to_summation_order_on_a_rough_map(channels, height, width):
    torch.manual_seed(channels)
    plane = torch.randn(channels, height, width) * 10  # neighbouring pixels differ by ~14: coordinates must match
    xy = torch.cat([torch.rand(5000, 2) * 2.4 - 1.2, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])])
    rows = plane.permute(1, 2, 0).contiguous()
    got = bilinear.ROWS(rows, xy)
    assert bilinear.ROWS.problem is None
    torch.testing.assert_close(got, _grid_sample(plane, xy).T, rtol=0, atol=1e-5)  # values up to ~40
    torch.testing.assert_close(bilinear.bilinear_rows(rows, xy), got, rtol=0, atol=1e-5)  # eager: the same function


def test_a_bf16_map_is_sampled_in_fp32_and_returned_in_bf16():
    plane = torch.randn(16, 12, 20).bfloat16()
    xy = torch.rand(300, 2) * 2 - 1
    got = bilinear.ROWS(plane.permute(1, 2, 0).contiguous(), xy)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, _grid_sample(plane, xy).T.bfloat16(), rtol=0, atol=0)


def test_folded_maps_are_channels_last_and_sample_as_grid_sample_samples_them():
    model = random_model(Architecture("resnet18"), 0).eval()
    with torch.inference_mode():
        plane = folded.fold_features(model, torch.randn(model.arch.feature_dim, 24, 40), "mv")
        assert plane.shape == (128, 24, 40) and plane.permute(1, 2, 0).is_contiguous()
        xy = torch.rand(2000, 2) * 2 - 1
        torch.testing.assert_close(folded._sample(plane, xy), _grid_sample(plane.contiguous(), xy).T, rtol=0, atol=1e-5)
