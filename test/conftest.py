"""Shared fixtures: small configs and a network with an analytic density (a slab)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from kdbts_ros.config import PipelineConfig
from kdbts_ros.core.model.code import z_code
from kdbts_ros.core.model.checkpoint import random_model
from kdbts_ros.core.model.network import SV_HEAD, Architecture, DensityField

SMALL_ARCH = Architecture(backbone="resnet18")
# the shared real KITTI / KITTI-360 samples (tests that need them skip when absent)
KITTI_SAMPLE = Path(os.environ.get("KDBTS_KITTI_SAMPLE", Path(__file__).resolve().parents[2] / "shared/data/kitti"))
needs_kitti = pytest.mark.skipif(not KITTI_SAMPLE.is_dir(), reason=f"KITTI sample {KITTI_SAMPLE} not present")


def small_config(**overrides) -> PipelineConfig:
    """A fast configuration: ResNet-18 at 64x192, coarse grid, small depth image."""
    cfg = PipelineConfig()
    cfg.model.checkpoint = "random"
    cfg.model.backbone, cfg.model.image_height, cfg.model.image_width = "resnet18", 64, 192
    cfg.grid.resolution = 0.5
    cfg.render.depth_scale = 0.5
    cfg.render.samples = 32
    for key, value in overrides.items():
        section, _, leaf = key.rpartition(".")
        setattr(getattr(cfg, section) if section else cfg, leaf, value)
    return cfg


def slab_model(z_wall: float, arch: Architecture = SMALL_ARCH, seed: int = 0) -> DensityField:
    """A network whose single-view density is ~0 in front of camera depth z_wall and large behind it.

    The SV head reads only the inverse-depth code (input 66 = features 64 + x, y, z):
    sigma = softplus(g * relu(s * (code(z_wall) - code(z))) - 30).
    """
    model = random_model(arch, seed)
    head = model.heads[SV_HEAD]
    zc = float(z_code(torch.tensor(z_wall), arch.z_near, arch.z_far))
    with torch.no_grad():
        head.lin_in.weight.zero_()
        head.lin_in.bias.zero_()
        head.lin_out.weight.zero_()
        head.lin_in.weight[0, arch.feature_dim + 2] = -1e4
        head.lin_in.bias[0] = 1e4 * zc
        head.lin_out.weight[0, 0] = 1.0
        head.lin_out.bias.fill_(-30.0)
    return model


def pytest_configure(config):
    config.addinivalue_line("markers", "build: builds the package's interfaces with CMake (colcon, "
                                       "tools/build_msgs.sh), about a minute each; deselect with -m 'not build'")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
