"""Short posed camera sequences for the demo and the benchmarks, and their input messages.

The real KITTI raw sample (drive 2011_09_26_0052, left colour camera, ORB-SLAM poses), or a
procedural street; serialized exactly as a camera driver and a localiser publish them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdbts_ros.core import geometry
from kdbts_ros.data import shared_sample
from kdbts_ros.data.bags import CameraStream, rig_messages
from kdbts_ros.data.rig import RigCamera
from kdbts_ros.messages.topics import qualified

# the demo camera: forward, level, 1.65 m above base_link (on the ground)
DEMO_CAMERA = RigCamera("camera_color_left", 0.0, 0.0, (0.0, 0.0, 1.65))


@dataclass
class Sequence:
    """Images with their rectified intrinsics and camera poses in the fixed frame."""

    name: str
    images: list[np.ndarray]  # RGB uint8
    K: np.ndarray
    T_fixed_cam: np.ndarray  # (N, 4, 4)
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
    return Sequence(
        f"KITTI raw {KITTI_DRIVE}", images, rec.rig.cameras[0].K, np.stack([f.T_world_cam(0) for f in frames])
    )


def synthetic_sample(n: int, width: int = 640, height: int = 192) -> Sequence:
    """A procedural street driven along +x."""
    from kdbts_ros.data.rig import kitti_like_intrinsics
    from kdbts_ros.data.synthetic import SceneConfig, StreetScene, street_trajectory

    scene = StreetScene(SceneConfig(seed=0))
    K = kitti_like_intrinsics(width, height)
    poses = street_trajectory(n)
    images = [scene.render(T, K, width, height)[0] for T in poses]
    return Sequence("procedural street (seed 0)", images, K, poses)


def input_messages(seq: Sequence, fixed_frame: str, topics) -> list[tuple[int, str, str, bytes]]:
    """(stamp, topic, msgtype, bytes) of the sequence as a driver plus a localiser would publish.

    The topics are fully qualified (relative names of ``topics`` in the root namespace), as a bag holds them.
    """
    T_bc = T_base_cam()
    camera = CameraStream(seq.camera_frame, T_bc, seq.K, qualified(topics.images[0]), qualified(topics.camera_infos[0]))
    T_fixed_base = seq.T_fixed_cam @ geometry.invert(T_bc)
    return list(rig_messages([camera], T_fixed_base, [[img] for img in seq.images], fixed_frame))
