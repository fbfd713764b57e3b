"""The bird's-eye density profile (paper Fig. 4) and the `kdbts viz` picture."""

import cv2
import numpy as np
import pytest
from conftest import SMALL_ARCH, slab_model

from kdbts_ros.commands.cli import main
from kdbts_ros.core.grids import ProfileSpec, density_profile
from kdbts_ros.core.model.checkpoint import save_checkpoint
from kdbts_ros.runtime.legends import legend_height
from kdbts_ros.runtime.pictures import caption_scale

pytestmark = pytest.mark.integration


def test_profile_counts_levels_before_the_density_budget():
    density = np.zeros((4, 1, 3))
    density[:, 0, 1] = 3.0  # cumsum 3, 6, 9, 12: two levels within 8
    invalid = np.zeros_like(density, bool)
    invalid[:, 0, 2] = True  # unseen counts as density 1: cumsum 1..4, all within 8
    np.testing.assert_allclose(density_profile(density, invalid)[0], [1.0, 0.5, 1.0])


def test_profile_points_span_the_caption_volume_with_far_at_the_top():
    spec = ProfileSpec(res_xz=5, res_y=3)
    pts = spec.points_cam()
    assert pts.shape == (3, 5, 5, 3)
    np.testing.assert_allclose(pts[0, 0, 0], [-9.0, 0.0, 23.0])
    np.testing.assert_allclose(pts[-1, -1, -1], [9.0, 1.0, 3.0])
    tilted = ProfileSpec(res_xz=5, res_y=3, pitch_deg=5.0).points_cam()
    np.testing.assert_allclose(np.linalg.norm(tilted, axis=-1), np.linalg.norm(pts, axis=-1))


def test_viz_of_a_slab_shows_free_space_up_to_the_wall(tmp_path, capsys):
    ckpt = tmp_path / "slab.safetensors"
    save_checkpoint(ckpt, slab_model(10.0, SMALL_ARCH))
    img = tmp_path / "in.png"
    cv2.imwrite(str(img), np.full((94, 320, 3), 120, np.uint8))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {image_height: 64, image_width: 192}\nrender: {depth_scale: 0.25, samples: 32}\n")
    assert (
        main(
            [
                "viz",
                str(img),
                "--checkpoint",
                str(ckpt),
                "--config",
                str(cfg),
                "--out",
                str(tmp_path / "new" / "v.png"),
                "--preset",
                "kitti_raw",
            ]
        )
        == 0
    )  # the folder is made
    picture = cv2.imread(str(tmp_path / "new" / "v.png"))
    h = round(320 * 64 / 192)  # the network's view (192 x 64) at the image's width over its depth, the square profile
    assert picture.shape == (2 * h + legend_height(caption_scale(h)), 320 + 2 * h, 3)  # over the colour bars
    from kdbts_ros.runtime.config import load_runner_config
    from kdbts_ros.runtime.viz import preset_intrinsics, render_figure

    depth, profile, _ = render_figure(
        load_runner_config(cfg, {"model.checkpoint": str(ckpt)}),
        np.full((94, 320, 3), 120, np.uint8),
        preset_intrinsics("kitti_raw", 320, 94),
    )
    z = np.linspace(23, 3, 256)
    centre = profile[:, 128]
    # near 3 m the lowest levels leave the frustum and count as density 1, as in the official figures
    assert np.all(centre[(z > 4) & (z < 9.8)] == 1.0) and np.all(centre[z > 10.3] < 0.2)
    assert depth.shape == (64, 192)  # network size, not depth_scale
    # KITTI raw's camera is narrower than this checkpoint's (KITTI-360, assumed): padding has no depth
    seen = np.isfinite(depth)
    assert 0.3 < seen.mean() < 1.0 and np.all((depth[seen] >= 10.0) & (depth[seen] < 11.0))
