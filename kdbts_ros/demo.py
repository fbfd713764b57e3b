"""``kdbts demo``: a short posed camera sequence through the node's own runner, written to disk.

The sequence is the real KITTI raw sample (drive 2011_09_26_0052, left colour
camera, ORB-SLAM poses) when its folder is present, else a procedural street.
Inputs are serialized exactly as a bag or a camera driver would deliver them
and go through :class:`FrameRunner`; the outputs land in an mcap bag and PNGs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .config import PipelineConfig
from .core import geometry
from .data import shared_sample
from .data.bags import BagWriter, CameraStream, rig_messages
from .data.rig import RigCamera
from .image_files import write_image
from .pictures import depth_png, figure, occupancy_png
from .runner import FrameRunner, run_messages

# the demo camera: forward, level, 1.65 m above base_link (on the ground)
DEMO_CAMERA = RigCamera("camera_color_left", 0.0, 0.0, (0.0, 0.0, 1.65))


@dataclass
class Sequence:
    """Images with their rectified intrinsics and camera poses in the fixed frame."""

    name: str
    images: list[np.ndarray]          # RGB uint8
    K: np.ndarray
    T_fixed_cam: np.ndarray           # (N, 4, 4)
    camera_frame: str = "camera_color_left"


def T_base_cam() -> np.ndarray:
    """Static extrinsic of the demo camera on base_link."""
    return DEMO_CAMERA.T_base_cam()


KITTI_DRIVE = shared_sample.RAW_DRIVE


def kitti_sample(root: Path, n: int) -> Sequence:
    """The first n frames of the shared KITTI raw sample (left colour camera, ORB-SLAM poses)."""
    rec = shared_sample.raw_sample(root)
    frames = rec.frames[:n]
    images = [f.image(0, colour=True) for f in frames]
    return Sequence(f"KITTI raw {KITTI_DRIVE}", images, rec.rig.cameras[0].K,
                    np.stack([f.T_world_cam(0) for f in frames]))


def synthetic_sample(n: int, width: int = 640, height: int = 192) -> Sequence:
    """A procedural street driven along +x."""
    from .data.synthetic import SceneConfig, StreetScene, kitti_like_intrinsics, street_trajectory

    scene = StreetScene(SceneConfig(seed=0))
    K = kitti_like_intrinsics(width, height)
    poses = street_trajectory(n)
    images = [scene.render(T, K, width, height)[0] for T in poses]
    return Sequence("procedural street (seed 0)", images, K, poses)


def input_messages(seq: Sequence, fixed_frame: str, topics) -> list[tuple[int, str, str, bytes]]:
    """(stamp, topic, msgtype, bytes) of the sequence as a driver plus a localiser would publish."""
    T_bc = T_base_cam()
    camera = CameraStream(seq.camera_frame, T_bc, seq.K, topics.images[0], topics.camera_infos[0])
    T_fixed_base = seq.T_fixed_cam @ geometry.invert(T_bc)
    return list(rig_messages([camera], T_fixed_base, [[img] for img in seq.images], fixed_frame))


def run_demo(cfg: PipelineConfig, out_dir: Path, seq: Sequence) -> dict[str, object]:
    """Feed the sequence through the runner; write the bag and the last frame's PNGs (and its figure)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    bag_path = out_dir / "kdbts_demo"
    if bag_path.exists():
        for f in bag_path.iterdir():
            f.unlink()
        bag_path.rmdir()
    runner = FrameRunner(cfg)
    with BagWriter(bag_path) as bag:
        last = run_messages(runner, input_messages(seq, cfg.fixed_frame, cfg.topics), bag)
    if last is None:
        raise RuntimeError(f"no frame was processed; drops: {dict(runner.drops)}")
    files = {"bag": bag_path, "occupancy_png": out_dir / "occupancy_bev.png", "depth_png": out_dir / "depth.png",
             "input_png": out_dir / "input.png", "figure_png": out_dir / "figure.png"}
    write_image(files["occupancy_png"], occupancy_png(last.occupancy))
    write_image(files["depth_png"], depth_png(last.depth, cfg.model.z_near, cfg.model.z_far))
    write_image(files["input_png"], cv2.cvtColor(seq.images[-1], cv2.COLOR_RGB2BGR))
    # the demo camera is level (DEMO_CAMERA): the profile needs no pitch
    write_image(files["figure_png"], figure(runner.pipeline, seq.images[-1], seq.K).picture)
    return {"files": files, "messages": bag.counts, "frames": runner.processed, "drops": dict(runner.drops),
            "head": last.head, "weights": runner.pipeline.model_info.get("weights"), "timings": last.timings}
