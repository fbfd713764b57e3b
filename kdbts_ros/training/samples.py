"""Training samples: posed frames of one source, in one of two layouts, and the mix of several sources.

``rig`` layout (a stereo pair, optionally side cameras): 2 time steps of each camera, ordered
as the official KITTI-360 loader: [cam0 t, cam0 t+1, cam1 t, cam1 t+1, cam2 t+o, cam2 t+o+1,
cam3 t+o, cam3 t+o+1], where cam0/1 is the forward stereo pair and cam2/3 the side cameras
offset by o frames.

``mono`` layout (one camera, as the official KITTI odometry loader): [t, t-1, t+1], frame t the
loss frame and its neighbours the render frames; samples where the camera moved less than
``min_motion`` to either neighbour are skipped (a standing vehicle gives no parallax).

Poses are expressed in frame 0's camera (so frame 0's pose is the identity). Every sample says
its layout, which fixes how the objective splits its frames into loss and render frames. Frames
come in the source's one training camera (``camera``: its normalised intrinsics are every frame's);
``valid`` (F, H, W) marks the pixels each frame's camera saw, the rest being padding the objective
takes no loss on.

With depth hints on, a sample also carries ``hints`` (frames, H, W): z-depth from a classical
matcher, 0 where there is none (see :mod:`.hints`): SGBM on the forward stereo pair of a rig
sample (every frame of cameras 0 and 1), a plane sweep against t - 1 and t + 1 for the loss frame of
a mono sample. They are computed once per frame, from the frames in the training camera (a
rectified pair stays rectified there: both cameras keep their axes and share its intrinsics), and
cached; padding has none.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Protocol, cast

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from kdbts_ros.core.lens import CanonicalCamera
from kdbts_ros.core.model.network import to_grey
from kdbts_ros.data.records import DatasetError
from kdbts_ros.training.hints import plane_sweep_hint, stereo_hint

RIG, MONO = 0, 1  # sample layouts (the "layout" entry of a sample)
MIN_CROP_WIDTH = 0.35  # crop_padding's narrowest window: about the 4:3 crop of a KITTI frame (39 % of the view)
FRAME_CACHE = 4096  # decoded frames kept per source
RECTIFIED_TOLERANCE = 1e-3  # a stereo pair is taken as rectified when rotation and off-axis offset are this small


class PosedFrames(Protocol):
    """What a dataset folder must answer (synthetic folders and KITTI recordings)."""

    cameras: list[str]
    sequences: list[str]

    @property
    def camera(self) -> CanonicalCamera: ...  # the one view every camera's images are served in

    def num_frames(self, seq: str) -> int: ...
    def image(self, seq: str, cam: int, frame: int) -> np.ndarray: ...
    def valid(self, seq: str, cam: int) -> np.ndarray | None: ...  # (H, W) pixels the camera sees; None: all
    def cam_to_world(self, seq: str, cam: int, frame: int) -> np.ndarray: ...


def loss_render_split(num_frames: int, flip: bool) -> tuple[list[int], list[int]]:
    """Official 'kitti360-mono' split: per camera one time step is a loss frame, the other a render frame, alternating
    across cameras.
    """
    loss = [2 * c + ((c % 2) ^ int(flip)) for c in range(num_frames // 2)]
    render = [2 * c + 1 - ((c % 2) ^ int(flip)) for c in range(num_frames // 2)]
    return loss, render


def frame_split(layout: int, num_frames: int, generator: torch.Generator) -> tuple[list[int], list[int]]:
    """Loss and render frames of a sample, drawn as the official loaders draw them.

    mono: frame 0 (t) is the loss frame, its neighbours render. A stereo pair alone (4 frames):
    2 random render frames, the rest loss frames (KITTI raw 'default'). More cameras: the
    KITTI-360 alternation, its orientation drawn.
    """
    if layout == MONO:
        return [0], list(range(1, num_frames))
    if num_frames == 4:
        order = torch.randperm(4, generator=generator).tolist()
        return sorted(order[2:]), sorted(order[:2])
    return loss_render_split(num_frames, bool(torch.rand((), generator=generator) < 0.5))


def encoder_candidates(num_frames: int) -> tuple[int, ...]:
    """Frames the multi-view head may encode besides frame 0: the forward (stereo or temporal) frames, never side
    cameras.
    """
    return tuple(range(1, min(num_frames, 4)))


class TrainingFrames(Dataset):
    """Samples of one source (``rig`` or ``mono`` layout) with poses relative to frame 0 and normalised intrinsics."""

    def __init__(
        self,
        source: PosedFrames,
        side_offset: int,
        flip_lr: float = 0.0,
        colour_jitter: float = 0.0,
        seed: int = 0,
        max_cameras: int = 4,
        stride: int = 1,
        layout: str = "rig",
        grey: float = 0.0,
        min_motion: float = 0.0,
        hints: bool = False,
        depth_range: tuple[float, float] = (3.0, 80.0),
        crop_padding: float = 0.0,
    ):
        self.source, self.side_offset, self.crop_padding = source, side_offset, crop_padding
        self.hints, self.depth_range = hints, depth_range
        self.flip_lr, self.colour_jitter, self.grey = flip_lr, colour_jitter, grey
        self.layout = MONO if layout == "mono" else RIG
        self.num_cameras = 1 if self.layout == MONO else min(len(source.cameras), max_cameras)
        if self.num_cameras < 2 and self.layout == RIG:
            raise DatasetError("the rig layout needs a stereo pair (2 cameras); use the mono layout for one camera")
        self.rng = np.random.default_rng(seed)
        # decoding and resizing a full KITTI frame costs more than a training step's share of it: frames are
        # kept decoded (4096 frames at 320x96 are 0.4 GB); augmentation works on copies
        self._image = functools.lru_cache(maxsize=FRAME_CACHE)(source.image)
        # hints cost a matcher run each (SGBM a few ms, a plane sweep ~0.1 s): kept like decoded frames
        self._stereo_hint = functools.lru_cache(maxsize=FRAME_CACHE)(self._compute_stereo_hint)
        self._motion_hint = functools.lru_cache(maxsize=FRAME_CACHE)(self._compute_motion_hint)
        if self.layout == MONO:
            self.items = [
                (seq, t)
                for seq in source.sequences
                for t in range(1, source.num_frames(seq) - 1, stride)
                if self._moved(seq, t, min_motion)
            ]
        else:
            span = 1 + (side_offset if self.num_cameras > 2 else 0)
            self.items = [(seq, t) for seq in source.sequences for t in range(0, source.num_frames(seq) - span, stride)]
        if not self.items:
            raise DatasetError("no sequence is long enough (or moves enough) for a training sample")
        self.Kn = source.camera.Kn.astype(np.float32)
        if hints and self.layout == RIG:
            self._baseline(*self.items[0])  # refuses a pair that is not rectified before training starts

    def _valid(self, seq: str, cam: int) -> np.ndarray:
        """(H, W) bool: the pixels of camera ``cam`` that show what it saw (not padding)."""
        valid = self.source.valid(seq, cam)
        return np.ones((self.source.camera.height, self.source.camera.width), bool) if valid is None else valid

    def _moved(self, seq: str, t: int, min_motion: float) -> bool:
        """Whether the camera moved at least ``min_motion`` metres from frame t to each neighbour."""
        centre = self.source.cam_to_world(seq, 0, t)[:3, 3]
        return all(
            np.linalg.norm(self.source.cam_to_world(seq, 0, t + dt)[:3, 3] - centre) >= min_motion for dt in (-1, 1)
        )

    def __len__(self) -> int:
        return len(self.items)

    def _baseline(self, seq: str, frame: int) -> float:
        """Metres from the left (camera 0) to the right camera (1) of the forward pair; raises DatasetError unless the
        pair is rectified (same orientation, offset along x only).
        """
        T = np.linalg.inv(self.source.cam_to_world(seq, 0, frame)) @ self.source.cam_to_world(seq, 1, frame)
        b = float(T[0, 3])
        if (
            b <= 0
            or not np.allclose(T[:3, :3], np.eye(3), atol=RECTIFIED_TOLERANCE)
            or (np.abs(T[1:3, 3]).max() > RECTIFIED_TOLERANCE * max(b, 1.0))
        ):
            raise DatasetError(f"{seq}: cameras 0 and 1 are not a rectified stereo pair (left first): no stereo hints")
        return b

    def _compute_stereo_hint(self, seq: str, cam: int, frame: int) -> np.ndarray:
        """SGBM z-depth (float16) of camera ``cam`` (0 left, 1 right) of the forward pair at ``frame``."""
        left, right = self._image(seq, 0, frame), self._image(seq, 1, frame)
        args = (float(self.source.camera.lens().K[0, 0]), self._baseline(seq, frame), *self.depth_range)
        if cam == 0:
            return stereo_hint(left, right, *args).astype(np.float16)
        # the right camera's depth: the mirrored pair is a rectified pair with the right image on the left
        mirrored = stereo_hint(right[:, ::-1].copy(), left[:, ::-1].copy(), *args)
        return np.ascontiguousarray(mirrored[:, ::-1]).astype(np.float16)

    def _compute_motion_hint(self, seq: str, t: int) -> np.ndarray:
        """Plane-sweep z-depth (float16) of camera 0 at frame t against frames t - 1 and t + 1."""
        T_world_ref = self.source.cam_to_world(seq, 0, t)
        neighbours = [
            (self._image(seq, 0, t + dt), np.linalg.inv(self.source.cam_to_world(seq, 0, t + dt)) @ T_world_ref)
            for dt in (-1, 1)
        ]
        # the training camera's pixel K puts pixel (row, col) where the network's rays do (CanonicalCamera.lens)
        K = self.source.camera.lens().K
        return plane_sweep_hint(self._image(seq, 0, t), neighbours, K, *self.depth_range).astype(np.float16)

    def sample_hints(self, seq: str, t: int, ids: list[tuple[int, int]]) -> np.ndarray:
        """Hint depths (frames, H, W) float32 of a sample's frames ``ids``; 0 where a frame or pixel has none."""
        out = np.zeros((len(ids), self.source.camera.height, self.source.camera.width), np.float32)
        if self.layout == MONO:
            out[0] = self._motion_hint(seq, t)
        else:
            for k, (cam, dt) in enumerate(ids):
                if cam < 2:  # the forward stereo pair; side cameras have no partner to match
                    out[k] = self._stereo_hint(seq, cam, t + dt)
        # a match in the padding matches invented pixels (the edge repeated)
        for k, (cam, _) in enumerate(ids):
            out[k][~self._valid(seq, cam)] = 0.0
        return out

    def frame_ids(self, flip: bool) -> list[tuple[int, int]]:
        """(camera, time offset) of each frame of a sample; a flip swaps left and right cameras of each complete
        pair.
        """
        if self.layout == MONO:
            return [(0, 0), (0, -1), (0, 1)]
        out = []
        for c in range(self.num_cameras):
            # cameras come in left/right pairs (0/1 forward, 2/3 side); a camera without its partner stays
            cam = c ^ 1 if flip and (c ^ 1) < self.num_cameras else c
            offset = self.side_offset if c >= 2 else 0
            out += [(cam, offset), (cam, offset + 1)]
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        seq, t = self.items[index]
        flip = bool(self.rng.random() < self.flip_lr)
        ids = self.frame_ids(flip)
        imgs = np.stack([self._image(seq, cam, t + dt) for cam, dt in ids]).astype(np.float32) / 255.0
        valid = np.stack([self._valid(seq, cam) for cam, _ in ids])
        poses = np.stack([self.source.cam_to_world(seq, cam, t + dt) for cam, dt in ids])
        T_ref = np.linalg.inv(poses[0]) @ poses
        if flip:
            # mirror the images and the geometry so a right camera looks like a left one
            imgs, valid = imgs[:, :, ::-1], valid[:, :, ::-1]
            S = np.diag([-1.0, 1.0, 1.0, 1.0])
            T_ref = S @ T_ref @ S
        hints = self.sample_hints(seq, t, ids) if self.hints else None
        if flip and hints is not None:
            hints = hints[:, :, ::-1]
        if self.crop_padding > 0 and self.rng.random() < self.crop_padding:
            imgs, valid, hints = self._narrower(imgs, valid, hints)
        images = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2)
        if self.colour_jitter > 0:
            images = self._jitter(images)
        if self.grey > 0 and self.rng.random() < self.grey:
            # one network for grey and colour cameras: colour samples are seen as a grey camera would record them
            images = to_grey(images).contiguous()
        Kn = np.repeat(self.Kn[None], len(ids), 0)
        if flip:
            Kn[:, 0, 2] = -Kn[:, 0, 2]  # mirrored principal point
        sample = {
            "images": images,
            "valid": torch.from_numpy(np.ascontiguousarray(valid)),
            "Kn": torch.from_numpy(Kn),
            "T_ref": torch.from_numpy(T_ref.astype(np.float32)),
            "flip": torch.tensor(flip),
            "layout": torch.tensor(self.layout),
        }
        if hints is not None:
            sample["hints"] = torch.from_numpy(np.ascontiguousarray(hints))
        return sample

    def _narrower(
        self, imgs: np.ndarray, valid: np.ndarray, hints: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Frame 0 (the encoder's) seen through a narrower camera of the same rays: a random column window of
        :data:`MIN_CROP_WIDTH` to all of the width; the columns outside it repeat its edge columns, as
        :class:`~kdbts_ros.core.lens.Resampler` pads a camera narrower than the network's, and are unseen. The
        other frames keep their view: they still give the colours the loss compares."""
        W = imgs.shape[2]
        w = int(self.rng.integers(round(MIN_CROP_WIDTH * W), W + 1))
        x0 = int(self.rng.integers(0, W - w + 1))
        x1 = x0 + w
        imgs, valid = imgs.copy(), valid.copy()
        imgs[0, :, :x0] = imgs[0, :, x0 : x0 + 1]
        imgs[0, :, x1:] = imgs[0, :, x1 - 1 : x1]
        valid[0, :, :x0] = valid[0, :, x1:] = False
        if hints is not None:
            hints = hints.copy()
            hints[0, :, :x0] = hints[0, :, x1:] = 0.0
        return imgs, valid, hints

    def _jitter(self, images: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast and saturation changes, the same for every frame of the sample."""
        a = self.colour_jitter
        b, c, s = (1.0 + self.rng.uniform(-a, a, 3)).tolist()
        images = images * b
        mean = images.mean((1, 2, 3), keepdim=True)
        images = (images - mean) * c + mean
        grey = images.mean(1, keepdim=True)
        return ((images - grey) * s + grey).clamp(0, 1)


class MixedFrames(Dataset):
    """Several sources as one dataset; index i of source k is ``offsets[k] + i``."""

    def __init__(self, sources: list[TrainingFrames], weights: list[float]):
        if len(sources) != len(weights) or not sources:
            raise ValueError("one weight per source, at least one source")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"source weights must be >= 0 and not all 0, got {weights}")
        self.sources, self.weights = sources, [w / sum(weights) for w in weights]
        self.offsets = np.cumsum([0] + [len(s) for s in sources]).tolist()

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        k = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.sources[k][index - self.offsets[k]]

    def reseed(self, seed: int) -> None:
        """Independent augmentation streams for each source (called in every data-loader worker)."""
        for k, s in enumerate(self.sources):
            s.rng = np.random.default_rng([seed, k])

    @property
    def augmentation_state(self) -> list[dict]:
        """The sources' augmentation streams (in this process: data-loader workers draw from their own)."""
        return [dict(s.rng.bit_generator.state) for s in self.sources]

    @augmentation_state.setter
    def augmentation_state(self, states: list[dict]) -> None:
        if len(states) != len(self.sources):
            raise ValueError(f"{len(states)} augmentation streams for {len(self.sources)} sources")
        for s, state in zip(self.sources, states, strict=True):
            s.rng.bit_generator.state = state


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: reseed the augmentation from torch's per-worker seed.

    Without it every worker would hold a copy of the same generator and repeat the
    other workers' flips and jitters.
    """
    info = get_worker_info()
    assert info is not None, "seed_worker is a worker_init_fn: it runs in a data-loader worker"
    cast(MixedFrames, info.dataset).reseed(torch.initial_seed() % 2**63)


class SourceBatches(Sampler[list[int]]):
    """Batches drawn from one source at a time, the source chosen with its weight.

    A batch never mixes sources, so its samples share a layout and a frame count.
    ``len`` is one pass over the data's size; iteration continues with the same generator.
    """

    def __init__(self, data: MixedFrames, batch_size: int, generator: torch.Generator):
        self.data, self.batch_size, self.generator = data, batch_size, generator

    def __len__(self) -> int:
        return max(1, len(self.data) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        weights = torch.tensor(self.data.weights)
        for _ in range(len(self)):
            k = int(torch.multinomial(weights, 1, generator=self.generator))
            n = len(self.data.sources[k])
            picks = (
                torch.randint(0, n, (self.batch_size,), generator=self.generator)
                if n < self.batch_size
                else torch.randperm(n, generator=self.generator)[: self.batch_size]
            )
            yield [self.data.offsets[k] + int(i) for i in picks]
