"""Frame in, outputs out: the one object the node, replay and demo drive."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace

import cv2
import numpy as np
import torch

from kdbts_ros.core.camera import normalise_intrinsics, project, ray_grid, ray_pixel_intrinsics
from kdbts_ros.core.config import ConfigError, PipelineConfig
from kdbts_ros.core.frames import Frame, Outputs
from kdbts_ros.core.grid_budget import GridBudget
from kdbts_ros.core.grids import GridSpec, bev_occupancy, occupied_voxels
from kdbts_ros.core.heads import Heads
from kdbts_ros.core.inference import ray_depth
from kdbts_ros.core.loading import OFFICIAL_INPUT_SIZE, build_model, pick_device
from kdbts_ros.core.model import folded
from kdbts_ros.core.model.network import DensityField, Views
from kdbts_ros.core.model.onnx_backend import OnnxBackend, cached_export
from kdbts_ros.core.window import FrameWindow, WindowEntry


class Pipeline:
    """Encodes each frame once, keeps the window, queries the field and builds output arrays."""

    def __init__(self, cfg: PipelineConfig, model: DensityField | None = None):
        self.cfg = cfg
        onnx_auto = cfg.model.backend == "onnxruntime" and cfg.model.device == "auto"
        self.device = torch.device("cpu") if onnx_auto else pick_device(cfg.model.device)  # onnxruntime: CPU
        if model is None:
            model, self.model_info = build_model(cfg)
        else:
            self.model_info = {"weights": "given"}
        self.model = model.to(self.device).eval()
        self.window = FrameWindow(cfg.window_size, cfg.keyframe)
        self.heads = Heads(cfg, self.model, self.window, self.device, self.grid_spec)
        problem = self.heads.mode_problem(cfg.mode)
        if problem:
            raise ConfigError(f"{self.model_info.get('weights')}: {problem}")
        if cfg.model.threads:
            torch.set_num_threads(cfg.model.threads)
        self.backend: OnnxBackend | None = None
        self.backend_info: dict = {"backend": cfg.model.backend}
        if cfg.model.backend == "onnxruntime":
            self._start_onnxruntime()
        self._compiled_encode = (
            torch.compile(
                self.model.encode, dynamic=False, mode="reduce-overhead" if self.device.type == "cuda" else None
            )
            if cfg.model.compile
            else None
        )
        self._intrinsics: tuple[tuple, np.ndarray, torch.Tensor] | None = None
        self._visible_cache: tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray] | None = None
        self.grid_budget = GridBudget()

    def _start_onnxruntime(self) -> None:
        """Export the network for onnxruntime (or reuse the cached export) and open its sessions.

        The encoder graph computes the folded maps of the heads the configured mode queries; a
        head the mode needs only after a runtime change is folded and queried with torch.
        """
        m = self.cfg.model
        if self.device.type != "cpu":
            raise ConfigError(
                f"model.backend onnxruntime runs on the CPU; model.device is {m.device!r} "
                "(use cpu or auto, or model.backend torch)"
            )
        problem = m.backend_problem()
        if problem:  # a configuration changed without check() (check() refuses it too)
            raise ConfigError(problem)
        if m.compile:
            raise ConfigError("model.compile compiles the torch encoder; with model.backend onnxruntime set it false")
        heads = self.heads.for_mode()
        folder, info = cached_export(
            self.model, self.input_size, heads, checkpoint=str(self.model_info.get("weights", ""))
        )
        self.backend = OnnxBackend(folder, m.threads)
        self.backend_info.update(info, heads=heads)

    def grid_spec(self) -> GridSpec:
        """The grid of the next frame: the configured one, with the cell size the latency budget allows."""
        g = self.cfg.grid
        size = self.grid_budget.current(g.resolution, g.coarsest_resolution)
        return GridSpec.from_config(g if size == g.resolution else replace(g, resolution=size))

    @property
    def input_size(self) -> tuple[int, int]:
        """Network input (height, width): configured, else the checkpoint's training size."""
        m, info = self.cfg.model, self.model_info
        return (
            m.image_height or int(info.get("image_height", OFFICIAL_INPUT_SIZE[0])),
            m.image_width or int(info.get("image_width", OFFICIAL_INPUT_SIZE[1])),
        )

    def query_memory_mb(self) -> int:
        """Working memory of one fast-path query chunk: configured, else 64 MiB on CPU (cache), 4 GiB on CUDA."""
        return self.cfg.model.query_memory_mb or (4096 if self.device.type == "cuda" else 64)

    def fast_chunk(self, head: str, num_views: int) -> int:
        """Points per fast-path query chunk that fit the working-memory budget."""
        return max(1024, self.query_memory_mb() * 2**20 // folded.bytes_per_point(self.model, head, num_views))

    def smaller_query_memory(self) -> list[tuple[str, int]]:
        """Parameter changes that halve the query chunks, proposed after the device ran out of memory.

        The pipeline only proposes: whoever drives it applies them as parameter changes, so
        that the configuration and the node's parameters keep showing the values in use.
        """
        return [
            ("model.query_memory_mb", max(16, self.query_memory_mb() // 2)),
            ("model.chunk_points", max(1024, self.cfg.model.chunk_points // 2)),
        ]

    def _sync(self) -> float:
        """Wall time after the device has finished its queued work (so stage timings are true on CUDA)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @contextlib.contextmanager
    def precision(self) -> Iterator[None]:
        """Inference mode at the configured dtype (autocast: weights stay fp32, matmuls and convs run in dtype)."""
        dtype = getattr(torch, self.cfg.model.dtype)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            yield

    def intrinsics(self, K: np.ndarray, width: int, height: int) -> tuple[np.ndarray, torch.Tensor]:
        """Normalised intrinsics as an array and a device tensor; the same objects while K and the size stay."""
        key = (np.asarray(K, np.float64).tobytes(), width, height)
        if self._intrinsics is None or self._intrinsics[0] != key:
            Kn = normalise_intrinsics(K, width, height)
            self._intrinsics = (key, Kn, torch.as_tensor(Kn, dtype=torch.float32, device=self.device))
        return self._intrinsics[1], self._intrinsics[2]

    def prepare(self, image: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """Network-size RGB, its [0, 1] tensor (1, 3, H, W) and normalised intrinsics of an image."""
        H, W = self.input_size
        resized = cv2.resize(image, (W, H), interpolation=cv2.INTER_LINEAR)
        # a plain upload: a pinned staging buffer measured 4 ms slower per frame on an H100 (kdbts bench)
        image01 = torch.from_numpy(resized).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        return resized, image01, self.intrinsics(K, image.shape[1], image.shape[0])[1]

    def render_depth_image(
        self,
        views: Views,
        head: str,
        Kn: torch.Tensor,
        planes: list[torch.Tensor] | None = None,
        scale: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Expected depth (h, w) at ``scale`` (default ``render.depth_scale``) of the network size, and its K.

        With the views' folded maps (``planes``) the fast path renders (coarse-to-fine with
        ``render.fine`` and no jitter); without, the reference path.
        """
        cfg, (H, W) = self.cfg, self.input_size
        scale = cfg.render.depth_scale if scale is None else scale
        h = max(1, round(H * scale))
        w = max(1, round(W * scale))
        dirs = ray_grid(Kn, h, w).reshape(-1, 3)
        gen = torch.Generator(device=self.device).manual_seed(cfg.model.seed) if cfg.render.jitter == "seeded" else None
        chunk = cfg.model.chunk_points if planes is None else self.fast_chunk(head, len(planes))
        depth = (
            ray_depth(
                self.model,
                views,
                head,
                dirs,
                cfg.render.samples,
                cfg.model.z_near,
                cfg.model.z_far,
                chunk,
                gen,
                planes,
                fine=cfg.render.fine,
            )
            .float()
            .cpu()
            .numpy()
            .reshape(h, w)
        )
        return depth, ray_pixel_intrinsics(Kn.cpu().numpy(), w, h)

    def _visible(self, centres: np.ndarray, Kn: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """Indices of the grid cells (flat) the current camera sees, and the unseen mask.

        Kept while the intrinsics and the grid stay the same.
        """
        if (
            self._visible_cache is None
            or not torch.equal(self._visible_cache[0], Kn)
            or not (self._visible_cache[1] is centres or np.array_equal(self._visible_cache[1], centres))
        ):
            pts = torch.as_tensor(centres.reshape(-1, 3).astype(np.float32), device=self.device)
            unseen = project(pts, Kn)[2]
            self._visible_cache = (Kn, centres, torch.nonzero(~unseen)[:, 0], unseen.cpu().numpy())
        return self._visible_cache[2], self._visible_cache[3]

    def query_grid(
        self, centres: np.ndarray, views: Views, head: str, planes: list[torch.Tensor] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Densities and unseen mask (flat) of grid cell centres; the fast path decodes only the seen cells."""
        if planes is None:
            pts = torch.as_tensor(centres.reshape(1, -1, 3).astype(np.float32), device=self.device)
            sigma, invalid = self.model.query(pts, views, head, self.cfg.model.chunk_points)
            # a voxel is seen when the current camera sees it (the SV head reads view 0 only)
            return sigma[0].float().cpu().numpy(), invalid[0, :, 0].cpu().numpy()
        visible, unseen = self._visible(centres, views.Kn[0, 0])
        pts = torch.as_tensor(centres.reshape(-1, 3).astype(np.float32), device=self.device)[visible]
        chunk = self.fast_chunk(head, len(planes))
        # torch's folded query also with model.backend onnxruntime: onnxruntime's query graph measured 3x
        # slower on the CPU (kdbts bench, docs/performance/export.md); the graph is for deployment (TensorRT)
        sig = [
            folded.folded_density(self.model, pts[s : s + chunk], planes, views.Kn[0], views.w2c[0], head)[0]
            for s in range(0, len(pts), chunk)
        ]
        dens = np.zeros(unseen.shape, np.float32)
        dens[~unseen] = torch.cat(sig).float().cpu().numpy()
        return dens, unseen

    def process(
        self, frame: Frame, want_depth: bool = True, want_grid: bool = True, companions: Sequence[Frame] = ()
    ) -> Outputs:
        """Run one frame (and the other cameras' images of its rig frame) through the network; build outputs.

        Every image is encoded once. When the window takes the rig frame as a keyframe its
        images stay for later frames; otherwise they are queried this once and forgotten.
        """
        with self.precision():
            return self._process(frame, want_depth, want_grid, companions)

    def encode(self, frame: Frame) -> WindowEntry:
        """The frame's window entry: features, intrinsics, pose and folded maps."""
        assert frame.K is not None, "a frame is encoded with its intrinsics"
        return self._encode_prepared(frame, *self.prepare(frame.image, frame.K)[1:])

    def _encode_prepared(self, frame: Frame, image01: torch.Tensor, Kn: torch.Tensor) -> WindowEntry:
        planes: dict[str, torch.Tensor] = {}
        if self.backend is not None:  # features and the exported heads' folded maps in one onnxruntime run
            features, planes = self.backend.encode(image01)
        elif self._compiled_encode is None:
            features = self.model.encode(image01)[0]
        else:  # a CUDA graph's output is overwritten by its next replay, and the window keeps features
            features = self._compiled_encode(image01)[0].clone()
        entry = WindowEntry(frame.stamp_ns, features, Kn, frame.T_fixed_cam, camera=frame.frame_id)
        entry.planes.update(planes)
        if self.cfg.model.fast:
            for h in self.heads.for_mode():
                self.heads.planes([entry], h)
        return entry

    def _process(self, frame: Frame, want_depth: bool, want_grid: bool, companions: Sequence[Frame]) -> Outputs:
        t0 = time.perf_counter()
        cfg = self.cfg
        assert frame.K is not None, "a frame is processed with its intrinsics"
        resized, image01, Kn = self.prepare(frame.image, frame.K)
        t1 = self._sync()
        entry = self._encode_prepared(frame, image01, Kn)
        group = [self.encode(c) for c in companions]
        self.window.offer([*group, entry])
        head, _entries, views, planes = self.heads.views_for(entry, group)
        t2 = self._sync()

        spec = self.grid_spec()
        centres = spec.centres_cam()
        density = np.full(spec.shape, np.nan, np.float32)
        occupancy, points, pdens, prgb = (
            None,
            np.zeros((0, 3), np.float32),
            np.zeros(0, np.float32),
            np.zeros((0, 3), np.uint8),
        )
        if want_grid:
            sigma, unseen = self.query_grid(centres, views, head, planes)
            sigma, unseen = sigma.reshape(spec.shape), unseen.reshape(spec.shape)
            density = np.where(unseen, np.nan, sigma).astype(np.float32)
            occupancy = bev_occupancy(sigma, unseen, spec.resolution_z)
            vox, pdens = occupied_voxels(centres, sigma, unseen, cfg.grid.occupied_density)
            prgb = self._colours(vox, self.intrinsics(frame.K, frame.image.shape[1], frame.image.shape[0])[0], resized)
            points = vox
        t3 = self._sync()

        depth = depth_K = None
        if want_depth:
            depth, depth_K = self.render_depth_image(views, head, Kn, planes)
        t4 = self._sync()

        if frame.T_fixed_cam is not None:
            out_frame, T_out_cam = cfg.fixed_frame, frame.T_fixed_cam
        else:
            out_frame, T_out_cam = frame.frame_id, np.eye(4)
        points = (points @ T_out_cam[:3, :3].T + T_out_cam[:3, 3]).astype(np.float32)
        if want_grid:
            self.grid_budget.update(
                cfg.grid.resolution, cfg.grid.coarsest_resolution, cfg.latency_budget, time.perf_counter() - t0, t3 - t2
            )
        return Outputs(
            frame.stamp_ns,
            frame.frame_id,
            out_frame,
            T_out_cam,
            spec,
            density,
            occupancy,
            points,
            pdens.astype(np.float32),
            prgb,
            depth,
            depth_K,
            head,
            int(views.features.shape[1]),
            {"resize": t1 - t0, "encode": t2 - t1, "grid": t3 - t2, "depth": t4 - t3},
        )

    @staticmethod
    def _colours(points_cam: np.ndarray, Kn: np.ndarray, image: np.ndarray) -> np.ndarray:
        """RGB of the network image at each point's projection (nearest pixel)."""
        if len(points_cam) == 0:
            return np.zeros((0, 3), np.uint8)
        H, W = image.shape[:2]
        uvz = points_cam @ Kn.T
        xy = uvz[:, :2] / uvz[:, 2:3]
        # normalised coordinates use the align_corners=False convention of feature sampling
        u = np.clip(np.floor((xy[:, 0] + 1) * W / 2), 0, W - 1).astype(int)
        v = np.clip(np.floor((xy[:, 1] + 1) * H / 2), 0, H - 1).astype(int)
        return image[v, u]
