"""The figure (input | depth | density profile) and the small pictures it is made of."""

import cv2
import numpy as np
import pytest
from conftest import slab_model, small_config, view_panel

from kdbts_ros.core.lens import Lens, resampler
from kdbts_ros.core.stages import Stages
from kdbts_ros.runtime.legends import legend_height
from kdbts_ros.runtime.pictures import (
    UNKNOWN_BGR,
    caption_scale,
    compose_figure,
    depth_png,
    figure,
    occupancy_png,
    profile_picture,
)


def test_occupancy_png_maps_values_onto_the_full_colour_map():
    occ = np.array([[0, 50, 100, -1]], np.int8)
    img = occupancy_png(occ, cell_px=1)
    magma = cv2.applyColorMap(np.array([[0, 127, 255]], np.uint8), cv2.COLORMAP_MAGMA)[0]
    np.testing.assert_array_equal(img[0, :3], magma)
    np.testing.assert_array_equal(img[0, 3], UNKNOWN_BGR)


def test_figure_of_a_slab_shows_the_networks_view_the_full_size_depth_and_the_profile():
    cfg = small_config()  # network 192x64; the node's depth image is half of that (depth_scale 0.5)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (150, 500, 3), np.uint8)
    lens = Lens.pinhole(np.array([[360.0, 0, 250], [0, 360, 75], [0, 0, 1]]), 500, 150)
    stages = Stages(cfg, slab_model(10.0))
    depth, profile, picture = figure(stages, rgb, lens)
    assert depth.shape == (64, 192)  # rendered at the network's full input size
    # the camera (70 deg across) is narrower than the network's KITTI-360 view (103): its sides are padding
    maps = resampler(lens, stages.canonical.lens())
    assert np.array_equal(np.isfinite(depth), maps.valid) and 0.3 < maps.valid.mean() < 0.9
    assert np.all((depth[maps.valid] >= 10.0) & (depth[maps.valid] < 11.0))
    h = round(500 * 64 / 192)  # the network's view at the image's width
    bar = legend_height(caption_scale(h))
    # view over depth, square profile of their height, each column over its colour bar
    assert picture.shape == (2 * h + bar, 500 + 2 * h, 3)
    below_caption = slice(60, h)  # the captions sit in each panel's top-left corner
    expected = view_panel(rgb, lens, stages.canonical, 500)
    np.testing.assert_array_equal(picture[below_caption, :500], expected[below_caption])
    wall = depth_png(np.full((1, 1), np.nanmean(depth)), cfg.model.z_near, cfg.model.z_far)[0, 0].astype(int)
    panel = picture[h + 60 : 2 * h, :500].astype(int)
    seen = cv2.resize(maps.valid.astype(np.uint8), (500, h), interpolation=cv2.INTER_NEAREST)[60:].astype(bool)
    assert np.abs(panel[seen] - wall).max() <= 12  # one colour: the wall at 10 m everywhere it is seen
    assert (panel[~seen] == UNKNOWN_BGR).all()
    # the profile as a square of the figure's height, far at the top: free 5-9.8 m ahead (bright), the wall dark
    square = cv2.resize(profile_picture(profile), (2 * h, 2 * h), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(picture[60 : 2 * h, 500:], square[60:])
    bright = cv2.applyColorMap(np.array([[255]], np.uint8), cv2.COLORMAP_MAGMA)[0, 0]
    metres_at_row = np.linspace(23, 3, 256)[np.arange(2 * h) * 256 // (2 * h)]
    centre, far = picture[: 2 * h, 500 + h], metres_at_row > 10.5
    far[:60] = False  # the caption
    assert (centre[(metres_at_row > 5) & (metres_at_row < 9.8)] == bright).all()
    assert centre[far].astype(int).sum(-1).max() < 150


def test_each_panel_is_captioned_in_its_corner_and_a_wrong_depth_size_is_refused():
    h, w = 375, 1242
    grey = np.full((h, w, 3), 128, np.uint8)
    picture = compose_figure(grey, grey.copy(), np.full((8, 8, 3), 128, np.uint8), (3.0, 80.0))
    assert picture.shape == (2 * h + legend_height(caption_scale(h)), w + 2 * h, 3)
    for top, left in ((0, 0), (h, 0), (0, w)):  # input, depth, profile
        corner = picture[top : top + 30, left : left + 150]
        assert (corner == 0).all(-1).any() and (corner == 255).all(-1).any()  # white text on black
        assert (picture[top + h - 10, left + 10] == 128).all()  # the panel itself below
    with pytest.raises(ValueError, match="not the input's"):
        compose_figure(grey, grey[::2], grey, (3.0, 80.0))
