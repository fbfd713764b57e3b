"""The single-view ray march as a hand-written C loop nest (``march.c``), built with the system's C compiler.

Why by hand: no library fuses ``w . relu(a_ray + b_sample)`` over a ray's samples with the
softplus and the compositing, and the loop ``torch.compile`` writes for :func:`ray_march.march`
sums one vector of samples over the hidden units into one accumulator, so each add waits on the
one before it (measured 2x slower here: docs/performance/full_depth.md). ``march.c`` keeps a
block of a ray's samples in registers with four accumulators, halves the arithmetic per unit
(``w relu(x) = w x / 2 + w |x| / 2``, the linear halves summed once per ray and per sample),
composites eight rays per vector, and stops a group of rays once their transmittance is spent.

It is built once per machine into the user's cache (``$XDG_CACHE_HOME/kdbts_ros``; a second of
compiler time), named by a hash of the source, compiler and flags, and called once per frame
through ctypes, which lets go of the GIL; it runs on torch's thread count of its own threads (one
GIL hand-over a frame: a node's other Python threads cannot hold up its slices). Where
no compiler builds it, :attr:`NativeMarch.problem` says why and calls return None, as
:class:`compiled.Compiled` does (the node counts ``not_compiled``); CUDA uses that one instead.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from kdbts_ros.core.model import bilinear, folded
from kdbts_ros.core.model.compiled import LoopNest, build_problem
from kdbts_ros.core.model.network import DensityField
from kdbts_ros.core.model.render import RayRender

SOURCE = Path(__file__).with_name("march.c")
# the transmittance below which a group of rays stops: what it leaves out moves the depth by at most
# this share of z_far (8 um at 80 m), far inside the fast path's tested 1e-5
TRANSMITTANCE_SPENT = 1e-7


def _flags() -> list[str]:
    """Compiler flags: AVX2 and FMA where torch found them on this CPU (no -march=native: a cache shared by
    machines with other CPUs must not hold instructions they lack); math without errno or traps so the
    polynomials vectorise."""
    arch = ["-mavx2", "-mfma"] if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") else []
    return ["-O3", "-fPIC", "-shared", "-pthread", "-fno-math-errno", "-fno-trapping-math", *arch]


def cache_dir() -> Path:
    """Where built loop nests are kept: ``$XDG_CACHE_HOME/kdbts_ros`` (``~/.cache/kdbts_ros``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kdbts_ros"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(source: Path = SOURCE) -> Path:
    """The shared library of ``source`` for this machine, compiled unless the cache holds it intact.

    The compiler is ``$CC`` (default ``cc``). Each library is kept with its SHA-256: loading a
    damaged one (a copy cut short, a full disk) would crash the process, so a library that does
    not match is built again. Raises OSError or CalledProcessError (with the compiler's message)
    when it cannot be built.
    """
    cc, flags = os.environ.get("CC", "cc"), _flags()
    key = hashlib.sha256(b"\0".join([source.read_bytes(), cc.encode(), *map(str.encode, flags)]))
    lib = cache_dir() / f"{source.stem}-{platform.machine()}-{key.hexdigest()[:16]}.so"
    digest = lib.with_suffix(".sha256")
    if lib.is_file() and digest.is_file() and digest.read_text().strip() == _digest(lib):
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    # built beside its final name, then renamed: a process reading the cache sees no half-written file
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
    os.close(fd)
    try:
        subprocess.run([cc, *flags, "-o", tmp, str(source), "-lm"], check=True, capture_output=True, text=True)
        Path(tmp + ".sha256").write_text(_digest(Path(tmp)))
        os.replace(tmp, lib)
        os.replace(tmp + ".sha256", digest)
    finally:
        for leftover in (tmp, tmp + ".sha256"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return lib


class NativeMarch(LoopNest):
    """:func:`ray_march.march` on a CPU through ``march.c``, which samples the folded map itself (a ray's texels
    read once, no (rays, hidden) tensor written and read back)."""

    def __init__(self) -> None:
        super().__init__()
        self._fn: Callable[..., int] | None = None
        # the last rays' taps: a depth image's rays stay while the camera does (field.DepthRays keeps xy)
        self._taps: tuple[torch.Tensor, int, int, tuple[torch.Tensor, torch.Tensor]] | None = None

    def _load(self) -> Callable[..., int]:
        try:
            fn = ctypes.CDLL(str(build())).march
        except subprocess.CalledProcessError as exc:
            raise OSError(f"{exc.cmd[0]} could not build march.c: {(exc.stderr or '').strip()[:300]}") from exc
        P, L = ctypes.c_void_p, ctypes.c_long
        fn.argtypes = [P, P, P, P, P, P, ctypes.c_float, P, L, L, L, ctypes.c_float, L, P, P]
        fn.restype = ctypes.c_int
        return fn

    def __call__(
        self,
        model: DensityField,
        head: str,
        plane: torch.Tensor,
        xy: torch.Tensor,
        xy_term: torch.Tensor,
        t: torch.Tensor,
    ) -> RayRender | None:
        """Depth and opacity (R,) of rays through normalised image points xy (R, 2) from a head's folded map
        ``plane`` (hidden, H, W), with their x, y code term (R, hidden) and shared depths
        t (S,), as :class:`ray_march.CompiledMarch`; None when ``march.c`` could not be built."""
        if plane.device.type != "cpu":
            return None
        f32 = torch.float32
        rows = plane.detach().permute(1, 2, 0).to(f32)  # a CPU's channels-last fp32 map: a view, no copy
        H, W, hidden = rows.shape
        if self._taps is None or self._taps[0] is not xy or self._taps[1:3] != (H, W):
            self._taps = (xy, H, W, bilinear.taps(xy.detach(), H, W))
        out = self.run(
            rows.reshape(H * W, hidden),
            *self._taps[3],
            xy_term,
            folded.sample_term(model, head, t),
            *folded.output_layer(model, head, f32),
            t,
        )
        return None if out is None else RayRender(out.depth.to(plane.dtype), out.opacity.to(plane.dtype))

    def run(
        self,
        rows: torch.Tensor,
        taps: torch.Tensor,
        tap_w: torch.Tensor,
        xy_term: torch.Tensor,
        per_sample: torch.Tensor,
        w_out: torch.Tensor,
        b_out: torch.Tensor,
        t: torch.Tensor,
    ) -> RayRender | None:
        """``march.c`` on its terms: a map's texels ``rows`` (pixels, hidden), each ray's four ``taps`` (R, 4) into
        it with weights ``tap_w`` (R, 4), the rays' x, y code term (R, hidden), the z code term per sample
        (hidden, S), the output layer's weights (hidden,) and bias (1,), the depths t (S,). Float32 results; None
        when ``march.c`` could not be built or takes no head this wide."""
        if self.problem is not None:
            return None
        if self._fn is None:
            try:
                self._fn = self._load()
            except OSError as exc:  # no compiler, a compiler that fails, an unreadable cache
                self.problem = build_problem(exc)
                return None
        f32 = torch.float32
        rows, tap_w, xy_term, per_sample, w_out, t = (
            x.detach().to(f32).contiguous() for x in (rows, tap_w, xy_term, per_sample, w_out, t)
        )
        taps = taps.detach().to(torch.int64).contiguous()
        R, hidden = len(taps), rows.shape[1]
        depth, opacity = t.new_empty(R), t.new_empty(R)
        code = self._fn(
            rows.data_ptr(), taps.data_ptr(), tap_w.data_ptr(), xy_term.data_ptr(),
            per_sample.data_ptr(), w_out.data_ptr(), float(b_out.detach()), t.data_ptr(), R, hidden, len(t),
            TRANSMITTANCE_SPENT, torch.get_num_threads(), depth.data_ptr(), opacity.data_ptr(),
        )  # fmt: skip
        if code == -2:
            self.problem = f"march.c takes at most 512 hidden units, the head has {hidden}"
            return None
        if code:
            raise MemoryError("march.c could not allocate its buffers")
        return RayRender(depth, opacity)
