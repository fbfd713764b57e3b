"""The figure (input | depth | density profile) and the small pictures it is made of."""

import cv2
import numpy as np
import pytest
from conftest import slab_model, small_config

from kdbts_ros.core.stages import Stages
from kdbts_ros.runtime.pictures import compose_figure, depth_png, figure, occupancy_png, profile_picture


def test_occupancy_png_maps_values_onto_the_full_colour_map():
    occ = np.array([[0, 50, 100, -1]], np.int8)
    img = occupancy_png(occ, cell_px=1)
    magma = cv2.applyColorMap(np.array([[0, 127, 255]], np.uint8), cv2.COLORMAP_MAGMA)[0]
    np.testing.assert_array_equal(img[0, :3], magma)
    np.testing.assert_array_equal(img[0, 3], (128, 128, 128))


def test_figure_of_a_slab_shows_the_input_at_its_size_the_full_size_depth_and_the_profile():
    cfg = small_config()  # network 192x64; the node's depth image is half of that (depth_scale 0.5)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (150, 500, 3), np.uint8)
    K = np.array([[360.0, 0, 250], [0, 360, 75], [0, 0, 1]])
    depth, profile, picture = figure(Stages(cfg, slab_model(10.0)), rgb, K)
    assert depth.shape == (64, 192)  # rendered at the network's full input size
    assert np.all((depth >= 10.0) & (depth < 11.0))
    assert picture.shape == (300, 500 + 300, 3)  # input over depth, square profile of their height
    below_caption = slice(60, 150)  # the captions sit in each panel's top-left corner
    np.testing.assert_array_equal(picture[below_caption, :500], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)[below_caption])
    expected = depth_png(np.full((1, 1), depth.mean()), cfg.model.z_near, cfg.model.z_far)[0, 0].astype(int)
    panel = picture[150 + 60 : 300, :500].reshape(-1, 3).astype(int)
    assert np.abs(panel - expected).max() <= 12  # one colour: the wall at 10 m everywhere
    # the profile as a square of the figure's height, far at the top: free 5-9.8 m ahead (bright), the wall dark
    square = cv2.resize(profile_picture(profile), (300, 300), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(picture[60:, 500:], square[60:])
    bright = cv2.applyColorMap(np.array([[255]], np.uint8), cv2.COLORMAP_MAGMA)[0, 0]
    metres_at_row = np.linspace(23, 3, 256)[np.arange(300) * 256 // 300]
    centre = picture[:, 500 + 150]
    assert (centre[(metres_at_row > 5) & (metres_at_row < 9.8)] == bright).all()
    assert centre[metres_at_row > 10.5].astype(int).sum(-1).max() < 150


def test_each_panel_is_captioned_in_its_corner_and_a_wrong_depth_size_is_refused():
    h, w = 375, 1242
    grey = np.full((h, w, 3), 128, np.uint8)
    picture = compose_figure(grey, grey.copy(), np.full((8, 8, 3), 128, np.uint8))
    assert picture.shape == (2 * h, w + 2 * h, 3)
    for top, left in ((0, 0), (h, 0), (0, w)):  # input, depth, profile
        corner = picture[top : top + 30, left : left + 150]
        assert (corner == 0).all(-1).any() and (corner == 255).all(-1).any()  # white text on black
        assert (picture[top + h - 10, left + 10] == 128).all()  # the panel itself below
    with pytest.raises(ValueError, match="not the input's"):
        compose_figure(grey, grey[::2], grey)
