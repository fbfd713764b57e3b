"""One frame-record shape for every real dataset (KITTI raw, KITTI odometry, KITTI-360).

A :class:`Recording` is one drive or sequence: a :class:`DatasetRig` (cameras with rectified
intrinsics and their optical frames on base_link, the velodyne on base_link) and a list of
:class:`FrameRecord` (stamp, image paths, velodyne path, T_world_base). Every pose of a sensor
is derived from these two, so the vehicle pose sits on base_link exactly once and
``T_world_cam = T_world_base @ T_base_cam`` holds for every consumer: training
(:class:`RecordingFrames`, a ``PosedFrames``), evaluation, replay and bag conversion.

Frames: base_link is the dataset's vehicle frame (KITTI raw: the OXTS IMU; KITTI-360: the
GPS/IMU "pose" frame turned to REP 103; KITTI odometry: a REP 103 frame at camera 0), each with the
road's height below it (``DatasetRig.ground_z``: KITTI's sensor setup puts the IMU 0.93 m and the
cameras 1.65 m above the road; KITTI-360's pose frame is 0.94 m above it); cameras are rectified
optical frames (x right, y down, z forward); ``T_a_b`` maps points of frame b into frame a.
"""

from __future__ import annotations

import datetime as dt
import functools
import struct
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from kdbts_ros.core import geometry
from kdbts_ros.core.errors import UserError
from kdbts_ros.core.lens import CanonicalCamera, Lens, Projector, Resampler, resampler
from kdbts_ros.data.rig import PERIOD_NS, START_NS


class DatasetError(UserError, ValueError):
    """Missing or malformed dataset input; the message names the file."""


@dataclass(frozen=True, eq=False)
class DatasetCamera:
    """A rectified or virtual pinhole camera: dataset name (``image_02``), ROS frame, K, size, pose on base_link."""

    name: str
    frame_id: str
    K: np.ndarray
    width: int
    height: int
    T_base_cam: np.ndarray
    colour: bool = True
    # P[0, 3] of a stereo pair's second camera in its own frame: -fx * baseline (ROS CameraInfo); 0 otherwise
    projection_tx: float = 0.0
    # the camera the images were recorded with when it is not this pinhole view (KITTI-360's fisheyes seen
    # through a turned virtual pinhole): every view of the images is resampled from it
    recorded: Projector | None = None

    def lens(self) -> Lens:
        """This rectified or virtual pinhole camera."""
        return Lens.pinhole(self.K, self.width, self.height)

    def source(self) -> Projector:
        """The camera the image files were recorded with."""
        return self.lens() if self.recorded is None else self.recorded

    @functools.cached_property
    def resampling(self) -> Resampler | None:
        """Maps from the recorded image into this pinhole view; None when the file already is it."""
        return None if self.recorded is None else resampler(self.recorded, self.lens())


@dataclass(frozen=True, eq=False)
class DatasetRig:
    """The sensors of a recording, all placed on base_link, and the road's height below it."""

    cameras: tuple[DatasetCamera, ...]
    T_base_velo: np.ndarray | None = None
    ground_z: float | None = None  # the road's z in base_link (REP-120's base_footprint lies there); None: unknown

    def camera(self, name: str) -> int:
        """Index of the camera called ``name`` (dataset name or frame id)."""
        for i, c in enumerate(self.cameras):
            if name in (c.name, c.frame_id):
                return i
        raise KeyError(f"no camera {name!r}; have {[c.name for c in self.cameras]}")

    def T_cam_velo(self, cam: int) -> np.ndarray:
        """4x4 map from velodyne points to camera ``cam``'s rectified optical frame."""
        if self.T_base_velo is None:
            raise DatasetError("this recording has no velodyne calibration")
        return geometry.invert(self.cameras[cam].T_base_cam) @ self.T_base_velo


@dataclass(frozen=True, eq=False)
class FrameRecord:
    """One frame: dataset index, stamp, one image path per rig camera, velodyne scan, vehicle pose."""

    index: int
    stamp_ns: int
    images: tuple[Path, ...]
    velodyne: Path | None
    T_world_base: np.ndarray | None  # None: the dataset has no pose for this frame
    rig: DatasetRig = field(repr=False)

    def K(self, cam: int) -> np.ndarray:
        """3x3 rectified pixel intrinsics of camera ``cam``."""
        return self.rig.cameras[cam].K

    def image(self, cam: int, colour: bool | None = None) -> np.ndarray:
        """Camera ``cam``'s pinhole view of this frame (see :func:`read_camera_image`)."""
        return read_camera_image(self.rig.cameras[cam], self.images[cam], colour)

    def recorded_image(self, cam: int, colour: bool | None = None) -> np.ndarray:
        """Camera ``cam``'s image file as recorded (see :func:`read_recorded_image`)."""
        return read_recorded_image(self.rig.cameras[cam], self.images[cam], colour)

    def T_world_cam(self, cam: int) -> np.ndarray:
        """4x4 pose of camera ``cam``'s optical frame in the world; DatasetError when the frame has no pose."""
        if self.T_world_base is None:
            raise DatasetError(f"frame {self.index} has no pose")
        return self.T_world_base @ self.rig.cameras[cam].T_base_cam

    def T_cam_velo(self, cam: int) -> np.ndarray:
        """4x4 map from this frame's velodyne points to camera ``cam``."""
        return self.rig.T_cam_velo(cam)


@dataclass(frozen=True, eq=False)
class Recording:
    """A drive or sequence: its name, rig, frames, where its poses and stamps come from."""

    name: str
    rig: DatasetRig
    frames: list[FrameRecord]
    poses_from: str = "none"  # the pose source and what its world is, for people
    stamps_from: str = "dataset"  # "dataset" timestamps or the documented 10 Hz fallback

    def posed(self) -> list[FrameRecord]:
        """The frames that have a pose."""
        return [f for f in self.frames if f.T_world_base is not None]


# ---------------------------------------------------------------- small readers shared by the loaders


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else DatasetError naming it and what it should hold."""
    if not Path(path).is_file():
        raise DatasetError(f"{what} not found: {path}")
    return Path(path)


def read_matrix_rows(path: Path, width: int, what: str) -> np.ndarray:
    """(N, width) float64 table of a whitespace-separated file; errors name the file."""
    require_file(path, what)
    try:
        rows = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DatasetError(f"{what} {path} is not a table of numbers: {exc}") from exc
    if rows.size == 0 or rows.shape[1] != width or not np.all(np.isfinite(rows)):
        raise DatasetError(f"{what} {path}: expected {width} finite numbers per line, got shape {rows.shape}")
    return rows


def rows_to_poses(rows: np.ndarray) -> np.ndarray:
    """(N, 4, 4) transforms from (N, 12) row-major 3x4 rows."""
    poses = np.tile(np.eye(4), (len(rows), 1, 1))
    poses[:, :3, :] = rows.reshape(-1, 3, 4)
    return poses


def parse_timestamp(text: str) -> int:
    """Nanoseconds since the epoch of a KITTI stamp ``2011-09-26 13:02:25.961661696`` (read as UTC)."""
    day, _, frac = text.strip().partition(".")
    base = dt.datetime.strptime(day, "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.timezone.utc)
    # nanosecond digits would be lost in a float; keep them as an integer
    return int(base.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9])


def read_timestamps(path: Path) -> list[int]:
    """Nanosecond stamps of a KITTI ``timestamps.txt`` (one date-time per line, frame = line number)."""
    require_file(path, "timestamps")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    try:
        return [parse_timestamp(line) for line in lines]
    except ValueError as exc:
        raise DatasetError(f"timestamps {path}: {exc}") from exc


def frame_stamps(indices: list[int], stamps: list[int] | None) -> tuple[list[int], str]:
    """Stamp of each frame index from the dataset, else 10 Hz from START_NS (frame index * 0.1 s)."""
    if stamps is None:
        return [START_NS + i * PERIOD_NS for i in indices], "10 Hz fallback"
    missing = [i for i in indices if i >= len(stamps)]
    if missing:
        raise DatasetError(f"timestamps cover {len(stamps)} frames but frame {missing[0]} exists")
    return [stamps[i] for i in indices], "dataset"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG header without decoding it."""
    with open(require_file(path, "image"), "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        raise DatasetError(f"{path} is not a PNG file")
    return struct.unpack(">II", head[16:24])


def read_rgb_or_mono(path: Path, colour: bool) -> np.ndarray:
    """RGB uint8 (H, W, 3) or mono uint8 (H, W) of an image file; DatasetError when it cannot be decoded."""
    img = cv2.imread(str(require_file(path, "image")), cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise DatasetError(f"cannot decode image {path} (corrupt or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if colour else img


def read_recorded_image(cam: DatasetCamera, path: Path, colour: bool | None = None) -> np.ndarray:
    """The image file of a camera: decoded (RGB; grey cameras mono unless ``colour``), its size checked."""
    img = read_rgb_or_mono(path, cam.colour if colour is None else colour)
    src = cam.source()
    if (img.shape[1], img.shape[0]) != (src.width, src.height):
        raise DatasetError(f"{path} is {img.shape[1]}x{img.shape[0]} but the calibration says {src.width}x{src.height}")
    return img


def read_camera_image(cam: DatasetCamera, path: Path, colour: bool | None = None) -> np.ndarray:
    """The camera's pinhole view in ``path``: the recorded image, resampled when it was recorded by another camera."""
    img = read_recorded_image(cam, path, colour)
    return img if cam.resampling is None else cam.resampling(img)


def read_velodyne(path: Path) -> np.ndarray:
    """(N, 4) float32 x, y, z, reflectance of a KITTI velodyne ``.bin`` scan."""
    data = np.fromfile(require_file(path, "velodyne scan"), dtype="<f4")
    if data.size % 4:
        raise DatasetError(f"velodyne scan {path} has {data.size} floats, not a multiple of 4 (truncated?)")
    return data.reshape(-1, 4)


def frame_files(folder: Path, suffix: str, what: str) -> dict[int, Path]:
    """Frame index -> file of a folder of numbered files (``0000000042.png``)."""
    if not folder.is_dir():
        raise DatasetError(f"{what} folder not found: {folder}")
    out = {}
    for p in folder.glob(f"*{suffix}"):
        if p.stem.isdigit():
            out[int(p.stem)] = p
    if not out:
        raise DatasetError(f"no numbered {suffix} files in {what} folder {folder}")
    return out


def camera_frame_files(folders: dict[str, Path], what: str) -> tuple[list[dict[int, Path]], list[int]]:
    """Numbered PNGs of each camera folder and the frame indices (the first camera's; every other must have them)."""
    names = list(folders)
    files = [frame_files(folders[c], ".png", f"{what} {c}") for c in names]
    indices = sorted(files[0])
    for c, f in zip(names[1:], files[1:]):
        missing = set(indices) - set(f)
        if missing:
            raise DatasetError(f"{folders[c]} lacks frame {min(missing)} (present in {folders[names[0]]})")
    return files, indices


def frame_records(
    rig: DatasetRig,
    indices: list[int],
    stamps: list[int],
    files: list[dict[int, Path]],
    T_world_base: dict[int, np.ndarray],
    velodyne_dir: Path,
    digits: int,
) -> list[FrameRecord]:
    """One FrameRecord per index; the velodyne scan ``<index:0{digits}d>.bin`` where it exists, the pose where known."""
    out = []
    for i, stamp in zip(indices, stamps):
        scan = velodyne_dir / f"{i:0{digits}d}.bin"
        out.append(
            FrameRecord(
                i, stamp, tuple(f[i] for f in files), scan if scan.is_file() else None, T_world_base.get(i), rig
            )
        )
    return out


def rectified_camera(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """K and T_cam_ref of a rectified projection ``P = K [I | t]`` relative to the reference rectified camera."""
    K = P[:, :3].copy()
    T = np.eye(4)
    T[:3, 3] = np.linalg.solve(K, P[:, 3])
    return K, T


def base_poses_from_camera(T_ref_cam: np.ndarray, T_base_cam: np.ndarray) -> np.ndarray:
    """T_world_base of camera poses given in the frame-0 camera frame, with world := base_link of frame 0.

    (Trajectories such as ORB-SLAM's or KITTI odometry's start at the identity in a y-down camera
    frame; re-expressing them in base_link of the first frame gives a z-up world for RViz.)
    """
    return T_base_cam @ T_ref_cam @ geometry.invert(T_base_cam)


class RecordingFrames:
    """A ``PosedFrames`` (training) over recordings: posed frames only, every camera seen through one camera.

    Every camera's images are resampled into ``camera`` (default: the first camera's view at its
    recorded size) with the runtime's resampling (:func:`kdbts_ros.core.lens.resampler`), from the
    images as recorded (KITTI-360's fisheyes in one step). Pixels a camera does not see are
    padded and marked in :meth:`valid`.
    """

    def __init__(
        self, recordings: list[Recording], cameras: list[str] | None = None, camera: CanonicalCamera | None = None
    ):
        if not recordings:
            raise DatasetError("no recordings")
        rig = recordings[0].rig
        idx = [rig.camera(c) for c in cameras] if cameras else list(range(len(rig.cameras)))
        self.camera_indices = idx
        self.cameras = [rig.cameras[i].name for i in idx]
        first = rig.cameras[idx[0]]
        self.camera = camera or CanonicalCamera.of(first.lens(), first.width, first.height)
        self.width, self.height = self.camera.width, self.camera.height
        self._frames = {rec.name: rec.posed() for rec in recordings}
        self._rigs = {rec.name: rec.rig for rec in recordings}
        self.sequences = list(self._frames)
        self._maps: dict[tuple[str, int], Resampler] = {}

    def resampling(self, seq: str, cam: int) -> Resampler:
        """The maps from camera ``cam``'s recorded images of ``seq`` into :attr:`camera` (made once per camera)."""
        key = (seq, cam)
        if key not in self._maps:
            source = self._rigs[seq].cameras[self.camera_indices[cam]].source()
            self._maps[key] = resampler(source, self.camera.lens())
        return self._maps[key]

    def valid(self, seq: str, cam: int) -> np.ndarray:
        """(H, W) bool: the pixels of :attr:`camera` that camera ``cam`` sees (the rest is padding)."""
        return self.resampling(seq, cam).valid

    def num_frames(self, seq: str) -> int:
        """Posed frames of ``seq``."""
        return len(self._frames[seq])

    def record(self, seq: str, frame: int) -> FrameRecord:
        """The ``frame``-th posed frame record of ``seq``."""
        return self._frames[seq][frame]

    def image(self, seq: str, cam: int, frame: int) -> np.ndarray:
        """RGB uint8 of camera ``cam`` seen through :attr:`camera` (grey cameras repeated to 3 channels)."""
        img = self.record(seq, frame).recorded_image(self.camera_indices[cam], colour=True)
        return self.resampling(seq, cam)(img)

    def cam_to_world(self, seq: str, cam: int, frame: int) -> np.ndarray:
        """4x4 camera-to-world pose."""
        return self.record(seq, frame).T_world_cam(self.camera_indices[cam])
