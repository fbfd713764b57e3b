"""Training settings, in the same described-field model as the node's parameters (``kdbts train --config``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from kdbts_ros.core.config import shape_field
from kdbts_ros.core.model.network import Architecture, architecture_of
from kdbts_ros.core.model.official import OFFICIAL_CAMERAS
from kdbts_ros.core.settings import set_param, setting


@dataclass
class TrainModelConfig:
    """The network trained; stored with every checkpoint."""

    backbone: str = shape_field("backbone", "resnet18_half", " (resnet18_half: half-width ResNet-18 for CPU training)")
    feature_dim: int = shape_field("feature_dim", 32)
    mv_hidden: int = shape_field("mv_hidden", 128)
    mv_feature_dim: int = shape_field("mv_feature_dim", 16)
    z_near: float = shape_field("z_near", 3.0)
    z_far: float = shape_field("z_far", 80.0)
    grey_input: bool = setting(
        False,
        "the encoder sees every image as grey (luma), so grey and colour cameras "
        "look alike to it; stored with the checkpoint, applied wherever it runs",
    )

    def architecture(self) -> Architecture:
        """The network shapes these settings describe."""
        return architecture_of(self, self.grey_input)


@dataclass
class SourceConfig:
    """One source of training frames: a line of ``data.sources``, ``FORMAT ROOT [key=value ...]``."""

    format: str = setting(
        "synth",
        "dataset layout: synth (kdbts synth folder), raw (KITTI raw drive), odometry "
        "(KITTI odometry sequence), kitti360 (KITTI-360 root)",
        choices=("synth", "raw", "odometry", "kitti360"),
    )
    root: str = setting("data/synth_train", "dataset folder (KITTI: as kdbts kitti2bag's SOURCE)")
    calib: str = setting("", "KITTI: calibration path when not in the standard layout (as kitti2bag --calib)")
    poses: str = setting("", "KITTI: pose file when not in the standard layout (as kitti2bag --poses)")
    sequence: str = setting("", "kitti360: sequence name")
    cameras: str = setting(
        "",
        "KITTI: comma-separated camera folders, stereo pairs left first (empty: KITTI raw the "
        "colour pair image_02,image_03 as the official loaders; others all present)",
    )
    layout: str = setting(
        "rig",
        "rig: two time steps of a stereo pair (and side cameras); mono: the first camera's "
        "frames t, t-1, t+1 (loss frame t, render frames its neighbours)",
        choices=("rig", "mono"),
    )
    weight: float = setting(1.0, "share of batches drawn from this source, relative to the others", 0.0, 1000.0)


def parse_source(line: str) -> SourceConfig:
    """A ``data.sources`` line, e.g. ``odometry data/sequences/07 layout=mono weight=2``; raises ValueError."""
    words = line.split()
    if len(words) < 2:
        raise ValueError(f"data.sources: {line!r} is not 'FORMAT ROOT [key=value ...]'")
    src = SourceConfig()
    values: dict[str, object] = {"format": words[0], "root": words[1]}
    for word in words[2:]:
        key, sep, value = word.partition("=")
        if not sep:
            raise ValueError(f"data.sources: {word!r} in {line!r} is not key=value")
        values[key] = float(value) if key == "weight" else value
    for key, given in values.items():
        try:
            set_param(src, key, given)
        except ValueError as exc:
            raise ValueError(f"data.sources: {line!r}: {exc}") from exc
    return src


@dataclass
class TrainDataConfig:
    """Where the frames come from and how a training sample is assembled."""

    sources: list[str] = setting(
        ["synth data/synth_train"],
        "sources of training frames, each 'FORMAT ROOT [key=value ...]' with the keys of "
        "a source (format synth|raw|odometry|kitti360; calib, poses, sequence, cameras, "
        "layout rig|mono, weight); every batch comes from one source, drawn by weight",
    )
    width: int = setting(
        0,
        "training camera width every source's frames are resampled to (0: the first source's; official: 640)",
        0,
        4096,
    )
    height: int = setting(
        0,
        "training camera height every source's frames are resampled to (0: the first source's; official: 192)",
        0,
        4096,
    )
    camera: str = setting(
        "",
        "the training camera's normalised intrinsics 'fx fy cx cy' (official convention), or kitti-360 / kitti-raw "
        "(the official configs' values); empty: the first source's first camera. Every source is resampled into it; "
        "the checkpoint states it",
    )
    side_offset: int = setting(
        10, "frames between the forward and the side cameras' time steps (KITTI-360 fisheye_offset)", 0, 100
    )
    flip_lr: float = setting(
        0.5,
        "probability of swapping left and right cameras (the sample's 'right image'); mono samples are mirrored",
        0.0,
        1.0,
    )
    colour_jitter: float = setting(
        0.2,
        "brightness/contrast/saturation jitter amplitude, the same for all frames of a sample (official: 0.2)",
        0.0,
        1.0,
    )
    crop_padding: float = setting(
        0.0,
        "probability of showing the encoder's frame (frame 0) through a narrower camera: a random window of "
        "35-100 % of the training view's width, the columns outside it repeating its edge as the runtime pads a "
        "narrower camera, and unseen (no loss there); teaches the network to answer beside padding",
        0.0,
        1.0,
    )
    grey: float = setting(
        0.0, "probability of turning a sample's colour frames grey (one network for grey and colour cameras)", 0.0, 1.0
    )
    min_motion: float = setting(
        0.3,
        "mono layout: least camera travel in metres from frame t to each neighbour "
        "(a standing vehicle gives no parallax)",
        0.0,
        100.0,
    )

    def parsed_sources(self) -> list[SourceConfig]:
        """``sources`` parsed and validated."""
        return [parse_source(line) for line in self.sources]

    def normalised_camera(self) -> tuple[float, float, float, float] | None:
        """``camera`` as (fx', fy', cx', cy'), None when empty; raises ValueError."""
        words = self.camera.replace(",", " ").split()
        if not words:
            return None
        if len(words) == 1 and words[0] in OFFICIAL_CAMERAS:
            return OFFICIAL_CAMERAS[words[0]]
        try:
            fx, fy, cx, cy = (float(w) for w in words)
        except ValueError:
            raise ValueError(
                f"data.camera: {self.camera!r} is not 'fx fy cx cy' or one of {', '.join(OFFICIAL_CAMERAS)}"
            ) from None
        if not (fx > 0 and fy > 0 and math.isfinite(cx) and math.isfinite(cy)):
            raise ValueError(f"data.camera: {self.camera!r} has no positive focal length")
        return fx, fy, cx, cy


@dataclass
class TrainLossConfig:
    """Loss terms and their weights (official defaults where they exist)."""

    patches: int = setting(16, "8x8 ray patches per sample (official: 32, i.e. 2048 rays)", 1, 1024)
    patch_size: int = setting(8, "patch side in pixels", 2, 32)
    samples: int = setting(32, "samples per ray (official: 64)", 4, 256)
    smoothness: float = setting(1e-3, "edge-aware smoothness weight", 0.0, 10.0)
    invalid_threshold: float = setting(
        0.9,
        "weight-guided policy: a ray is unusable in a render view when more "
        "than this share of its weight lies on samples invalid there",
        0.0,
        1.0,
    )
    encoder_views: int = setting(
        3,
        "encoder frames of the multi-view head: frame 0 plus random forward frames (official num_multiviews: 3)",
        1,
        8,
    )
    view_dropout: float = setting(0.0, "probability of dropping each extra encoder frame", 0.0, 1.0)
    point_view_dropout: float = setting(
        0.5,
        "multi-view head: probability of hiding each extra view from each "
        "query point (official dropout_views_rate 0.5; view 0 is always seen)",
        0.0,
        1.0,
    )
    kd: float = setting(
        1e-2, "weight of the KDBTS density distillation (L1 on densities clipped to [0, 2])", 0.0, 100.0
    )
    featuremetric: float = setting(
        0.0, "KD-MVS option: weight of featuremetric consistency (rendered vs target feature, detached)", 0.0, 100.0
    )
    prob_kd: float = setting(
        0.0,
        "KD-MVS option: weight of probabilistic, cross-view-validated ray distillation (Gaussian KL on log depth)",
        0.0,
        100.0,
    )
    prob_kd_tolerance: float = setting(
        0.1, "cross-view check: relative depth agreement between teacher view subsets", 0.0, 10.0
    )
    stereo_hints: float = setting(
        0.0,
        "Depth Hints weight on stereo sources: log-L1 of the rendered depth to the SGBM depth of the "
        "forward pair (left-right checked) where that hint reprojects better than the rendered depth",
        0.0,
        100.0,
    )
    motion_hints: float = setting(
        0.0,
        "Depth Hints weight on mono sources: as stereo_hints, the hint from a plane sweep of frame t "
        "against t-1 and t+1 (posed; kept where both agree and the cost minimum is distinct)",
        0.0,
        100.0,
    )


@dataclass
class TrainConfig:
    """One training run: method, data, network, optimisation and logging."""

    method: str = setting(
        "kdbts",
        "bts: single-view head; mvbts: multi-view head; kdbts: multi-view teacher "
        "plus single-view student distilled from it",
        choices=("bts", "mvbts", "kdbts"),
    )
    teacher: str = setting(
        "joint",
        "kdbts only: joint (teacher trained in the same run) or frozen (encoder and "
        "multi-view head from init_checkpoint, frozen; only the student trains)",
        choices=("joint", "frozen"),
    )
    init_checkpoint: str = setting("", "start from these weights (required for teacher: frozen)")
    iterations: int = setting(2000, "optimiser steps", 1, 10**8)
    batch_size: int = setting(2, "samples per step and process", 1, 1024)
    lr: float = setting(1e-4, "Adam learning rate (official 1e-4)", 0.0, 1.0)
    lr_step: int = setting(120000, "StepLR period in steps (official 120000)", 1, 10**8)
    lr_gamma: float = setting(0.1, "StepLR factor", 0.0, 1.0)
    seed: int = setting(0, "seed of weights, sampling and augmentation (offset by the process rank)", 0, 2**31 - 1)
    workers: int = setting(0, "data-loader worker processes", 0, 64)
    threads: int = setting(0, "torch CPU threads per process (0: torch default)", 0, 256)
    device: str = setting("auto", "auto, cpu, cuda (each process uses cuda:LOCAL_RANK under torchrun)")
    log_every: int = setting(25, "steps between log records", 1, 10**6)
    checkpoint_every: int = setting(250, "steps between resumable checkpoints", 1, 10**8)
    model: TrainModelConfig = field(default_factory=TrainModelConfig)
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    loss: TrainLossConfig = field(default_factory=TrainLossConfig)

    def check(self) -> None:
        """Cross-field checks; raises ValueError."""
        if self.teacher == "frozen" and self.method == "kdbts" and not self.init_checkpoint:
            raise ValueError("teacher: frozen needs init_checkpoint (a trained MVBTS checkpoint)")
        if self.model.z_near >= self.model.z_far:
            raise ValueError("model.z_near must be below model.z_far")
        if self.method == "kdbts" and self.teacher == "frozen" and (self.loss.stereo_hints or self.loss.motion_hints):
            raise ValueError("depth hints compare reprojection errors of the rendered depth: not with a frozen teacher")
        if self.method != "kdbts" and self.loss.prob_kd > 0:
            raise ValueError("loss.prob_kd distils into the single-view student: it needs method kdbts")
        self.data.parsed_sources()
        self.data.normalised_camera()
