"""What the node publishes: depth image, point cloud, occupancy and density grids, diagnostics."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

import numpy as np

from kdbts_ros.core.grids import GridSpec
from kdbts_ros.core.map_2d import Grid2D
from kdbts_ros.messages.cdr import DENSITY_GRID, IMAGE, header, msg_type, pose
from kdbts_ros.messages.sensor_data import camera_info
from kdbts_ros.messages.topics import OUTPUTS, TopicsConfig

if TYPE_CHECKING:  # no torch for message conversion
    from kdbts_ros.core.frames import Outputs


def float_image(image: np.ndarray, stamp: int, frame_id: str) -> Any:
    """sensor_msgs/Image 32FC1: a depth image in metres (REP 118), or its confidence."""
    h, w = image.shape
    data = np.ascontiguousarray(image, "<f4").view(np.uint8).reshape(-1)
    return msg_type(IMAGE)(
        header=header(stamp, frame_id), height=h, width=w, encoding="32FC1", is_bigendian=0, step=4 * w, data=data
    )


POINT_FIELDS = (("x", 0), ("y", 4), ("z", 8), ("density", 12), ("rgb", 16))


POINT_STEP = 20


_FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32


def point_cloud(points: np.ndarray, density: np.ndarray, rgb: np.ndarray, stamp: int, frame_id: str) -> Any:
    """Unorganised sensor_msgs/PointCloud2 with float32 x, y, z, density and packed rgb (PCL layout)."""
    n = len(points)
    rec = np.zeros(
        n,
        dtype=np.dtype(
            {
                "names": [f for f, _ in POINT_FIELDS],
                "formats": ["<f4"] * 3 + ["<f4", "<u4"],
                "offsets": [o for _, o in POINT_FIELDS],
                "itemsize": POINT_STEP,
            }
        ),
    )
    rec["x"], rec["y"], rec["z"] = points[:, 0], points[:, 1], points[:, 2]
    rec["density"] = density
    rgb = rgb.astype(np.uint32)
    # RViz and PCL read rgb as a float32 field whose bytes are 0x00RRGGBB
    rec["rgb"] = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    fields = [
        msg_type("sensor_msgs/msg/PointField")(name=f, offset=o, datatype=_FLOAT32, count=1) for f, o in POINT_FIELDS
    ]
    return msg_type("sensor_msgs/msg/PointCloud2")(
        header=header(stamp, frame_id),
        height=1,
        width=n,
        fields=fields,
        is_bigendian=False,
        point_step=POINT_STEP,
        row_step=POINT_STEP * n,
        data=rec.view(np.uint8).reshape(-1),
        is_dense=True,
    )


def occupancy_grid(out: Outputs) -> Any:
    """nav_msgs/OccupancyGrid of the frame: the planner's grid (axis-aligned in its frame) when there is one, else
    the camera-aligned slab's bird's-eye view placed at its lower corner."""
    assert out.occupancy is not None, "occupancy_grid of a frame without a bird's-eye view"
    if out.planner is not None:
        g = out.planner
        values, frame_id, origin, resolution = g.values, g.frame_id, g.origin, g.resolution
    else:
        spec: GridSpec = out.spec
        values, frame_id, resolution = out.occupancy, out.out_frame, spec.resolution
        origin = out.T_out_cam @ spec.T_cam_grid()
    info = msg_type("nav_msgs/msg/MapMetaData")(
        map_load_time=header(out.stamp_ns, "").stamp,
        resolution=float(resolution),
        width=values.shape[1],
        height=values.shape[0],
        origin=pose(origin),
    )
    return msg_type("nav_msgs/msg/OccupancyGrid")(
        header=header(out.stamp_ns, frame_id), info=info, data=values.astype(np.int8).reshape(-1)
    )


def density_grid(out: Outputs) -> Any:
    """kdbts_ros/DensityGrid of the full 3D grid."""
    spec = out.spec
    return msg_type(DENSITY_GRID)(
        header=header(out.stamp_ns, out.out_frame),
        origin=pose(out.T_out_cam @ spec.T_cam_grid()),
        resolution=float(spec.resolution),
        resolution_z=float(spec.resolution_z),
        size_x=spec.size_x,
        size_y=spec.size_y,
        size_z=spec.size_z,
        # the message's convention: NaN marks a cell the camera does not see
        density=np.where(out.unseen, np.float32(np.nan), out.density).astype(np.float32).reshape(-1),
        head=out.head,
        num_views=out.num_views,
    )


def occupancy_grid_map(grid: Grid2D, stamp: int, frame_id: str, T_fixed_map: np.ndarray | None = None) -> Any:
    """nav_msgs/OccupancyGrid of the fused 2-D map (:func:`kdbts_ros.core.map_2d.occupancy_2d`) in the fixed frame.

    The origin is cell (0, 0)'s outer corner at the band's bottom, axes along the map's frame:
    nav2's map layout, row-major from the lowest y. ``T_fixed_map``: the map's gravity-aligned frame
    in the fixed frame (None: the same frame), carried by the origin's pose.
    """
    T = np.eye(4)
    T[:3, 3] = grid.origin
    if T_fixed_map is not None:
        T = T_fixed_map @ T
    h, w = grid.data.shape
    info = msg_type("nav_msgs/msg/MapMetaData")(
        map_load_time=header(stamp, "").stamp, resolution=float(grid.resolution), width=w, height=h, origin=pose(T)
    )
    return msg_type("nav_msgs/msg/OccupancyGrid")(
        header=header(stamp, frame_id), info=info, data=grid.data.astype(np.int8).reshape(-1)
    )


def map_points(points: np.ndarray, probability: np.ndarray, stamp: int, frame_id: str) -> Any:
    """PointCloud2 of the fused map's occupied voxel centres (:meth:`WorldMap.occupied_points`).

    The ``density`` field carries the occupancy probability; rgb shades by height (blue low, red high).
    """
    z = points[:, 2] if len(points) else np.zeros(0)
    t = (z - z.min()) / max(float(np.ptp(z)), 1e-6) if len(z) else z
    rgb = np.stack([255 * t, 64 * np.ones_like(t), 255 * (1 - t)], -1).astype(np.uint8)
    return point_cloud(points, probability, rgb, stamp, frame_id)


_LEVELS = {"OK": 0, "WARN": 1, "ERROR": 2, "STALE": 3}


def diagnostics(stamp: int, name: str, hardware_id: str, level: str, message: str, values: dict[str, object]) -> Any:
    """diagnostic_msgs/DiagnosticArray with one status."""
    kv = [msg_type("diagnostic_msgs/msg/KeyValue")(key=k, value=str(v)) for k, v in values.items()]
    status = msg_type("diagnostic_msgs/msg/DiagnosticStatus")(
        level=_LEVELS[level], name=name, message=message, hardware_id=hardware_id, values=kv
    )
    return msg_type("diagnostic_msgs/msg/DiagnosticArray")(header=header(stamp, ""), status=[status])


def _points(out: Outputs) -> Any:
    return point_cloud(out.points, out.point_density, out.point_rgb, out.stamp_ns, out.out_frame)


def _depth(out: Outputs) -> Any:
    assert out.depth is not None, "a depth message of a frame without a depth render"
    return float_image(out.depth, out.stamp_ns, out.camera_frame)


def _depth_confidence(out: Outputs) -> Any:
    assert out.depth_confidence is not None, "a depth render comes with its confidence"
    return float_image(out.depth_confidence, out.stamp_ns, out.camera_frame)


def depth_info(out: Outputs) -> Any:
    """sensor_msgs/CameraInfo of a frame's depth image."""
    assert out.depth is not None and out.depth_lens is not None, "a depth image comes with its camera"
    h, w = out.depth.shape
    lens = out.depth_lens
    return camera_info(lens.K, w, h, out.stamp_ns, out.camera_frame, lens.D, lens.model)


# the message of each output a frame makes (OUTPUTS of stage grid or depth)
FRAME_MESSAGES: dict[str, Callable[[Outputs], Any]] = {
    "occupancy": occupancy_grid,
    "density_grid": density_grid,
    "points": _points,
    "depth": _depth,
    "depth_info": depth_info,
    "depth_confidence": _depth_confidence,
}


def output_messages(
    out: Outputs, topics: TopicsConfig, wanted: Collection[str] | None = None
) -> list[tuple[str, str, Any]]:
    """(topic, msgtype, message) of the ``wanted`` outputs (None: every one) a processed frame produced."""
    made = {"grid": out.occupancy is not None, "depth": out.depth is not None}
    return [
        (o.topic(topics), o.msgtype, FRAME_MESSAGES[o.key](out))
        for o in OUTPUTS
        if made.get(o.stage, False) and (wanted is None or o.topic(topics) in wanted)
    ]
