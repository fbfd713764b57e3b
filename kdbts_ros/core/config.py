"""One configuration model for the node, replay, demo and tools.

Every setting is a dataclass field with a description and, for numbers, a range.
The node declares its ROS parameters from these fields (dotted names such as
``grid.resolution``), and the command-line tools read the same YAML file that
the node reads (ROS 2 parameter-file layout, ``<node>: ros__parameters: ...``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from kdbts_ros.core.errors import UserError


class ConfigError(UserError, ValueError):
    """A parameter file or setting that cannot be used; the message names the file (or the command line)."""


def _f(
    default: Any,
    description: str,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] | None = None,
    runtime: bool = False,
) -> Any:
    """A dataclass field carrying its parameter description, range and choices."""
    meta = {
        "description": description,
        "range": (lo, hi) if lo is not None else None,
        "choices": choices,
        "runtime": runtime,
    }
    if isinstance(default, list):  # a mutable default needs a fresh copy per instance
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


# The network-shape fields, written once: the node's ModelConfig and training's TrainModelConfig
# declare them with shape_field (training's defaults are a smaller network for CPU training).
BACKBONE_CHOICES = ("resnet18", "resnet34", "resnet50", "resnet18_half")  # core.model.resnet.BACKBONES
_SHAPE = {
    "backbone": ("ResNet encoder", None, None, BACKBONE_CHOICES),
    "feature_dim": ("channels of the pixel-aligned feature map (d_out)", 8, 256, None),
    "mv_hidden": ("hidden width of the multi-view head's per-view MLP", 8, 1024, None),
    "mv_feature_dim": ("per-view feature width fused by the multi-view head", 4, 256, None),
    "z_near": ("near plane of the positional code and rendering, metres", 0.1, 100.0, None),
    "z_far": ("far plane of the positional code and rendering, metres", 1.0, 1000.0, None),
}


def shape_field(name: str, default: Any, note: str = "") -> Any:
    """The dataclass field of network-shape setting ``name`` with its default (``note`` is appended to its text)."""
    description, lo, hi, choices = _SHAPE[name]
    return _f(default, description + note, lo, hi, choices)


@dataclass
class ModelConfig:
    """The density network and its input resolution."""

    backbone: str = shape_field("backbone", "resnet50", " of random weights (checkpoint: random)")
    image_height: int = _f(
        0,
        "network input height in pixels; 0: the checkpoint's training height (official and random weights: 192)",
        0,
        1024,
    )
    image_width: int = _f(
        0,
        "network input width in pixels; 0: the checkpoint's training width (official and random weights: 640)",
        0,
        2048,
    )
    feature_dim: int = shape_field("feature_dim", 64)
    mv_hidden: int = shape_field("mv_hidden", 128)
    mv_feature_dim: int = shape_field("mv_feature_dim", 16)
    z_near: float = shape_field("z_near", 3.0)
    z_far: float = shape_field("z_far", 80.0)
    checkpoint: str = _f(
        "",
        "project checkpoint (.safetensors), or the name of fetched official weights "
        "(kdbts weights list, e.g. kitti-360); empty: the embedded KDBTS network trained on "
        "the procedural benchmark; random: seeded random weights of backbone and widths",
    )
    seed: int = _f(0, "seed for random weights and seeded ray jitter", 0, 2**31 - 1)
    device: str = _f("auto", "torch device: auto, cpu, cuda, cuda:N")
    dtype: str = _f("float32", "compute dtype", choices=("float32", "float16", "bfloat16"))
    chunk_points: int = _f(
        262144, "points per network query chunk of the reference path (model.fast false)", 1024, 2**26, runtime=True
    )
    fast: bool = _f(
        True,
        "fast path: head first layers folded into per-frame maps, work shared along rays, "
        "only grid cells the camera sees decoded; false: the plain reference path (same outputs "
        "within fp32 rounding)",
        runtime=True,
    )
    query_memory_mb: int = _f(
        0,
        "working memory of one fast-path query chunk, MiB; 0: 64 on CPU (stays in cache), 4096 on CUDA",
        0,
        65536,
        runtime=True,
    )
    threads: int = _f(0, "CPU threads for torch and onnxruntime; 0: their default (one per core)", 0, 256)
    compile: bool = _f(
        False,
        "torch.compile the encoder for its fixed input size (on CUDA with CUDA graphs: "
        "far fewer kernel launches); the first frames then take tens of seconds",
    )
    backend: str = _f(
        "torch",
        "what runs the encoder (with the folded maps): torch, or onnxruntime (CPU; the network "
        "exported to ONNX once, cached under $KDBTS_CACHE_DIR/onnx; needs model.fast, dtype float32 "
        "and a CPU device; the grid query and depth rendering stay on torch, faster here)",
        choices=("torch", "onnxruntime"),
    )

    def backend_problem(self) -> str | None:
        """Why the configured backend cannot run these settings, or None (onnxruntime: fast path, float32)."""
        if self.backend == "onnxruntime" and not (self.fast and self.dtype == "float32"):
            return (
                "model.backend onnxruntime runs the fast path in float32: it needs model.fast true "
                "and model.dtype float32 (or use model.backend torch)"
            )
        return None


@dataclass
class GridConfig:
    """The camera-aligned bird's-eye grid (paper Fig. 4: x [-9, 9], y [0, 1], z [3, 23])."""

    x_min: float = _f(-9.0, "left edge across the camera (camera x), metres", -100.0, 100.0, runtime=True)
    x_max: float = _f(9.0, "right edge across the camera (camera x), metres", -100.0, 100.0, runtime=True)
    z_min: float = _f(3.0, "near edge along the optical axis (camera z), metres", 0.0, 200.0, runtime=True)
    z_max: float = _f(23.0, "far edge along the optical axis (camera z), metres", 0.0, 200.0, runtime=True)
    y_min: float = _f(
        0.0, "top of the height band below the camera (camera y, down), metres", -10.0, 10.0, runtime=True
    )
    y_max: float = _f(
        1.0, "bottom of the height band below the camera (camera y, down), metres", -10.0, 10.0, runtime=True
    )
    resolution: float = _f(0.2, "cell size across and forward, metres", 0.01, 5.0, runtime=True)
    coarsest_resolution: float = _f(
        0.0,
        "above resolution: the cell size grows towards this (metres, in "
        "quarter octaves) while frames take longer than latency_budget and "
        "returns to resolution when they are fast again; 0 (or not above resolution): fixed",
        0.0,
        5.0,
        runtime=True,
    )
    height_levels: int = _f(5, "number of height levels in [y_min, y_max]", 1, 256, runtime=True)
    occupied_density: float = _f(
        0.5, "density (1/m) above which a voxel counts as occupied (paper: sigma > 0.5)", 0.0, 1000.0, runtime=True
    )

    def cells_across_forward(self) -> tuple[int, int]:
        """Whole cells covering the extent across (x) and forward (z); the far edges are rounded to cells."""
        return (
            max(1, round((self.x_max - self.x_min) / self.resolution)),
            max(1, round((self.z_max - self.z_min) / self.resolution)),
        )


# a grid beyond this many voxels would take seconds per frame and gigabytes: refused, not attempted
MAX_GRID_VOXELS = 1 << 23


@dataclass
class RenderConfig:
    """Volume rendering of the expected ray-termination depth."""

    samples: int = _f(64, "samples per ray, spaced linearly in inverse depth", 2, 512)
    depth_scale: float = _f(0.25, "depth image size relative to the network input", 0.05, 1.0, runtime=True)
    jitter: str = _f(
        "none",
        "sample placement: none (deterministic mid-points) or seeded "
        "(stratified jitter from model.seed, as the official evaluation)",
        choices=("none", "seeded"),
    )
    fine: bool = _f(
        False,
        "coarse-to-fine depth on the fast path without jitter: every 4th sample first, the "
        "others only where light stops (about half the density evaluations; tested: 99 % of pixels "
        "within 1 % of the full render); false: all samples",
        runtime=True,
    )


@dataclass
class TopicsConfig:
    """Topic names; all remappable at launch as well."""

    images: list[str] = _f(
        ["/camera/image_raw"],
        "input image topic of each camera, the first one the camera "
        "the outputs are made for; a topic ending in /compressed is read as "
        "sensor_msgs/CompressedImage (jpeg, png), any other as sensor_msgs/Image",
    )
    camera_infos: list[str] = _f(
        ["/camera/camera_info"], "sensor_msgs/CameraInfo topic of each camera, in the order of topics.images"
    )
    occupancy: str = _f("/kdbts/occupancy", "output nav_msgs/OccupancyGrid")
    points: str = _f("/kdbts/points", "output sensor_msgs/PointCloud2")
    depth: str = _f("/kdbts/depth", "output sensor_msgs/Image 32FC1 metres")
    depth_info: str = _f("/kdbts/depth/camera_info", "output CameraInfo matching the depth image")
    density_grid: str = _f("/kdbts/density_grid", "output kdbts_ros/DensityGrid")
    latency: str = _f("/kdbts/latency", "output std_msgs/Float64: seconds from the image stamp to the publish")
    map: str = _f(
        "/kdbts/map",
        "output nav_msgs/OccupancyGrid of the fused 2-D map (map.enabled), transient local "
        "so a late planner or RViz gets the last one",
    )
    map_points: str = _f(
        "/kdbts/map_points", "output sensor_msgs/PointCloud2 of the fused map's occupied voxels (map.enabled)"
    )


@dataclass
class PublishConfig:
    """Output toggles; an output nobody subscribes to is not computed either way."""

    occupancy: bool = _f(True, "publish the bird's-eye OccupancyGrid", runtime=True)
    points: bool = _f(True, "publish the occupied-voxel PointCloud2", runtime=True)
    depth: bool = _f(True, "publish the depth image and its camera_info", runtime=True)
    density_grid: bool = _f(True, "publish the full 3D DensityGrid", runtime=True)
    latency: bool = _f(True, "publish the latency of each processed frame", runtime=True)
    reliable: bool = _f(True, "publish outputs reliable (false: best effort)")


@dataclass
class KeyframeConfig:
    """When a rig frame enters the sliding window (the newest frame is always queried)."""

    distance: float = _f(0.3, "metres the reference camera moved since the last keyframe", 0.0, 100.0, runtime=True)
    angle: float = _f(5.0, "degrees the reference camera turned since the last keyframe", 0.0, 180.0, runtime=True)
    max_age: float = _f(
        1.0, "seconds after which a frame becomes a keyframe anyway (a standing vehicle)", 0.0, 3600.0, runtime=True
    )


@dataclass
class MapConfig:
    """The fused world map: densities of every processed frame in a gravity-aligned rolling voxel window.

    The fixed frame's z axis must point up (REP 103 odom/map): the window's layers and the 2-D
    projection are horizontal in it. Occupancy is kept as clamped log-odds, as octomap does.

    Time jumps, one rule (``time_jump_rule``): when image stamps go back (a bag looped, sim time
    restarted) or forward by more than ``max_time_gap``, reset clears the map before the next frame
    is fused, keep fuses into the map as it is. Frames without a usable pose are never fused
    (counted as the fault ``map_skipped_<reason>``).
    """

    enabled: bool = _f(False, "fuse each processed frame's densities into the world map and publish it", runtime=True)
    resolution: float = _f(0.2, "voxel edge of the world map, metres", 0.05, 5.0)
    extent_xy: float = _f(
        80.0,
        "side of the square window kept around the vehicle, metres (rolling: cells left "
        "behind are forgotten, so memory is bounded on an endless drive)",
        1.0,
        2000.0,
    )
    extent_z: float = _f(
        8.0, "height of the window, metres, centred on the camera (rolling like extent_xy)", 0.2, 200.0
    )
    recentre_margin: float = _f(
        0.25, "the window re-centres on the camera once it is this share of the extent away from the centre", 0.0, 0.5
    )
    prob_hit: float = _f(
        0.7, "occupancy probability of one occupied observation (octomap: 0.7)", 0.5, 0.999, runtime=True
    )
    prob_miss: float = _f(0.4, "occupancy probability of one free observation (octomap: 0.4)", 0.001, 0.5, runtime=True)
    clamp_min: float = _f(
        0.12,
        "lower probability clamp, so a free cell can turn occupied again (octomap: 0.1192)",
        0.001,
        0.5,
        runtime=True,
    )
    clamp_max: float = _f(
        0.97, "upper probability clamp, so an occupied cell can clear again (octomap: 0.971)", 0.5, 0.999, runtime=True
    )
    decay_per_s: float = _f(
        0.05,
        "log-odds per second every cell moves back towards unknown (0: never), so what "
        "is no longer observed (a car that drove off out of view) fades",
        0.0,
        100.0,
        runtime=True,
    )
    max_range: float = _f(
        40.0,
        "depth fusion: rays longer than this free space up to it and mark no hit, metres",
        1.0,
        1000.0,
        runtime=True,
    )
    min_z: float = _f(
        -1.3,
        "2-D map: bottom of the height band projected, metres relative to the camera "
        "(KITTI camera 1.65 m above the road: -1.3 leaves the road out)",
        -100.0,
        100.0,
        runtime=True,
    )
    max_z: float = _f(
        0.5, "2-D map: top of the height band projected, metres relative to the camera", -100.0, 100.0, runtime=True
    )
    publish_rate: float = _f(
        1.0, "Hz of the map OccupancyGrid and occupied-voxel PointCloud2 (0: never)", 0.0, 100.0, runtime=True
    )
    time_jump_rule: str = _f(
        "reset",
        "a stamp earlier than the last one (a bag loop) or later by more than "
        "max_time_gap: reset clears the map first; keep fuses into it",
        choices=("reset", "keep"),
        runtime=True,
    )
    max_time_gap: float = _f(
        5.0, "seconds between frames beyond which time counts as having jumped", 0.0, 1e6, runtime=True
    )
    save_path: str = _f(
        "kdbts_map",
        "file stem the node's ~/save_map service writes (<stem>.pcd or .ply, "
        "<stem>.pgm and <stem>.yaml; relative to the node's working directory)",
        runtime=True,
    )
    save_format: str = _f("pcd", "format of the saved occupied-voxel cloud", choices=("pcd", "ply"), runtime=True)

    def window_cells(self) -> tuple[int, int, int]:
        """Window shape (z, y, x) in voxels."""
        n_xy = max(1, round(self.extent_xy / self.resolution))
        return max(1, round(self.extent_z / self.resolution)), n_xy, n_xy


# a world-map window beyond this many voxels (float32 each) is refused: 2^25 voxels = 128 MiB
MAX_MAP_VOXELS = 1 << 25


@dataclass
class PipelineConfig:
    """Everything the node, replay and demo share."""

    fixed_frame: str = _f("odom", "frame the camera poses are looked up in (TF)")
    mode: str = _f(
        "sv",
        "density head: sv (single view), mv (multi-view over the window), "
        "auto (mv when another posed frame of the rig or the window sees the grid, else sv)",
        choices=("sv", "mv", "auto"),
        runtime=True,
    )
    window_size: int = _f(4, "keyframe images kept in the sliding window, over all cameras", 1, 64, runtime=True)
    sync_tolerance: float = _f(
        0.03, "seconds: images of different cameras at most this far apart form one rig frame", 0.0, 1.0, runtime=True
    )
    tf_timeout: float = _f(
        0.5,
        "seconds to wait for TF, camera_info and the other cameras' images at an "
        "image's stamp before dropping it (or going on without them)",
        0.0,
        60.0,
        runtime=True,
    )
    tf_cache: float = _f(10.0, "seconds of TF history kept", 1.0, 3600.0)
    tf_extrapolation: float = _f(
        0.0,
        "seconds a pose lookup may reach past the newest or before the oldest "
        "transform, holding the end value (tf2 itself never extrapolates)",
        0.0,
        10.0,
    )
    tf_builtin: bool = _f(False, "use the built-in TF buffer even when tf2_ros is installed")
    latency_budget: float = _f(
        0.5,
        "seconds; latency above it is a diagnostic warning, and frame time "
        "above it coarsens the grid when grid.coarsest_resolution is set",
        0.0,
        60.0,
        runtime=True,
    )
    input_reliable: bool = _f(False, "subscribe to inputs reliable (default best effort)")
    autostart: bool = _f(
        True, "node: configure and activate the lifecycle node at start-up (false: wait for a lifecycle manager)"
    )
    model: ModelConfig = field(default_factory=ModelConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    keyframe: KeyframeConfig = field(default_factory=KeyframeConfig)
    map: MapConfig = field(default_factory=MapConfig)

    def check(self) -> None:
        """Cross-field checks that single ranges cannot express; raises ValueError."""
        g = self.grid
        if not (g.x_min < g.x_max and g.z_min < g.z_max and g.y_min < g.y_max):
            raise ValueError("grid: each min must be below its max")
        nx, nz = g.cells_across_forward()
        if nx * nz * g.height_levels > MAX_GRID_VOXELS:
            raise ValueError(
                f"grid: {nx} x {nz} x {g.height_levels} = {nx * nz * g.height_levels} voxels is more "
                f"than {MAX_GRID_VOXELS}; coarsen grid.resolution or shrink the extent"
            )
        mp = self.map
        nz, ny, nx = mp.window_cells()
        if nz * ny * nx > MAX_MAP_VOXELS:
            raise ValueError(
                f"map: {nx} x {ny} x {nz} = {nx * ny * nz} voxels is more than {MAX_MAP_VOXELS}; "
                "coarsen map.resolution or shrink map.extent_xy / extent_z"
            )
        if not (mp.clamp_min < mp.prob_miss < 0.5 < mp.prob_hit < mp.clamp_max):
            raise ValueError("map: need clamp_min < prob_miss < 0.5 < prob_hit < clamp_max")
        if mp.min_z >= mp.max_z:
            raise ValueError("map.min_z must be below map.max_z")
        problem = self.model.backend_problem()
        if problem:
            raise ValueError(problem)
        if self.model.z_near >= self.model.z_far:
            raise ValueError("model.z_near must be below model.z_far")
        if any(0 < size < 32 for size in (self.model.image_height, self.model.image_width)):
            raise ValueError("model.image_height and image_width must be 0 (checkpoint's) or at least 32")
        t = self.topics
        if not t.images or len(t.images) != len(t.camera_infos):
            raise ValueError(
                f"topics.images ({len(t.images)}) and topics.camera_infos ({len(t.camera_infos)}) "
                "must name the same number of cameras, at least one"
            )
        if len(set(t.images + t.camera_infos)) != 2 * len(t.images):
            raise ValueError("topics.images and topics.camera_infos must all differ")


@dataclass(frozen=True)
class ParamSpec:
    """One flattened setting: dotted name, default, type and documentation."""

    name: str
    default: Any
    type: type
    description: str
    range: tuple[float, float] | None
    choices: tuple[str, ...] | None
    runtime: bool


def iter_params(cfg: Any, prefix: str = "") -> Iterator[ParamSpec]:
    """Flatten a config dataclass into dotted parameter specs (current values as defaults)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield from iter_params(value, f"{prefix}{f.name}.")
            continue
        m = f.metadata
        yield ParamSpec(
            f"{prefix}{f.name}", value, type(value), m["description"], m["range"], m["choices"], m["runtime"]
        )


def validate(spec: ParamSpec, value: Any) -> str | None:
    """Reason why ``value`` is not acceptable for ``spec``, or None if it is."""
    if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if spec.type is list:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            return f"{spec.name}: expected a list of non-empty strings, got {value!r}"
        return None
    if not isinstance(value, spec.type) or (spec.type is int and isinstance(value, bool)):
        return f"{spec.name}: expected {spec.type.__name__}, got {type(value).__name__}"
    if spec.range is not None and not spec.range[0] <= cast(float, value) <= spec.range[1]:
        return f"{spec.name}: {value} outside [{spec.range[0]}, {spec.range[1]}]"
    if spec.choices is not None and value not in spec.choices:
        return f"{spec.name}: {value!r} not one of {', '.join(spec.choices)}"
    return None


def set_param(cfg: Any, name: str, value: Any, check: bool = True) -> None:
    """Set a dotted parameter on a config tree after validating it; raises ValueError.

    With ``check`` the cross-field checks run too and a failing change is rolled
    back; loading a whole file sets every value first and checks once.
    """
    specs = {s.name: s for s in iter_params(cfg)}
    if name not in specs:
        raise ValueError(f"unknown parameter {name!r}")
    reason = validate(specs[name], value)
    if reason:
        raise ValueError(reason)
    *path, leaf = name.split(".")
    target = cfg
    for part in path:
        target = getattr(target, part)
    old = getattr(target, leaf)
    setattr(
        target, leaf, float(value) if specs[name].type is float else list(value) if specs[name].type is list else value
    )
    if not check:
        return
    try:
        check_consistency(cfg)
    except ValueError:
        setattr(target, leaf, old)
        raise


def set_params(cfg: Any, changes: list[tuple[str, Any]]) -> None:
    """Set several dotted parameters together or none of them (an atomic parameter set); raises ValueError."""
    trial = copy.deepcopy(cfg)  # validated on a copy: a refused change must not leave the ones before it applied
    for name, value in changes:
        set_param(trial, name, value)
    for name, value in changes:  # the same sequence, now known to pass
        set_param(cfg, name, value)


def check_consistency(cfg: Any) -> None:
    """Run a config tree's cross-field ``check()`` if it has one; raises ValueError."""
    check = getattr(cfg, "check", None)
    if check is not None:
        check()


# settings nest at most section.leaf deep; a deeper tree is no parameter file (and YAML aliases
# could make a deep one expand into millions of keys)
_MAX_DEPTH = 4


def _flatten(tree: dict, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    if depth > _MAX_DEPTH:
        raise ValueError(f"settings nested deeper than {_MAX_DEPTH} levels at {prefix.rstrip('.')!r}")
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}.", depth + 1))
        else:
            out[f"{prefix}{key}"] = value
    return out


def to_yaml(cfg: Any, node_name: str = "kdbts_node") -> str:
    """The config as a commented ROS 2 parameter file (what ``config/default.yaml`` holds)."""
    lines = [f"{node_name}:", "  ros__parameters:"]
    opened: list[str] = []
    for spec in iter_params(cfg):
        *groups, leaf = spec.name.split(".")
        common = 0
        while common < min(len(groups), len(opened)) and groups[common] == opened[common]:
            common += 1
        opened = opened[:common]
        for g in groups[common:]:
            lines.append(f"{'  ' * (len(opened) + 2)}{g}:")
            opened.append(g)
        indent = "  " * (len(groups) + 2)
        notes = [spec.description]
        if spec.range is not None:
            notes.append(f"range [{spec.range[0]:g}, {spec.range[1]:g}]")
        if spec.choices:
            notes.append("one of " + "|".join(spec.choices))
        notes.append("runtime" if spec.runtime else "start-up only")
        value = yaml.safe_dump(spec.default, default_flow_style=True).strip().removesuffix("...").strip()
        lines.append(f"{indent}{leaf}: {value}  # {'; '.join(notes)}")
    return "\n".join(lines) + "\n"


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None, cls: type = PipelineConfig
) -> Any:
    """Read a YAML file (ROS 2 parameter layout or plain nested mapping) into a checked ``cls`` config."""
    cfg = cls()
    values = _read_settings(Path(path)) if path is not None else {}
    overrides = overrides or {}
    values.update(overrides)
    for name, value in values.items():
        try:
            set_param(cfg, name, value, check=False)
        except ValueError as exc:
            raise ConfigError(f"{'command line' if name in overrides else path}: {exc}") from exc
    try:
        check_consistency(cfg)
    except ValueError as exc:
        raise ConfigError(f"{path if path is not None else 'command line'}: {exc}") from exc
    return cfg


def read_yaml_mapping(path: Path) -> dict:
    """The mapping a YAML file holds ({} if empty); ConfigError naming the file, OSError if it cannot be read."""
    try:
        tree = yaml.safe_load(path.read_text())
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file ({exc.reason} at byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from exc
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, found a {type(tree).__name__}")
    return tree


def _read_settings(path: Path) -> dict[str, Any]:
    """Dotted settings of a YAML file; raises ConfigError naming the file (OSError when it cannot be read)."""
    tree = read_yaml_mapping(path)
    # ROS 2 parameter files nest settings under "<node name>: ros__parameters:"
    for node_tree in list(tree.values()):
        if isinstance(node_tree, dict) and "ros__parameters" in node_tree:
            tree = node_tree["ros__parameters"] or {}
            if not isinstance(tree, dict):
                raise ConfigError(f"{path}: ros__parameters must be a mapping of settings")
            break
    try:
        return _flatten(tree)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
