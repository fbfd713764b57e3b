"""The bags of the ``kitti2bag`` tool (github.com/tomas789/kitti2bag): its names, and recognising its layouts.

kitti2bag writes ROS 1 bags in three layouts (read from its source, ``kitti2bag/kitti2bag.py``):

* ``raw_synced`` (a synced+rectified KITTI raw drive): ``/tf`` ``world`` -> ``base_link`` (the OXTS
  pose of the IMU); ``/tf_static`` at every frame: ``base_link`` -> ``imu_link`` (a fixed lever arm),
  ``imu_link`` -> ``velo_link`` and -> each camera's rectified frame ``camera_{gray,color}_{left,right}``;
  ``/kitti/<camera>/image_raw`` (mono8 grey, bgr8 colour) and ``/kitti/<camera>/camera_info`` holding
  the calibration file's *unrectified* ``K_0k``, ``D_0k``, ``R_rect_0k`` beside the rectified ``P_rect_0k``
  (the images themselves are rectified); ``/kitti/velo/pointcloud``; OXTS on ``/kitti/oxts/...``.
* ``odom_gray`` / ``odom_color`` (a KITTI odometry sequence, cameras 0 + 1 or 2 + 3): ``/tf`` ``world``
  -> ``camera_left`` from ``poses/NN.txt`` (camera 0's pose; ``world`` is camera 0 at the first frame,
  an optical frame: y down), no ``/tf_static``; ``/kitti/<camera>/image_rect`` whose ``frame_id``
  is ``camera_gray_left`` (... ``camera_color_right``), names the TF tree never has; camera_info with
  only ``P`` (calib.txt's ``Pk``), width and height set (K, R zero, D empty).

:func:`detect` recognises a layout from a bag's topics and TF frames and says how to replay it.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdbts_ros.messages import cdr

FIXED_FRAME = "world"
BASE_FRAME = "base_link"
IMU_FRAME = "imu_link"
VELO_FRAME = "velo_link"
ODOM_CAMERA_FRAME = "camera_left"  # the odometry layouts' one posed frame: camera 0
VELO_TOPIC = "/kitti/velo/pointcloud"
# KITTI's sensor setup: the OXTS IMU and the cameras above the road, metres (the velodyne scans agree)
IMU_HEIGHT, CAMERA_HEIGHT = 0.93, 1.65
# base_link -> imu_link in the raw layout: kitti2bag's fixed lever arm (half the 2.71 m wheelbase, ...)
IMU_LEVER_ARM = (-2.71 / 2.0 - 0.05, 0.32, IMU_HEIGHT)
# kitti2bag's camera number -> frame id; each camera's topics are /kitti/<frame>/...
CAMERAS = ("camera_gray_left", "camera_gray_right", "camera_color_left", "camera_color_right")
RAW_IMAGE, ODOM_IMAGE = "image_raw", "image_rect"
LAYOUTS = ("raw_synced", "odom_gray", "odom_color")


def image_topic(frame: str, layout: str) -> str:
    """``/kitti/<frame>/image_raw`` (raw_synced) or ``/image_rect`` (odometry)."""
    return f"/kitti/{frame}/{RAW_IMAGE if layout == 'raw_synced' else ODOM_IMAGE}"


def info_topic(frame: str) -> str:
    """``/kitti/<frame>/camera_info``."""
    return f"/kitti/{frame}/camera_info"


def layout_cameras(layout: str) -> tuple[int, int]:
    """kitti2bag's camera numbers of a layout's stereo pair: grey 0 + 1, colour 2 + 3 (raw_synced writes all four)."""
    return (2, 3) if layout == "odom_color" else (0, 1)


@dataclass(frozen=True)
class Kitti2bagBag:
    """A recognised kitti2bag layout and the settings it replays with."""

    layout: str
    image: str  # the output camera's image topic
    info: str
    fixed_frame: str
    # the TF frame its images are placed in, when their frame_id is not in the TF tree; "" when it is
    camera_frame: str
    image_frame: str  # the frame_id its images carry
    # the planner grid's frame and the road's z in it: raw_synced's base_link lies on the road (kitti2bag puts
    # imu_link 0.93 m above it); the odometry layouts have no vehicle frame ("": the grid falls back to
    # world turned z up, camera 0 at the first frame, 1.65 m above the road by KITTI's sensor setup)
    planner_frame: str
    ground_z: float

    def describe(self, image: str, camera_frame: str, fixed_frame: str, planner: str = "") -> str:
        """One line: the layout, and the camera, camera frame, fixed frame (and planner grid) it replays with."""
        parts = [f"camera {image}"]
        if camera_frame:
            parts.append(
                f"images' frame {self.image_frame} taken as the TF's {camera_frame}"
                + (" (camera 0, 6 cm from camera 2)" if self.layout == "odom_color" else "")
            )
        if self.layout == "raw_synced":
            parts.append("images rectified (camera_info's P; its unrectified K and D are not applied)")
        parts.append(f"fixed frame {fixed_frame}")
        if planner:
            parts.append(planner)
        return f"kitti2bag {self.layout} bag: {'; '.join(parts)} (choose with --images, --camera-frame, --fixed-frame)"


def detect(topics: dict[str, str], tf_frames: set[str]) -> Kitti2bagBag | None:
    """The kitti2bag layout of a bag with these topics and TF frames, or None.

    The left camera makes the outputs: the colour one where the bag has both (the network
    reads colour). ``raw_synced`` needs the TF tree's ``imu_link`` (which the project's own raw
    layout has not), the odometry layouts their ``image_rect`` topics and ``camera_left``.
    """
    for layout, sides in (
        ("raw_synced", ("camera_color_left", "camera_gray_left")),
        ("odom_color", ("camera_color_left",)),
        ("odom_gray", ("camera_gray_left",)),
    ):
        for frame in sides:
            image, info = image_topic(frame, layout), info_topic(frame)
            if topics.get(image) != cdr.IMAGE or topics.get(info) != "sensor_msgs/msg/CameraInfo":
                continue
            if layout == "raw_synced" and IMU_FRAME in tf_frames:
                return Kitti2bagBag(layout, image, info, FIXED_FRAME, "", frame, BASE_FRAME, 0.0)
            if layout != "raw_synced" and ODOM_CAMERA_FRAME in tf_frames and frame not in tf_frames:
                return Kitti2bagBag(layout, image, info, FIXED_FRAME, ODOM_CAMERA_FRAME, frame, "", -CAMERA_HEIGHT)
    return None
