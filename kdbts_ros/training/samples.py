"""Training samples: the KITTI-360 frame layout assembled from any multi-camera posed sequence.

A sample holds 2 time steps of each camera, ordered as the official KITTI-360 loader:
[cam0 t, cam0 t+1, cam1 t, cam1 t+1, cam2 t+o, cam2 t+o+1, cam3 t+o, cam3 t+o+1], where cam0/1
is the forward stereo pair and cam2/3 the side cameras offset by o frames. Poses are expressed
in frame 0's camera (so frame 0's pose is the identity).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.camera import normalise_intrinsics
from ..data.records import DatasetError

FORWARD_FRAMES = (1, 2, 3)  # encoder candidates besides frame 0: the other forward (stereo) frames


class PosedFrames(Protocol):
    """What a dataset folder must answer (synthetic folders now; KITTI loaders plug in the same way)."""

    width: int
    height: int
    K: np.ndarray
    cameras: list[str]
    sequences: list[str]

    def num_frames(self, seq: str) -> int: ...
    def image(self, seq: str, cam: int, frame: int) -> np.ndarray: ...
    def cam_to_world(self, seq: str, cam: int, frame: int) -> np.ndarray: ...


def loss_render_split(num_frames: int, flip: bool) -> tuple[list[int], list[int]]:
    """Official 'kitti360-mono' split: per camera one time step is a loss frame, the other a render frame, alternating across cameras."""
    loss = [2 * c + ((c % 2) ^ int(flip)) for c in range(num_frames // 2)]
    render = [2 * c + 1 - ((c % 2) ^ int(flip)) for c in range(num_frames // 2)]
    return loss, render


class TrainingFrames(Dataset):
    """Samples of 2 time steps per camera with poses relative to frame 0 and normalised intrinsics."""

    def __init__(self, source: PosedFrames, side_offset: int, flip_lr: float = 0.0, colour_jitter: float = 0.0,
                 seed: int = 0, max_cameras: int = 4, stride: int = 1):
        self.source, self.side_offset = source, side_offset
        self.flip_lr, self.colour_jitter = flip_lr, colour_jitter
        self.num_cameras = min(len(source.cameras), max_cameras)
        if self.num_cameras < 2:
            raise DatasetError("training needs at least a stereo pair (2 cameras)")
        self.rng = np.random.default_rng(seed)
        span = 1 + (side_offset if self.num_cameras > 2 else 0)
        self.items = [(seq, t) for seq in source.sequences for t in range(0, source.num_frames(seq) - span, stride)]
        if not self.items:
            raise DatasetError("no sequence is long enough for a training sample")
        self.Kn = normalise_intrinsics(source.K, source.width, source.height).astype(np.float32)

    def __len__(self) -> int:
        return len(self.items)

    def frame_ids(self, flip: bool) -> list[tuple[int, int]]:
        """(camera, time offset) of each frame of a sample; a flip swaps left and right cameras."""
        out = []
        for c in range(self.num_cameras):
            cam = c ^ 1 if flip else c  # cameras come in left/right pairs: 0/1 forward, 2/3 side
            offset = self.side_offset if c >= 2 else 0
            out += [(cam, offset), (cam, offset + 1)]
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        seq, t = self.items[index]
        flip = bool(self.rng.random() < self.flip_lr)
        ids = self.frame_ids(flip)
        imgs = np.stack([self.source.image(seq, cam, t + dt) for cam, dt in ids]).astype(np.float32) / 255.0
        poses = np.stack([self.source.cam_to_world(seq, cam, t + dt) for cam, dt in ids])
        T_ref = np.linalg.inv(poses[0]) @ poses
        if flip:
            # mirror the images and the geometry so a right camera looks like a left one
            imgs = imgs[:, :, ::-1]
            S = np.diag([-1.0, 1.0, 1.0, 1.0])
            T_ref = S @ T_ref @ S
        images = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2)
        if self.colour_jitter > 0:
            images = self._jitter(images)
        Kn = np.repeat(self.Kn[None], len(ids), 0)
        if flip:
            Kn[:, 0, 2] = -Kn[:, 0, 2]  # mirrored principal point
        return {"images": images, "Kn": torch.from_numpy(Kn),
                "T_ref": torch.from_numpy(T_ref.astype(np.float32)), "flip": torch.tensor(flip)}

    def _jitter(self, images: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast and saturation changes, the same for every frame of the sample."""
        a = self.colour_jitter
        b, c, s = (1.0 + self.rng.uniform(-a, a, 3)).tolist()
        images = images * b
        mean = images.mean((1, 2, 3), keepdim=True)
        images = (images - mean) * c + mean
        grey = images.mean(1, keepdim=True)
        return ((images - grey) * s + grey).clamp(0, 1)

