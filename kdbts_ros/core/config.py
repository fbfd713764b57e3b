"""The settings of the frame path: network, grid, rendering, keyframes, world map, TF and timing.

Each is a described field (:func:`kdbts_ros.core.settings.setting`), read by the parameter
engine of :mod:`kdbts_ros.core.settings`. What only the ROS side reads lives above:
topic names in :mod:`kdbts_ros.messages.topics` (with the runner's
:class:`kdbts_ros.runtime.config.RunnerConfig`), the node's own settings in
:mod:`kdbts_ros.ros.config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kdbts_ros.core.settings import setting

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
    return setting(default, description + note, lo, hi, choices)


@dataclass
class ModelConfig:
    """The density network and its input resolution."""

    backbone: str = shape_field("backbone", "resnet50", " of random weights (checkpoint: random)")
    image_height: int = setting(
        0,
        "network input height in pixels; 0: the checkpoint's training height (official and random weights: 192)",
        0,
        1024,
    )
    image_width: int = setting(
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
    checkpoint: str = setting(
        "",
        "project checkpoint (.safetensors), or the name of fetched official weights "
        "(kdbts weights list, e.g. kitti-360); empty: the embedded KDBTS network trained on "
        "the procedural benchmark; random: seeded random weights of backbone and widths",
    )
    seed: int = setting(0, "seed for random weights and seeded ray jitter", 0, 2**31 - 1)
    device: str = setting("auto", "torch device: auto, cpu, cuda, cuda:N")
    dtype: str = setting("float32", "compute dtype", choices=("float32", "float16", "bfloat16"))
    chunk_points: int = setting(
        262144, "points per network query chunk of the reference path (model.fast false)", 1024, 2**26, runtime=True
    )
    fast: bool = setting(
        True,
        "fast path: head first layers folded into per-frame maps, work shared along rays, "
        "only grid cells the camera sees decoded; false: the plain reference path (same outputs "
        "within fp32 rounding)",
        runtime=True,
    )
    query_memory_mb: int = setting(
        0,
        "working memory of one fast-path query chunk, MiB; 0: 64 on CPU (stays in cache), 4096 on CUDA",
        0,
        65536,
        runtime=True,
    )
    threads: int = setting(0, "CPU threads for torch and onnxruntime; 0: their default (one per core)", 0, 256)
    compile: bool = setting(
        True,
        "torch.compile the torch encoder for its fixed input size when its arithmetic is worth the build "
        "(model.compile_min_gflop): on CUDA with CUDA graphs (far fewer kernel launches), on a CPU with its "
        "weights frozen in (0.7-0.9x torch's encoder, docs/performance/full_depth.md). The build takes "
        "10-30 s at the first frame on a 2-core CPU; one that fails counts not_compiled and torch's encoder runs",
    )
    compile_min_gflop: float = setting(
        20.0,
        "the least encoder arithmetic per frame (GFLOP, counted on the first frame) that model.compile builds "
        "for: ResNet-50 at 640x192 is 56, the embedded network at 320x96 3.0 (a build it would never repay "
        "in a short run); 0: any",
        0.0,
        1e6,
    )
    backend: str = setting(
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

    x_min: float = setting(-9.0, "left edge across the camera (camera x), metres", -100.0, 100.0, runtime=True)
    x_max: float = setting(9.0, "right edge across the camera (camera x), metres", -100.0, 100.0, runtime=True)
    z_min: float = setting(3.0, "near edge along the optical axis (camera z), metres", 0.0, 200.0, runtime=True)
    z_max: float = setting(23.0, "far edge along the optical axis (camera z), metres", 0.0, 200.0, runtime=True)
    y_min: float = setting(
        0.0, "top of the height band below the camera (camera y, down), metres", -10.0, 10.0, runtime=True
    )
    y_max: float = setting(
        1.0, "bottom of the height band below the camera (camera y, down), metres", -10.0, 10.0, runtime=True
    )
    resolution: float = setting(0.2, "cell size across and forward, metres", 0.01, 5.0, runtime=True)
    coarsest_resolution: float = setting(
        0.0,
        "above resolution: the cell size grows towards this (metres, in "
        "quarter octaves) while frames take longer than latency_budget and "
        "returns to resolution when they are fast again; 0 (or not above resolution): fixed",
        0.0,
        5.0,
        runtime=True,
    )
    height_levels: int = setting(5, "number of height levels in [y_min, y_max]", 1, 256, runtime=True)
    occupied_density: float = setting(
        0.5, "density (1/m) above which a voxel counts as occupied (paper: sigma > 0.5)", 0.0, 1000.0, runtime=True
    )

    def cells_across_forward(self) -> tuple[int, int]:
        """Whole cells covering the extent across (x) and forward (z); the far edges are rounded to cells."""
        return (
            max(1, round((self.x_max - self.x_min) / self.resolution)),
            max(1, round((self.z_max - self.z_min) / self.resolution)),
        )


@dataclass
class PlannerGridConfig:
    """The per-frame OccupancyGrid for planners: axis-aligned in a planar frame (REP-103), band above its ground."""

    frame: str = setting(
        "base_link",
        "frame the per-frame occupancy grid is built and published in, axis-aligned (identity orientation; "
        "x forward, y left, z up): a base frame that moves with the robot; when TF has no such frame, the "
        "fixed frame (a square window centred on the camera); 'camera': the camera-aligned slab of the "
        "grid.* settings (the paper's bird's-eye view)",
    )
    x_min: float = setting(0.0, "back edge of the window in planner.frame (x, forward), metres", -200.0, 200.0)
    x_max: float = setting(24.0, "front edge of the window in planner.frame (x, forward), metres", -200.0, 200.0)
    y_min: float = setting(-10.0, "right edge of the window in planner.frame (y, left), metres", -200.0, 200.0)
    y_max: float = setting(10.0, "left edge of the window in planner.frame (y, left), metres", -200.0, 200.0)
    ground_z: float = setting(
        0.0,
        "height of the ground in planner.frame (z, metres): 0 for a frame on the ground (base_footprint, an "
        "odom at road level); minus the frame's height above the road otherwise; the band is measured from it",
        -50.0,
        50.0,
    )
    z_min: float = setting(0.2, "bottom of the obstacle band above the ground, metres", -10.0, 50.0)
    z_max: float = setting(1.8, "top of the obstacle band above the ground, metres", -10.0, 50.0)
    levels: int = setting(8, "heights sampled in the band per cell", 1, 64)
    resolution: float = setting(0.2, "cell size, metres", 0.01, 5.0)


# a grid beyond this many voxels would take seconds per frame and gigabytes: refused, not attempted
MAX_GRID_VOXELS = 1 << 23


@dataclass
class RenderConfig:
    """Volume rendering of the expected ray-termination depth."""

    samples: int = setting(64, "samples per ray, spaced linearly in inverse depth", 2, 512)
    depth_head: str = setting(
        "sv",
        "head the depth image is rendered with: sv, the single-view head on the frame alone (the more "
        "accurate on the real held-out drives, docs/real; on a CPU about 40x faster than MV over 4 views at "
        "full size), while the grid may use the multi-view one; frame: the head the frame's grid uses",
        choices=("sv", "frame"),
        runtime=True,
    )
    depth_scale: float = setting(
        1.0,
        "depth image size relative to the network input (1: its input size; the MV head on a CPU takes "
        "seconds at 1 (render.depth_head frame): docs/performance/depth_size.md)",
        0.05,
        1.0,
        runtime=True,
    )
    min_opacity: float = setting(
        0.9,
        "opacity (the share of a ray's light stopped between its first and last sample, model.z_near to "
        "about z_far) below which a depth pixel is NaN: the ray is not terminated within range (sky, the "
        "far end of a street); the opacity is published as depth/confidence; 0: never NaN",
        0.0,
        1.0,
        runtime=True,
    )
    depth_camera: str = setting(
        "canonical",
        "camera of the depth image: canonical (the network's own view at render.depth_scale of its input "
        "size) or input (resampled, nearest neighbour, to the input camera's size and lens; its camera_info "
        "is then the input's, distortion included)",
        choices=("canonical", "input"),
        runtime=True,
    )
    jitter: str = setting(
        "none",
        "sample placement: none (deterministic mid-points) or seeded "
        "(stratified jitter from model.seed, as the official evaluation)",
        choices=("none", "seeded"),
    )
    fused: bool = setting(
        True,
        "the SV depth (no jitter, render.fine false) in one loop nest built at the first depth image (on a CPU "
        "core/model/march.c with the system's C compiler, kept in ~/.cache/kdbts_ros; on CUDA torch.compile's "
        "Triton); false, or when it cannot be built (a fault, not_compiled): torch's operators, over 10x "
        "slower at full size on a CPU",
        runtime=True,
    )
    fine: bool = setting(
        False,
        "coarse-to-fine depth on the fast path without jitter: every 4th sample first, the "
        "others only where light stops (about half the density evaluations; tested: 99 % of pixels "
        "within 1 % of the full render); false: all samples",
        runtime=True,
    )


@dataclass
class KeyframeConfig:
    """When a rig frame enters the sliding window (the newest frame is always queried)."""

    distance: float = setting(
        0.3, "metres the reference camera moved since the last keyframe", 0.0, 100.0, runtime=True
    )
    angle: float = setting(5.0, "degrees the reference camera turned since the last keyframe", 0.0, 180.0, runtime=True)
    max_age: float = setting(
        1.0, "seconds after which a frame becomes a keyframe anyway (a standing vehicle)", 0.0, 3600.0, runtime=True
    )


@dataclass
class MapConfig:
    """The fused world map: densities of every processed frame in a gravity-aligned rolling voxel window.

    The map is built in a gravity-aligned frame (z up), the fixed frame turned by the rotation that
    takes its ``up_axis`` to +z: the window's layers and the 2-D projection are horizontal in it.
    A REP 103 fixed frame (odom/map: z up) is that frame itself; an optical-frame world (kitti2bag
    odometry's, y down) is turned. Occupancy is kept as clamped log-odds, as octomap does.

    Time jumps, one rule (``time_jump_rule``): when image stamps go back (a bag looped, sim time
    restarted) or forward by more than ``max_time_gap``, reset clears the map before the next frame
    is fused, keep fuses into the map as it is. Frames without a usable pose are never fused
    (counted as the fault ``map_skipped_<reason>``).
    """

    enabled: bool = setting(
        False, "fuse each processed frame's densities into the world map and publish it", runtime=True
    )
    up_axis: str = setting(
        "auto",
        "the fixed frame's axis that points up, against gravity; auto: the one nearest the first posed "
        "camera's up (-y of its optical frame). The map is built with it as z; the published map and "
        "points stay in the fixed frame (the grid's origin pose carries the rotation)",
        choices=("auto", "+x", "-x", "+y", "-y", "+z", "-z"),
    )
    resolution: float = setting(0.2, "voxel edge of the world map, metres", 0.05, 5.0)
    extent_xy: float = setting(
        80.0,
        "side of the square window kept around the vehicle, metres (rolling: cells left "
        "behind are forgotten, so memory is bounded on an endless drive)",
        1.0,
        2000.0,
    )
    extent_z: float = setting(
        8.0, "height of the window, metres, centred on the camera (rolling like extent_xy)", 0.2, 200.0
    )
    recentre_margin: float = setting(
        0.25, "the window re-centres on the camera once it is this share of the extent away from the centre", 0.0, 0.5
    )
    prob_hit: float = setting(
        0.7, "occupancy probability of one occupied observation (octomap: 0.7)", 0.5, 0.999, runtime=True
    )
    prob_miss: float = setting(
        0.4, "occupancy probability of one free observation (octomap: 0.4)", 0.001, 0.5, runtime=True
    )
    clamp_min: float = setting(
        0.12,
        "lower probability clamp, so a free cell can turn occupied again (octomap: 0.1192)",
        0.001,
        0.5,
        runtime=True,
    )
    clamp_max: float = setting(
        0.97, "upper probability clamp, so an occupied cell can clear again (octomap: 0.971)", 0.5, 0.999, runtime=True
    )
    decay_per_s: float = setting(
        0.05,
        "log-odds per second every cell moves back towards unknown (0: never), so what "
        "is no longer observed (a car that drove off out of view) fades",
        0.0,
        100.0,
        runtime=True,
    )
    max_range: float = setting(
        40.0,
        "depth fusion: rays longer than this free space up to it and mark no hit, metres",
        1.0,
        1000.0,
        runtime=True,
    )
    min_z: float = setting(
        0.2,
        "2-D map: bottom of the height band projected, metres above the ground (the planner grid's: "
        "planner.ground_z in planner.frame, under the latest frame), as planner.z_min",
        -100.0,
        100.0,
        runtime=True,
    )
    max_z: float = setting(
        1.8, "2-D map: top of the height band projected, metres above the ground", -100.0, 100.0, runtime=True
    )
    publish_rate: float = setting(
        1.0, "Hz of the map OccupancyGrid and occupied-voxel PointCloud2 (0: never)", 0.0, 100.0, runtime=True
    )
    time_jump_rule: str = setting(
        "reset",
        "a stamp earlier than the last one (a bag loop) or later by more than "
        "max_time_gap: reset clears the map first; keep fuses into it",
        choices=("reset", "keep"),
        runtime=True,
    )
    max_time_gap: float = setting(
        5.0, "seconds between frames beyond which time counts as having jumped", 0.0, 1e6, runtime=True
    )
    save_path: str = setting(
        "kdbts_map",
        "file stem the node's ~/save_map service writes (<stem>.pcd or .ply, "
        "<stem>.pgm and <stem>.yaml; relative to the node's working directory)",
        runtime=True,
    )
    save_format: str = setting("pcd", "format of the saved occupied-voxel cloud", choices=("pcd", "ply"), runtime=True)

    def window_cells(self) -> tuple[int, int, int]:
        """Window shape (z, y, x) in voxels."""
        n_xy = max(1, round(self.extent_xy / self.resolution))
        return max(1, round(self.extent_z / self.resolution)), n_xy, n_xy


# a world-map window beyond this many voxels (float32 each) is refused: 2^25 voxels = 128 MiB
MAX_MAP_VOXELS = 1 << 25


@dataclass
class PipelineConfig:
    """What the frame path reads: the pipeline, the runner's timing and TF, the world map."""

    fixed_frame: str = setting("odom", "frame the camera poses are looked up in (TF)")
    mode: str = setting(
        "sv",
        "density head: sv (single view), mv (multi-view over the window), "
        "auto (mv when another posed frame of the rig or the window sees the grid, else sv)",
        choices=("sv", "mv", "auto"),
        runtime=True,
    )
    window_size: int = setting(4, "keyframe images kept in the sliding window, over all cameras", 1, 64, runtime=True)
    sync_tolerance: float = setting(
        0.03, "seconds: images of different cameras at most this far apart form one rig frame", 0.0, 1.0, runtime=True
    )
    tf_timeout: float = setting(
        0.5,
        "seconds to wait for TF, camera_info and the other cameras' images at an "
        "image's stamp before dropping it (or going on without them)",
        0.0,
        60.0,
        runtime=True,
    )
    tf_cache: float = setting(10.0, "seconds of TF history kept", 1.0, 3600.0)
    tf_extrapolation: float = setting(
        0.0,
        "seconds a pose lookup may reach past the newest or before the oldest "
        "transform, holding the end value (tf2 itself never extrapolates)",
        0.0,
        10.0,
    )
    latency_budget: float = setting(
        0.5,
        "seconds; latency above it is a diagnostic warning, and frame time "
        "above it coarsens the grid when grid.coarsest_resolution is set",
        0.0,
        60.0,
        runtime=True,
    )
    model: ModelConfig = field(default_factory=ModelConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    planner: PlannerGridConfig = field(default_factory=PlannerGridConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
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
        pg = self.planner
        if not (pg.x_min < pg.x_max and pg.y_min < pg.y_max and pg.z_min < pg.z_max):
            raise ValueError("planner: each min must be below its max")
        cells = round((pg.x_max - pg.x_min) / pg.resolution) * round((pg.y_max - pg.y_min) / pg.resolution)
        if cells * pg.levels > MAX_GRID_VOXELS:
            raise ValueError(
                f"planner: {cells} cells x {pg.levels} levels is more than {MAX_GRID_VOXELS} points; "
                "coarsen planner.resolution or shrink the window"
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
