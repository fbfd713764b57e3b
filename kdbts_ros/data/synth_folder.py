"""Procedural multi-camera street sequences in a KITTI-style folder (optionally also as a ROS 2 bag).

Folder format::

    <root>/rig.json                       {"width", "height", "period_ns",
                                           "cameras": [{"name", "K": 3x3 list, "T_base_cam": 4x4 list}]}
    <root>/<seq>/scene.json               dataclasses.asdict(SceneConfig) (tuples stored as lists)
    <root>/<seq>/poses.txt                one line per frame: 12 floats, row-major 3x4 of T_world_base
                                          (KITTI odometry style)
    <root>/<seq>/image_<cc>/<ffffff>.png  RGB image (PNG), cc = camera index 00, 01, ...; ffffff = frame
    <root>/<seq>/depth_<cc>/<ffffff>.png  uint16 z-depth * 256 rounded (KITTI depth style);
                                          0 = no surface (sky) or farther than 255.99 m
    <root>/<seq>/bag/                     optional mcap ROS 2 bag of the same sequence

Sequences are named ``seed_<seed:04d>``. T_base_cam maps optical camera points (x right, y down,
z forward) to base_link (x forward, y left, z up); T_world_base maps base_link to the street's
world frame (z up, x along the street), so a camera's pose is ``T_world_base @ T_base_cam``.
The scene itself is rebuilt exactly from scene.json with :class:`StreetScene`, which gives exact
occupancy for supervision and evaluation.

The bag has ``/tf_static`` (base_link -> ``<name>_optical``) once, then per frame at 10 Hz from
1_700_000_000 s: ``/tf`` (odom -> base_link, odom = world), ``/<name>/image_raw`` (rgb8) and
``/<name>/camera_info`` for every camera.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from kdbts_ros.core.lens import CanonicalCamera, Lens, resampler
from kdbts_ros.data.records import DatasetError, read_matrix_rows, rows_to_poses
from kdbts_ros.data.rig import PERIOD_NS, START_NS, RigConfig, base_trajectory
from kdbts_ros.data.synthetic import SceneConfig, StreetScene

DEPTH_SCALE = 256.0  # KITTI depth PNGs: metres * 256 as uint16


def sequence_name(seed: int) -> str:
    """Folder name of the sequence generated from ``seed``."""
    return f"seed_{seed:04d}"


def rig_dict(rig: RigConfig) -> dict[str, object]:
    """Contents of rig.json for ``rig``."""
    K = rig.K().tolist()
    return {
        "width": rig.width,
        "height": rig.height,
        "period_ns": PERIOD_NS,
        "cameras": [{"name": c.name, "K": K, "T_base_cam": c.T_base_cam().tolist()} for c in rig.cameras],
    }


def encode_depth(depth: np.ndarray) -> np.ndarray:
    """uint16 KITTI depth image (metres * 256) of a float z-depth map; 0 where inf or out of range."""
    scaled = np.round(np.where(np.isfinite(depth), depth, 0.0) * DEPTH_SCALE)
    return np.where((scaled > 0) & (scaled <= np.iinfo(np.uint16).max), scaled, 0).astype(np.uint16)


def decode_depth(png: np.ndarray) -> np.ndarray:
    """float32 metres of a KITTI depth image; np.inf where it is 0 (no surface)."""
    depth = png.astype(np.float32) / np.float32(DEPTH_SCALE)
    depth[png == 0] = np.inf
    return depth


def _frame_file(seq_dir: Path, kind: str, cam: int, frame: int) -> Path:
    return seq_dir / f"{kind}_{cam:02d}" / f"{frame:06d}.png"


def _write_png(path: Path, img: np.ndarray) -> None:
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")


def _write_bag(path: Path, rig: RigConfig, poses: np.ndarray, frames: list[list[np.ndarray]]) -> None:
    """mcap bag of the rendered frames (frames[i][c] = RGB of camera c at frame i)."""
    # imported here: messages pulls in torch (via the pipeline), which the reader does not need
    from kdbts_ros.data.bags import BagWriter, CameraStream, rig_messages

    if path.exists():  # rosbags refuses to write into an existing bag folder
        shutil.rmtree(path)
    K = rig.K()
    cameras = [
        CameraStream(f"{c.name}_optical", c.T_base_cam(), K, f"/{c.name}/image_raw", f"/{c.name}/camera_info")
        for c in rig.cameras
    ]
    with BagWriter(path) as bag:
        for stamp, topic, msgtype, data in rig_messages(cameras, poses, frames, "odom", START_NS, PERIOD_NS):
            bag.write(topic, msgtype, stamp, data)


def write_sequence(
    root: Path, seed: int, n_frames: int, rig: RigConfig = RigConfig(), step_m: float = 1.0, bag: bool = False
) -> Path:
    """Render every camera at every frame of sequence ``seed_<seed>`` into ``root``; returns the sequence folder."""
    root = Path(root)
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    root.mkdir(parents=True, exist_ok=True)
    rig_json, info = root / "rig.json", rig_dict(rig)
    if rig_json.exists():
        # one rig per root: sequences written with another rig would be read with the wrong geometry
        if _load_json(rig_json) != json.loads(json.dumps(info)):
            raise DatasetError(f"{rig_json} describes a different rig; write to another folder")
    else:
        rig_json.write_text(json.dumps(info, indent=1) + "\n")

    seq_dir = root / sequence_name(seed)
    # the street extends 60 m beyond the last frame so the far view never looks off its end
    config = SceneConfig(seed=seed, length_m=float(max(120.0, n_frames * step_m + 60.0)))
    scene = StreetScene(config)
    poses = base_trajectory(n_frames, step_m=step_m, seed=seed)
    T_bc = [c.T_base_cam() for c in rig.cameras]
    K = rig.K()
    for c in range(len(rig.cameras)):
        for kind in ("image", "depth"):
            d = seq_dir / f"{kind}_{c:02d}"
            if d.exists():  # stale frames of a longer earlier run would survive otherwise
                shutil.rmtree(d)
            d.mkdir(parents=True)
    (seq_dir / "scene.json").write_text(json.dumps(dataclasses.asdict(config), indent=1) + "\n")
    np.savetxt(seq_dir / "poses.txt", poses[:, :3, :].reshape(n_frames, 12), fmt="%.17g")

    frames: list[list[np.ndarray]] = []
    for i in tqdm(range(n_frames), desc=seq_dir.name, unit="frame", disable=None):  # None: off when not a tty
        images = []
        for c, T in enumerate(T_bc):
            rgb, depth = scene.render(poses[i] @ T, K, rig.width, rig.height)
            _write_png(_frame_file(seq_dir, "image", c, i), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            _write_png(_frame_file(seq_dir, "depth", c, i), encode_depth(depth))
            images.append(rgb)
        if bag:  # keep images only when a bag needs them
            frames.append(images)
    if bag:
        _write_bag(seq_dir / "bag", rig, poses, frames)
    return seq_dir


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path} must hold a JSON object")
    return data


class SynthFolder:
    """Reader of a folder written by :func:`write_sequence` (format in the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        """Read rig.json and list the sequences."""
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"synthetic dataset folder {self.root} not found")
        path = self.root / "rig.json"
        rig = _load_json(path)
        try:
            self.width, self.height = int(rig["width"]), int(rig["height"])
            self.period_ns = int(rig["period_ns"])
            cams = rig["cameras"]
            self.cameras: list[str] = [str(c["name"]) for c in cams]
            self.Ks = np.array([c["K"] for c in cams], dtype=np.float64).reshape(len(cams), 3, 3)
            self.T_base_cam = np.array([c["T_base_cam"] for c in cams], dtype=np.float64).reshape(len(cams), 4, 4)
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{path} is malformed: {exc!r}") from exc
        if not self.cameras:
            raise DatasetError(f"{path} lists no cameras")
        self.sequences: list[str] = sorted(p.name for p in self.root.iterdir() if (p / "poses.txt").is_file())
        self._poses: dict[str, np.ndarray] = {}

    @property
    def K(self) -> np.ndarray:
        """3x3 pixel intrinsics shared by all cameras; ValueError if they differ."""
        if not np.allclose(self.Ks, self.Ks[0]):
            raise ValueError(f"cameras of {self.root / 'rig.json'} have different intrinsics; use .Ks")
        return self.Ks[0].copy()

    @property
    def camera(self) -> CanonicalCamera:
        """The view the frames are served in: the rig's shared K at the recorded size (no resampling)."""
        return CanonicalCamera.of(Lens.pinhole(self.K, self.width, self.height), self.width, self.height)

    def valid(self, seq: str, cam: int) -> None:
        """Every pixel is seen (the frames are served as rendered)."""
        return None

    def _seq_dir(self, seq: str) -> Path:
        d = self.root / seq
        if not d.is_dir():
            raise FileNotFoundError(f"sequence {seq!r} not found in {self.root} (have: {self.sequences})")
        return d

    def poses(self, seq: str) -> np.ndarray:
        """(N, 4, 4) T_world_base of every frame."""
        if seq not in self._poses:
            rows = read_matrix_rows(self._seq_dir(seq) / "poses.txt", 12, "base poses")
            self._poses[seq] = rows_to_poses(rows)
        return self._poses[seq].copy()

    def num_frames(self, seq: str) -> int:
        """Number of frames of ``seq``."""
        return len(self.poses(seq))

    def _png(self, seq: str, kind: str, cam: int, frame: int) -> tuple[Path, np.ndarray]:
        if not 0 <= cam < len(self.cameras):
            raise IndexError(f"camera index {cam} out of range 0..{len(self.cameras) - 1}")
        n = self.num_frames(seq)
        if not 0 <= frame < n:
            raise IndexError(f"frame {frame} out of range 0..{n - 1} of {seq}")
        path = _frame_file(self.root / seq, kind, cam, frame)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found")
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise DatasetError(f"cannot read PNG {path} (corrupt or not an image)")
        if img.shape[:2] != (self.height, self.width):
            raise DatasetError(f"{path} is {img.shape[1]}x{img.shape[0]}, rig.json says {self.width}x{self.height}")
        return path, img

    def image(self, seq: str, cam_index: int, frame: int) -> np.ndarray:
        """RGB uint8 (H, W, 3) of camera ``cam_index`` at ``frame``."""
        path, img = self._png(seq, "image", cam_index, frame)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise DatasetError(f"{path} is not an 8-bit 3-channel image ({img.dtype}, shape {img.shape})")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def depth(self, seq: str, cam_index: int, frame: int) -> np.ndarray:
        """float32 (H, W) z-depth in metres of camera ``cam_index`` at ``frame``; np.inf where no surface."""
        path, img = self._png(seq, "depth", cam_index, frame)
        if img.dtype != np.uint16 or img.ndim != 2:
            raise DatasetError(f"{path} is not a 16-bit single-channel depth image ({img.dtype}, shape {img.shape})")
        return decode_depth(img)

    def cam_to_world(self, seq: str, cam_index: int, frame: int) -> np.ndarray:
        """4x4 pose of camera ``cam_index``'s optical frame in the world at ``frame``."""
        if not 0 <= cam_index < len(self.cameras):
            raise IndexError(f"camera index {cam_index} out of range 0..{len(self.cameras) - 1}")
        return self.poses(seq)[frame] @ self.T_base_cam[cam_index]

    def scene(self, seq: str) -> StreetScene:
        """The exact procedural scene of ``seq``, rebuilt from scene.json."""
        path = self._seq_dir(seq) / "scene.json"
        data = _load_json(path)
        names = {f.name for f in dataclasses.fields(SceneConfig)}
        if set(data) - names:
            raise DatasetError(f"{path} has unknown keys {sorted(set(data) - names)}")
        # JSON has no tuples; SceneConfig's only sequence fields are tuples
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        try:
            return StreetScene(SceneConfig(**kwargs))
        except (TypeError, ValueError) as exc:  # values of the wrong type or range
            raise DatasetError(f"{path} is malformed: {exc}") from exc


class ResampledSynthFolder:
    """A synthetic folder's posed frames seen through one camera (a training ``PosedFrames``), as the runtime sees
    images: each camera's frames resampled from its own K (:func:`kdbts_ros.core.lens.resampler`).
    """

    def __init__(self, folder: SynthFolder, camera: CanonicalCamera):
        self.folder, self.camera = folder, camera
        self.cameras, self.sequences = folder.cameras, folder.sequences
        target = camera.lens()
        self._maps = [resampler(Lens.pinhole(K, folder.width, folder.height), target) for K in folder.Ks]

    def num_frames(self, seq: str) -> int:
        return self.folder.num_frames(seq)

    def image(self, seq: str, cam: int, frame: int) -> np.ndarray:
        """RGB uint8 of camera ``cam`` in :attr:`camera`."""
        return self._maps[cam](self.folder.image(seq, cam, frame))

    def valid(self, seq: str, cam: int) -> np.ndarray:
        """(H, W) bool: the pixels of :attr:`camera` that camera ``cam`` sees."""
        return self._maps[cam].valid

    def cam_to_world(self, seq: str, cam: int, frame: int) -> np.ndarray:
        return self.folder.cam_to_world(seq, cam, frame)
