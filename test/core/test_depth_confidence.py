"""The depth image's NaN mask and confidence from the rendering's own weights (render.min_opacity).

Analytic cases: a constant density (opacity 1 - exp(-sigma * span)), a wall (opacity 1, depth at
the wall), empty space (opacity 0, the evaluator's depth at the last sample), a wall over half the
view through the runner on both query paths.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import slab_model, small_config

from kdbts_ros.core.camera import ray_grid
from kdbts_ros.core.frames import Frame
from kdbts_ros.core.model.checkpoint import save_checkpoint
from kdbts_ros.core.model.network import SV_HEAD
from kdbts_ros.core.model.render import RayRender, sample_depths
from kdbts_ros.core.model.render_fine import render_depth_fine
from kdbts_ros.messages import cdr
from kdbts_ros.messages.published import output_messages
from kdbts_ros.runtime.runner import FrameRunner

NEAR, FAR, S = 3.0, 80.0, 64
WALL = 10.0


@pytest.mark.parametrize("sigma", [0.0, 0.002, 0.02, 0.2])
def test_opacity_of_a_constant_density_is_the_light_stopped_before_the_last_sample(sigma):
    t = sample_depths(4, S, NEAR, FAR)
    render = RayRender.of(torch.full_like(t, sigma), t)
    span = t[:, -1] - t[:, 0]  # the capped last sample's own density stops nothing within range
    torch.testing.assert_close(render.opacity, 1 - torch.exp(-sigma * span), atol=1e-6, rtol=1e-5)
    assert bool(((render.opacity >= 0) & (render.opacity <= 1)).all())


def test_a_wall_is_opaque_at_its_depth_and_empty_space_is_transparent_at_the_far_sample():
    t = sample_depths(3, S, NEAR, FAR)
    wall = RayRender.of(torch.where(t > WALL, 1e6, 0.0), t)
    torch.testing.assert_close(wall.opacity, torch.ones(3))
    torch.testing.assert_close(wall.depth, t[torch.arange(3), (t <= WALL).sum(1)])
    sky = RayRender.of(torch.zeros_like(t), t)
    assert float(sky.opacity.max()) == 0.0
    torch.testing.assert_close(sky.depth, t[:, -1])  # the official depth: the remainder at the last sample


def test_the_fine_render_gives_the_reference_opacity():
    z_wall = torch.linspace(3.5, 90.0, 100)  # walls beyond the last sample leave their rays open

    def fn(d: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.where(t * d[:, 2:3] >= z_wall[d[:, 0].long()][:, None], 1000.0, 0.0)

    dirs = torch.stack([torch.arange(100.0), torch.zeros(100), torch.ones(100)], -1)  # x carries the ray's index
    t = sample_depths(1, S, NEAR, FAR)[0]
    fine = render_depth_fine(fn, dirs, S, NEAR, FAR, 4096)
    expected = (z_wall <= t[-2]).float()  # a wall stops the light when it stands before the last sample
    torch.testing.assert_close(fine.opacity, expected)


def half_wall_model():
    """The slab network of conftest (a wall at camera depth WALL) on the left half of the image only: on the
    right half (normalised image x > 0) the density is ~0, as in the sky."""
    model = slab_model(WALL)
    head = model.heads[SV_HEAD]
    with torch.no_grad():
        head.lin_in.weight[1, model.arch.feature_dim] = 1e4  # hidden unit 1: relu(1e4 x), x the image's
        head.lin_out.weight[0, 1] = -1e4
    model.available_heads = ["sv"]
    return model


def _runner(tmp_path, model, **overrides) -> FrameRunner:
    save_checkpoint(tmp_path / "net.safetensors", model, {"image_height": 64, "image_width": 192})
    cfg = small_config(**{"model.checkpoint": str(tmp_path / "net.safetensors"), "mode": "sv", **overrides})
    return FrameRunner(cfg)


def _outputs(runner: FrameRunner):
    """The outputs of a blank frame of the network's own camera (no padding: every ray is rendered)."""
    lens = runner.stages.encoding.canonical.lens()
    return runner.process(Frame(np.zeros((64, 192, 3), np.uint8), lens.K, 1, "cam"), want_grid=False)


@pytest.mark.integration
def test_a_wall_over_half_the_view_has_depth_there_and_nan_beside_it_on_both_paths(tmp_path):
    model = half_wall_model()
    outs = {fast: _outputs(_runner(tmp_path, model, **{"model.fast": fast})) for fast in (False, True)}
    for out in outs.values():
        depth, confidence, lens = out.depth, out.depth_confidence, out.depth_lens
        assert depth is not None and confidence is not None and lens is not None
        assert depth.shape == confidence.shape == (lens.height, lens.width) == (32, 96)
        Kn = lens.normalised()  # the network's x code of each column: its normalised image coordinate
        x_image = Kn[0, 0] * (np.arange(lens.width) - lens.K[0, 2]) / lens.K[0, 0] + Kn[0, 2]
        wall, sky = x_image < -0.05, x_image > 0.05
        assert wall.sum() > 40 and sky.sum() > 40
        spacing = WALL**2 * (1 / NEAR - 1 / FAR) / small_config().render.samples
        assert np.all((depth[:, wall] >= WALL) & (depth[:, wall] <= WALL + spacing + 0.1))
        assert np.all(confidence[:, wall] > 0.999)
        assert np.all(np.isnan(depth[:, sky])) and np.all(confidence[:, sky] < 1e-3)
    ref, fast = outs[False], outs[True]
    assert np.array_equal(np.isnan(ref.depth), np.isnan(fast.depth))
    np.testing.assert_allclose(fast.depth, ref.depth, rtol=1e-5)
    np.testing.assert_allclose(fast.depth_confidence, ref.depth_confidence, atol=1e-5)


@pytest.mark.integration
def test_the_published_depth_is_the_evaluators_depth_but_for_the_nan_mask(tmp_path):
    model = half_wall_model()
    masked = _outputs(_runner(tmp_path, model))
    unmasked = _outputs(_runner(tmp_path, model, **{"render.min_opacity": 0.0}))
    assert masked.depth is not None and unmasked.depth is not None and masked.depth_confidence is not None
    assert np.all(np.isfinite(unmasked.depth))  # the sky's depth is the far sample's, as the evaluator has it
    nan = np.isnan(masked.depth)
    assert np.array_equal(nan, masked.depth_confidence < 0.9) and 0.3 < nan.mean() < 0.7
    np.testing.assert_array_equal(masked.depth[~nan], unmasked.depth[~nan])


@pytest.mark.integration
def test_a_field_without_density_is_all_nan_with_zero_confidence(tmp_path):
    model = slab_model(WALL)
    with torch.no_grad():
        model.heads[SV_HEAD].lin_in.weight.zero_()  # sigma = softplus(-30) everywhere
    model.available_heads = ["sv"]
    out = _outputs(_runner(tmp_path, model, **{"render.depth_camera": "input"}))
    assert out.depth is not None and out.depth_confidence is not None
    assert np.all(np.isnan(out.depth)) and float(out.depth_confidence.max()) < 1e-6
    assert out.depth_confidence.shape == out.depth.shape == (64, 192)  # the input camera's size


def depth_image_proc_points(depth_msg, info_msg) -> np.ndarray:
    """(h, w, 3) points as depth_image_proc's point_cloud_xyz makes them from a 32FC1 image and its camera_info:
    image_geometry's fx, fy, cx, cy (from P), NaN where the depth is not valid."""
    assert depth_msg.encoding == "32FC1" and (depth_msg.width, depth_msg.height) == (info_msg.width, info_msg.height)
    depth = np.frombuffer(bytes(depth_msg.data), "<f4").reshape(depth_msg.height, depth_msg.width)
    P = np.asarray(info_msg.p).reshape(3, 4)
    v, u = np.mgrid[0 : depth.shape[0], 0 : depth.shape[1]]
    return np.stack([(u - P[0, 2]) * depth / P[0, 0], (v - P[1, 2]) * depth / P[1, 1], depth], -1)


@pytest.mark.integration
def test_a_depth_image_proc_consumer_gets_the_rendered_rays_and_no_point_where_nothing_was_hit(tmp_path):
    runner = _runner(tmp_path, half_wall_model())
    out = _outputs(runner)
    messages = {t: cdr.deserialize(cdr.serialize(m), mt) for t, mt, m in output_messages(out, runner.cfg.topics)}
    topics = runner.cfg.topics
    points = depth_image_proc_points(messages[topics.depth], messages[topics.depth_info])
    assert out.depth is not None and out.depth_lens is not None
    rays = ray_grid(torch.as_tensor(runner.stages.encoding.canonical.Kn), *out.depth.shape).numpy()
    hit = np.isfinite(points[..., 2])
    assert np.array_equal(hit, np.isfinite(out.depth)) and 0.3 < hit.mean() < 0.7
    # each point lies on the ray the network rendered for its pixel, at the depth rendered along it
    np.testing.assert_allclose(points[hit], rays[hit] * out.depth[hit][:, None], rtol=1e-5, atol=1e-5)
    assert np.all(np.isnan(points[~hit]))  # sky: no point at the far plane
