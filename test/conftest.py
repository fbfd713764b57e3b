"""Shared fixtures: small configs and a network with an analytic density (a slab)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from rosbags.rosbag2 import Reader
from scipy.spatial.transform import Rotation

from kdbts_ros.core.config import GridConfig, MapConfig
from kdbts_ros.core.grids import GridSpec
from kdbts_ros.core.model.checkpoint import random_model
from kdbts_ros.core.model.code import z_code
from kdbts_ros.core.model.network import SV_HEAD, Architecture, DensityField
from kdbts_ros.core.world_map import WorldMap, logit
from kdbts_ros.messages import cdr
from kdbts_ros.runtime.config import RunnerConfig

SMALL_ARCH = Architecture(backbone="resnet18")
# the shared real KITTI / KITTI-360 samples (tests that need them skip when absent)
KITTI_SAMPLE = Path(os.environ.get("KDBTS_KITTI_SAMPLE", Path(__file__).resolve().parents[2] / "shared/data/kitti"))
needs_kitti = pytest.mark.skipif(not KITTI_SAMPLE.is_dir(), reason=f"KITTI sample {KITTI_SAMPLE} not present")
S = 1_000_000_000  # nanoseconds in a second: stamps are integer nanoseconds


def raw_drive_eval_args() -> list[str]:
    """``kdbts eval`` arguments naming the shared KITTI raw drive 0052: images, dataset, calibration, poses."""
    from kdbts_ros.data import shared_sample

    s = KITTI_SAMPLE
    return [
        str(s / shared_sample.RAW_IMAGES),
        "--dataset",
        "raw",
        "--calib",
        str(s / shared_sample.RAW_CALIB),
        "--poses",
        str(s / shared_sample.RAW_POSES),
    ]


def small_config(**overrides) -> RunnerConfig:
    """A fast configuration: ResNet-18 at 64x192, coarse grid, small depth image."""
    cfg = RunnerConfig()
    cfg.model.checkpoint = "random"
    cfg.model.backbone, cfg.model.image_height, cfg.model.image_width = "resnet18", 64, 192
    cfg.grid.resolution = 0.5
    cfg.render.depth_scale = 0.5
    cfg.render.samples = 32
    for key, value in overrides.items():
        section, _, leaf = key.rpartition(".")
        setattr(getattr(cfg, section) if section else cfg, leaf, value)
    return cfg


class NoCompiler:
    """Stands in for torch.compile where no C++ compiler is installed: the build fails on the first call."""

    calls = 0

    def __call__(self, fn, **_kwargs):
        def build(*_args):
            NoCompiler.calls += 1
            raise RuntimeError("InductorError: CppCompileError: C++ compile error\nno such file: g++")

        return build


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


def _M(rot: Rotation, t) -> np.ndarray:
    """4x4 from a scipy rotation and a translation (independent of kdbts_ros.core.geometry)."""
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = rot.as_matrix(), t
    return T


def read_bag(path: Path) -> tuple[list[tuple[str, int, object]], dict[str, object]]:
    """(topic, bag stamp, decoded message) of every message, and the offered QoS per topic."""
    out = []
    with Reader(path) as reader:
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
        for conn, stamp, data in reader.messages():
            out.append((conn.topic, stamp, cdr.deserialize(data, conn.msgtype)))
    return out, qos


def official_state_dict(model: DensityField, bts: bool = False) -> dict[str, torch.Tensor]:
    """The ``model`` entry of an official training checkpoint: ``renderer.net.`` keys, renderer counters;
    ``bts``: BTS's layout (``mlp_coarse``, no multi-view head)."""
    sd = {}
    for k, v in model.state_dict().items():
        if bts and k.startswith("heads.multiviewhead3."):
            continue
        if bts:
            k = k.replace("heads.singleviewhead.", "mlp_coarse.")
        sd["renderer.net." + k] = v.clone()
    sd["renderer.renderer.iter_idx"] = torch.tensor(200000)
    sd["renderer.renderer.last_sched"] = torch.tensor(0)
    return sd


def official_checkpoint(path, model: DensityField | dict, bts: bool = False) -> None:
    """Save a training checkpoint laid out like the official ones (ignite's top-level keys); ``model`` is a
    network or an already built official state dict."""
    sd = model if isinstance(model, dict) else official_state_dict(model, bts)
    torch.save(
        {
            "model": sd,
            "trainer": {"iteration": 200000, "epoch": 3},
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
            "lr_scheduler": {"step_size": 120000, "gamma": 0.1, "last_epoch": 5},
        },
        path,
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def write_odometry(root: Path, n: int = 4) -> tuple[Path, np.ndarray]:
    """A small KITTI odometry sequence 00 (32x16 images) driving 0.8 m per frame along camera z."""
    seq = root / "sequences" / "00"
    K = np.array([[20.0, 0, 16], [0, 20.0, 8], [0, 0, 1]])
    lines = []
    for k, baseline in enumerate((0.0, -0.54, 0.06, -0.48)):
        P = np.c_[K, K @ [baseline, 0, 0]]
        lines.append(f"P{k}: " + " ".join(f"{v:.12e}" for v in P.ravel()))
    Tr = np.array([[0, -1, 0, 0], [0, 0, -1, -0.08], [1, 0, 0, -0.27]], float)
    lines.append("Tr: " + " ".join(f"{v:.12e}" for v in Tr.ravel()))
    seq.mkdir(parents=True)
    (seq / "calib.txt").write_text("\n".join(lines) + "\n")
    (seq / "times.txt").write_text("".join(f"{0.1037 * i:.6e}\n" for i in range(n)))
    for k in range(4):
        (seq / f"image_{k}").mkdir()
        for i in range(n):
            img = np.full((16, 32, 3) if k >= 2 else (16, 32), 10 * i + k, np.uint8)
            cv2.imwrite(str(seq / f"image_{k}" / f"{i:06d}.png"), img)
    (seq / "velodyne").mkdir()
    for i in range(n):
        np.array([[10.0, 0, 0, 0.5], [5, 1, -1, 0.2]], np.float32).tofile(seq / "velodyne" / f"{i:06d}.bin")
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 2, 3] = 0.8 * np.arange(n)
    (root / "poses").mkdir()
    np.savetxt(root / "poses" / "00.txt", poses[:, :3].reshape(n, 12))
    return seq, poses


REPO = Path(__file__).resolve().parents[1]


def copy_checkout(dest: Path) -> None:
    """The checkout's files as git sees them (tracked, and new ones not ignored): no build outputs."""
    files = (
        subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


# The world map's test scene (test/core/test_world_map.py and the map tests beside other modules)
# a grid 4 m across, 3..13 m forward, 2 m high (1 m above to 1 m below the camera), 0.2 m cells
GRID = GridSpec.from_config(
    GridConfig(x_min=-2.0, x_max=2.0, z_min=3.0, z_max=13.0, y_min=-1.0, y_max=1.0, resolution=0.2, height_levels=10)
)
CFG = MapConfig(resolution=0.2, extent_xy=40.0, extent_z=6.0, decay_per_s=0.0)
L_HIT, L_MISS = logit(0.7), logit(0.4)
L_MAX, L_MIN = logit(0.97), logit(0.12)
ALL_SEEN, NONE_SEEN = np.zeros(GRID.shape, bool), np.ones(GRID.shape, bool)  # unseen masks
NOTHING = np.zeros(GRID.shape, np.float32)  # the density of a frame that sees none of the grid (NONE_SEEN)


def camera_at(x: float, y: float = 0.0, z: float = 1.6) -> np.ndarray:
    """A camera looking along the fixed frame's +x, z up (optical x -> -y, y -> -z, z -> +x).

    At these positions the grid's cell centres fall on voxel centres (odd multiples of 0.1 m).
    """
    return np.array([[0.0, 0.0, 1.0, x], [-1.0, 0.0, 0.0, y], [0.0, -1.0, 0.0, z], [0.0, 0.0, 0.0, 1.0]])


def wall_density(forward_from: float = 10.0, forward_to: float = 10.4) -> np.ndarray:
    """Density 5 in the cells whose forward distance lies in [from, to), 0 elsewhere: a wall across the view."""
    forward = GRID.centres_cam()[..., 2]
    return np.where((forward >= forward_from) & (forward < forward_to), 5.0, 0.0).astype(np.float32)


def log_odds_at(m: WorldMap, point) -> float:
    """The log-odds of the voxel holding a fixed-frame point."""
    flat, inside = m._flat_index(np.asarray([point], np.float64))
    assert inside[0]
    return float(m.log_odds.reshape(-1)[flat[0]])


def calib_numbers(path: Path, key: str) -> np.ndarray:
    """The numbers after ``key:`` in a KITTI calibration file, read independently of the loaders."""
    for line in path.read_text().splitlines():
        if line.startswith(key + ":"):
            return np.array(line.split(":")[1].split(), float)
    raise KeyError(key)


def homogeneous(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The 4x4 rigid transform of a rotation (9 numbers or 3x3) and a translation."""
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = np.reshape(R, (3, 3)), t
    return T


def view_panel(rgb: np.ndarray, lens, camera, width: int) -> np.ndarray:
    """The figure's input panel computed independently: ``rgb`` seen through ``camera`` (a CanonicalCamera),
    its padding grey, scaled (nearest) to ``width``; BGR."""
    import cv2

    from kdbts_ros.core.lens import resampler
    from kdbts_ros.runtime.pictures import UNKNOWN_BGR

    maps = resampler(lens, camera.lens())
    view = cv2.cvtColor(maps(rgb), cv2.COLOR_RGB2BGR)
    view[~maps.valid] = UNKNOWN_BGR
    return cv2.resize(view, (width, round(width * camera.height / camera.width)), interpolation=cv2.INTER_NEAREST)


def above_legend(picture: np.ndarray, width: int, height: int) -> np.ndarray:
    """The picture a labelled PNG shows above its colour bar, back at ``width`` x ``height``: pictures narrower
    than 400 px are scaled up by the smallest whole factor that reaches it (nearest)."""
    k = -(-400 // width)
    assert picture.shape[1] == k * width and picture.shape[0] > k * height, picture.shape
    return picture[: k * height : k, ::k]


def columns_in_camera(grid, bottom: float, top: float, levels: int, T_frame_cam: np.ndarray) -> np.ndarray:
    """Points (height, width, levels, 3) in the camera frame: each cell of an OccupancyGrid (axis-aligned in its frame)
    at ``levels`` heights evenly in [bottom, top] of that frame."""
    info, r = grid.info, grid.info.resolution
    x = info.origin.position.x + (np.arange(info.width) + 0.5) * r
    y = info.origin.position.y + (np.arange(info.height) + 0.5) * r
    z = bottom + (np.arange(levels) + 0.5) * (top - bottom) / levels
    gy, gx, gz = np.meshgrid(y, x, z, indexing="ij")
    T_cam_frame = np.linalg.inv(T_frame_cam)
    return np.stack([gx, gy, gz], -1) @ T_cam_frame[:3, :3].T + T_cam_frame[:3, 3]


def planner_cells(grid, cfg, T_base_cam: np.ndarray, lens) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which cells of a planner OccupancyGrid (in base_link) the slab network's wall at camera depth 10 m must make
    occupied, free or unknown, from the message, the settings, the camera pose and the network's view ``lens``
    alone: (column with a sample seen behind the wall, column seen all in front of it, column all behind the
    camera or nearer than it renders)."""
    g = cfg.planner
    cam = columns_in_camera(grid, g.ground_z + g.z_min, g.ground_z + g.z_max, g.levels, T_base_cam)
    front = cam[..., 2] > 0.1
    uv = cam[..., :2] / np.where(front, cam[..., 2], 1.0)[..., None] * np.diag(lens.K)[:2] + lens.K[:2, 2]
    margin = 4.0  # pixels of the network's view: clear of its edges
    inside = front & (uv[..., 0] > margin) & (uv[..., 0] < lens.width - margin)
    inside &= (uv[..., 1] > margin) & (uv[..., 1] < lens.height - margin)
    depth, near = cam[..., 2], cfg.model.z_near
    wall_behind = (inside & (depth > 10.6)).any(-1)
    clear = (inside & (depth > near + 0.3) & (depth < 9.4)).all(-1)
    unseen = (~front | (depth < near)).all(-1)
    return wall_behind, clear, unseen


def wait_until(cond: Callable[[], object], timeout: float = 30.0) -> bool:
    """Whether ``cond()`` turned true within ``timeout`` seconds, asked every 50 ms and once more at the end."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())
