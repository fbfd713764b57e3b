"""Camera-shape benchmark: the same real frames seen through cameras made from them, scored against each other.

Each frame of a recording (its rectified pinhole camera, the *full frame*) is turned into other
cameras: crops of other aspects and fields of view (the principal point stays where it is in
the scene, so a crop's K is the full K shifted) and re-projections through a distorting lens
(``plumb_bob``, ``equidistant``), made with the same :func:`~kdbts_ros.core.lens.resampler`
the runtime uses; their pixels the full frame does not see repeat its nearest edge, as the
runtime pads (black there would show the network a band no camera of the street shows). The runtime
(:class:`~kdbts_ros.runtime.runner.FrameRunner`) sees every camera through the network's
canonical camera, so all depths of a frame are pixel-aligned and compare directly:

- agreement with the full frame on the *shared* pixels (finite in both depths): the mean of
  ``|d - d_full| / d_full`` and the share of pixels within 3 %;
- Abs Rel and delta < 1.25 against the velodyne scan projected into the canonical depth camera,
  on the pixels the camera sees with image content (shared with the full frame, so the full
  frame's figures on the same pixels stand beside them), inside the Garg crop of the canonical
  depth image, 1e-3 < depth < 80 m.

Figures are per-frame means over the frames with a scan, as the KITTI protocol averages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from tqdm import tqdm

from kdbts_ros.core.frames import Frame
from kdbts_ros.core.lens import Lens, Resampler, resampler
from kdbts_ros.data.records import DatasetError, Recording, read_velodyne
from kdbts_ros.evaluation.metrics import depth_metrics
from kdbts_ros.evaluation.real_depth import GARG_CROP, crop_mask, velodyne_depth
from kdbts_ros.runtime.legends import depth_legend, legend_scale
from kdbts_ros.runtime.pictures import depth_png
from kdbts_ros.runtime.runner import FrameRunner

WITHIN = 0.03  # agreement: the share of shared pixels whose depths are this close (relative)
AGREEMENT_TARGET = 0.03  # mean relative difference to the full frame
ABS_REL_TARGET = 0.05  # Abs Rel within this much (relative, either way) of the full frame's on the same pixels
PLUMB_BOB_D = (-0.3, 0.1, 0.001, -0.001, 0.0)
FISHEYE_D = (0.02, -0.005, 0.0, 0.0)
FISHEYE_FOCAL = 0.45  # the fisheye's focal length relative to the full frame's
FISHEYE_FOV_DEG = (146.0, 74.0)  # its horizontal and vertical field of view


@dataclass(frozen=True, eq=False)
class MadeCamera:
    """A camera made from the full frame: a crop of it (``origin``) or a re-projection through its lens (``maps``)."""

    name: str
    lens: Lens
    origin: tuple[int, int] | None = None  # crop: (column, row) of its pixel (0, 0) in the full frame
    maps: Resampler | None = None  # re-projection: the full frame seen through ``lens``

    def image(self, full: np.ndarray) -> np.ndarray:
        """This camera's view of a full-frame image; pixels the full frame does not see repeat its nearest edge."""
        if self.maps is None:
            x0, y0 = self.origin or (0, 0)
            return full[y0 : y0 + self.lens.height, x0 : x0 + self.lens.width].copy()
        return self.maps(full)


def reprojection(name: str, full: Lens, lens: Lens) -> MadeCamera:
    """The full frame seen through another lens of the same optical centre and axes."""
    return MadeCamera(name, lens, maps=resampler(full, lens))


def crop(name: str, full: Lens, width: int, height: int) -> MadeCamera:
    """A width x height window of the full frame centred on its principal point (as far as the frame allows)."""
    if width > full.width or height > full.height:
        raise ValueError(f"{name}: a {width}x{height} crop does not fit a {full.width}x{full.height} frame")
    x0 = int(np.clip(round(full.K[0, 2] - width / 2), 0, full.width - width))
    y0 = int(np.clip(round(full.K[1, 2] - height / 2), 0, full.height - height))
    K = full.K.copy()
    K[0, 2] -= x0
    K[1, 2] -= y0
    return MadeCamera(name, Lens.pinhole(K, width, height), (x0, y0))


def plumb_bob(full: Lens, D: tuple[float, ...] = PLUMB_BOB_D) -> MadeCamera:
    """The full frame's size and principal point behind a radial-tangential lens.

    Its focal length is chosen so that the principal row's nearer edge sees the full frame's
    edge; a barrel lens then reaches beyond the full frame in the corners (its edge repeated there).
    """
    left, right = full.K[0, 2] + 0.5, full.width - 0.5 - full.K[0, 2]  # pixels from the principal point
    x_edge = (-left if left < right else right) / full.K[0, 0]
    probe = Lens(full.width, full.height, full.K, np.asarray(D), "plumb_bob")
    u_edge = probe.project(np.array([[x_edge, 0.0, 1.0]]))[0][0, 0]
    scale = x_edge * full.K[0, 0] / (u_edge - full.K[0, 2])  # undistorted over distorted x
    K = full.K.copy()
    K[0, 0] *= scale
    K[1, 1] *= scale
    return reprojection("plumb_bob", full, Lens(full.width, full.height, K, np.asarray(D), "plumb_bob"))


def fisheye(full: Lens, D: tuple[float, ...] = FISHEYE_D) -> MadeCamera:
    """An equidistant lens of :data:`FISHEYE_FOCAL` times the full frame's focal length, seeing
    :data:`FISHEYE_FOV_DEG` (wider than the full frame: its outer pixels repeat the full frame's edge)."""
    f = FISHEYE_FOCAL * full.K[0, 0]
    width, height = (round(f * math.radians(fov)) for fov in FISHEYE_FOV_DEG)
    K = np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])
    return reprojection("equidistant", full, Lens(width, height, K, np.asarray(D), "equidistant"))


def made_cameras(full: Lens) -> list[MadeCamera]:
    """The benchmark's cameras: 4:3 and 16:9 crops, a 60-degree crop, a plumb_bob and an equidistant lens."""
    narrow = round(2 * full.K[0, 0] * math.tan(math.radians(30)))
    return [
        crop("crop 4:3", full, round(full.height * 4 / 3), full.height),
        crop("crop 16:9", full, round(full.height * 16 / 9), full.height),
        crop("crop 60 deg", full, narrow, full.height),
        plumb_bob(full),
        fisheye(full),
    ]


def agreement(depth: np.ndarray, reference: np.ndarray, within: float = WITHIN) -> tuple[float, float, int]:
    """Mean ``|depth - reference| / reference`` over pixels finite in both, the share of them within ``within``,
    and their number."""
    shared = np.isfinite(depth) & np.isfinite(reference)
    if not shared.any():
        return float("nan"), float("nan"), 0
    rel = np.abs(depth[shared].astype(np.float64) - reference[shared]) / reference[shared]
    return float(rel.mean()), float(np.mean(rel < within)), int(shared.sum())


@dataclass
class ShapeSettings:
    """Which frames and how they are scored."""

    stride: int = 1
    min_depth: float = 1e-3
    max_depth: float = 80.0
    garg_crop: bool = True


@dataclass
class Picture:
    """One camera's first frame: its input image (RGB), the canonical view (RGB) and its depth."""

    image: np.ndarray
    canonical: np.ndarray
    depth: np.ndarray


@dataclass
class ShapeScores:
    """Per-frame records of one camera, and its picture."""

    records: list[dict[str, float]] = field(default_factory=list)
    picture: Picture | None = None

    def means(self) -> dict[str, float]:
        keys = self.records[0].keys() if self.records else ()
        return {k: float(np.nanmean([r[k] for r in self.records])) for k in keys} | {"frames": len(self.records)}


class CameraShapeBenchmark:
    """The recording's frames with a scan, their velodyne ground truth, and the cameras made from camera ``cam``."""

    def __init__(self, rec: Recording, settings: ShapeSettings | None = None, cam: int = 0):
        self.rec, self.cam = rec, cam
        self.settings = ShapeSettings() if settings is None else settings
        c = rec.rig.cameras[cam]
        if rec.rig.T_base_velo is None:
            raise DatasetError(f"{rec.name} has no velodyne calibration: no depth ground truth")
        self.frames = [i for i, f in enumerate(rec.frames) if f.velodyne is not None][:: self.settings.stride]
        if not self.frames:
            raise DatasetError(f"{rec.name} has no velodyne scans: no depth ground truth")
        self.full = Lens.pinhole(c.K, c.width, c.height)
        self.cameras = made_cameras(self.full)

    def truth(self, index: int, depth_K: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Velodyne depth of evaluated frame ``index`` in the canonical depth camera; NaN outside the scored region."""
        s, f = self.settings, self.rec.frames[self.frames[index]]
        assert f.velodyne is not None  # self.frames are the frames with a scan
        h, w = shape
        gt = velodyne_depth(read_velodyne(f.velodyne), f.T_cam_velo(self.cam), depth_K, w, h)
        region = crop_mask(h, w, GARG_CROP if s.garg_crop else None)
        return np.where(region & (gt > s.min_depth) & (gt < s.max_depth), gt, np.nan).astype(np.float32)

    def run(self, runner: FrameRunner, progress: bool = True, label: str = "") -> dict[str, ShapeScores]:
        """Scores of the full frame and of each made camera, the runner's network seeing every image."""
        scores = {"full frame": ShapeScores(), **{c.name: ShapeScores() for c in self.cameras}}
        for k in tqdm(range(len(self.frames)), disable=not progress, desc=label or "camera shapes", leave=False):
            f = self.rec.frames[self.frames[k]]
            full_image = f.image(self.cam, colour=True)
            full, depth_K = self._depth(runner, full_image, self.full, f.stamp_ns)
            gt = self.truth(k, depth_K, full.shape)
            scores["full frame"].records.append(_scored(full, gt))
            if k == 0:
                scores["full frame"].picture = _picture(runner, full_image, self.full, full)
            for cam in self.cameras:
                image = cam.image(full_image)
                d, _ = self._depth(runner, image, cam.lens, f.stamp_ns)
                mean, share, n = agreement(d, full)
                shared = np.isfinite(d) & np.isfinite(full)
                ours, theirs = _scored(np.where(shared, d, np.nan), gt), _scored(np.where(shared, full, np.nan), gt)
                scores[cam.name].records.append(
                    {
                        "agreement": mean,
                        "within_3pct": share,
                        "shared": n / full.size,
                        "abs_rel": ours["abs_rel"],
                        "a1": ours["a1"],
                        "full_abs_rel": theirs["abs_rel"],
                        "full_a1": theirs["a1"],
                    }
                )
                if k == 0:
                    scores[cam.name].picture = _picture(runner, image, cam.lens, d)
        return scores

    @staticmethod
    def _depth(runner: FrameRunner, image: np.ndarray, lens: Lens, stamp_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """The runtime's depth of one image (canonical depth camera; NaN where unseen) and its pixel intrinsics."""
        out = runner.process(Frame(image, lens.K, stamp_ns, "camera", None, camera=lens), want_grid=False)
        assert out.depth is not None and out.depth_lens is not None  # asked for with want_depth
        return out.depth, out.depth_lens.K


def _scored(depth: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Abs Rel and delta < 1.25 of a depth on the ground-truth pixels it has (NaN figures when none)."""
    both = np.isfinite(gt) & np.isfinite(depth)
    if not both.any():
        return {"abs_rel": float("nan"), "a1": float("nan")}
    m = depth_metrics(gt[both], depth[both])
    return {"abs_rel": m["abs_rel"], "a1": m["a1"]}


def _picture(runner: FrameRunner, image: np.ndarray, lens: Lens, depth: np.ndarray) -> Picture:
    return Picture(image, runner.stages.encoding.prepare(image, lens).resized, depth)


def summary(scores: dict[str, ShapeScores]) -> dict[str, dict[str, float]]:
    """Means over frames per camera, with whether each meets the targets (``relative_abs_rel``: Abs Rel over the
    full frame's on the same pixels, minus 1)."""
    out = {}
    for name, s in scores.items():
        m = s.means()
        if "agreement" in m:
            m["relative_abs_rel"] = m["abs_rel"] / m["full_abs_rel"] - 1
            m["meets_agreement"] = bool(m["agreement"] <= AGREEMENT_TARGET)
            m["meets_abs_rel"] = bool(abs(m["relative_abs_rel"]) <= ABS_REL_TARGET)
        out[name] = m
    return out


def markdown(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """One table: a row per network and camera."""
    lines = [
        "| network | camera | shared pixels | agreement (mean rel. diff.) | within 3 % | Abs Rel | Abs Rel, full "
        "frame, same pixels | change | δ<1.25 | δ<1.25, full frame |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for net, cams in results.items():
        for name, m in cams.items():
            if "agreement" not in m:
                lines.append(f"| {net} | {name} | | | | {m['abs_rel']:.3f} | | | {m['a1']:.3f} | |")
                continue
            mark = lambda ok: "" if ok else " ✗"  # noqa: E731
            lines.append(
                f"| {net} | {name} | {m['shared']:.0%} | {m['agreement']:.3f}{mark(m['meets_agreement'])} | "
                f"{m['within_3pct']:.0%} | {m['abs_rel']:.3f} | {m['full_abs_rel']:.3f} | "
                f"{m['relative_abs_rel']:+.1%}{mark(m['meets_abs_rel'])} | {m['a1']:.3f} | {m['full_a1']:.3f} |"
            )
    return "\n".join(lines) + "\n"


CAPTION = "depth (magma on inverse depth, near bright)"


def picture_png(picture: Picture, near: float, far: float, width: int = 400, title: str = "") -> np.ndarray:
    """BGR: the camera's input image over its canonical view over the depth, each under a caption bar."""

    def scaled(img: np.ndarray, interpolation: int) -> np.ndarray:
        return cv2.resize(img, (width, round(width * img.shape[0] / img.shape[1])), interpolation=interpolation)

    panels = [
        (
            f"{title}: input" if title else "input",
            scaled(cv2.cvtColor(picture.image, cv2.COLOR_RGB2BGR), cv2.INTER_AREA),
        ),
        (
            "the network's view (canonical camera)",
            scaled(cv2.cvtColor(picture.canonical, cv2.COLOR_RGB2BGR), cv2.INTER_LINEAR),
        ),
        (CAPTION, scaled(depth_png(picture.depth, near, far), cv2.INTER_NEAREST)),
    ]
    rows = [row for text, img in panels for row in (_caption_bar(text, width), img)]
    return np.vstack([*rows, depth_legend(near, far)(width, legend_scale(width))])


def _caption_bar(text: str, width: int) -> np.ndarray:
    """A black strip with white text."""
    bar = np.zeros((20, width, 3), np.uint8)
    cv2.putText(bar, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return bar
