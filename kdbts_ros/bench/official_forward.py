"""The official implementation's forward pass on the benchmark's input (``kdbts bench --official PATH``).

The user's checkout of github.com/keonhee-han/KDBTS is imported, not copied: its
``MVBTSNet`` (models/bts/model/models_bts.py) is built with the model configuration
of its KITTI configs, loads our network's weights (our keys are the official ones
without ``renderer.net.``), and runs its own ``encode`` and
``forward(only_density=True)`` on the benchmark's frames and grid cell centres. Its
densities are compared with our reference path's on the same points.

Only the network's modules are imported. The package ``models.bts.model``'s
``__init__`` is not run: it also imports the training losses and ray samplers
(lpips, omegaconf), which the network does not use. Any other module the network
code imports and this environment lacks is reported by name.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kdbts_ros.bench.measure import percentiles_ms
from kdbts_ros.core import geometry
from kdbts_ros.core.config import PipelineConfig
from kdbts_ros.core.field import Query
from kdbts_ros.core.frames import EncodedFrame, Frame
from kdbts_ros.core.grids import GridSpec
from kdbts_ros.core.loading import synced_time
from kdbts_ros.core.model import resnet
from kdbts_ros.core.model.network import HEAD_NAMES, Architecture, DensityField
from kdbts_ros.core.report_paths import report_path
from kdbts_ros.core.stages import Stages
from kdbts_ros.data.sequences import Sequence
from kdbts_ros.runtime.head_choice import HeadChoice
from kdbts_ros.runtime.window import FrameWindow

NETWORK_FILE = Path("models/bts/model/models_bts.py")
# the heads' names in MVBTSNet are ours (HEAD_NAMES); its encoder is chosen by depth
RESNET_LAYERS = {"resnet18": 18, "resnet34": 34, "resnet50": 50}
FRAME_INTERVAL_NS = 100_000_000


class OfficialCodeError(RuntimeError):
    """The official checkout cannot be imported or does not fit our network, with the reason."""


def _torchvision_module(name: str, doc: str, **attrs: object) -> types.ModuleType:
    """A stand-in module whose missing attributes raise an error that names the stand-in."""
    module = types.ModuleType(name, doc)
    module.__dict__.update(attrs)

    def missing(attr: str) -> object:
        raise AttributeError(
            f"{name}.{attr} is not in kdbts_ros's torchvision stand-in, which provides only "
            "what the official network's forward pass uses"
        )

    module.__dict__["__getattr__"] = missing  # a module's __getattr__ (PEP 562)
    return module


def _resnet_constructor(name: str) -> Callable[..., resnet.ResNet]:
    def build(pretrained: bool = False, progress: bool = True) -> resnet.ResNet:
        # pretrained is ignored, so nothing is downloaded: the caller loads its weights afterwards
        if name not in resnet.BACKBONES:
            raise NotImplementedError(
                f"torchvision stand-in: {name} is not among kdbts_ros's ResNet layouts ({', '.join(resnet.BACKBONES)})"
            )
        return resnet.ResNet(name)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"kdbts_ros's {name} with torchvision's module names (pretrained is ignored)."
    return build


def stand_in_modules() -> dict[str, types.ModuleType]:
    """Stand-in ``torchvision``, ``.models``, ``.models.resnet`` and ``.transforms``, as the official network uses them.

    ``models.ResNet`` is our ResNet: the official code only subclasses it for its
    multi-image encoder, which single-image configs never build.
    """
    constructors = {
        name: _resnet_constructor(name) for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
    }
    resnet_mod = _torchvision_module(
        "torchvision.models.resnet",
        "ResNets with torchvision's module names.",
        ResNet=resnet.ResNet,
        BasicBlock=resnet.BasicBlock,
        Bottleneck=resnet.Bottleneck,
        model_urls={},
        **constructors,
    )
    models = _torchvision_module(
        "torchvision.models", "ResNet constructors.", ResNet=resnet.ResNet, resnet=resnet_mod, **constructors
    )
    transforms = _torchvision_module(
        "torchvision.transforms", "Imported by the official util module, not used by the network."
    )
    top = _torchvision_module(
        "torchvision",
        "kdbts_ros's stand-in for torchvision.",
        models=models,
        transforms=transforms,
        __version__="stand-in",
    )
    return {
        "torchvision": top,
        "torchvision.models": models,
        "torchvision.models.resnet": resnet_mod,
        "torchvision.transforms": transforms,
    }


def _in_package(name: str, package: str) -> bool:
    """Whether module ``name`` is ``package`` or one of its submodules."""
    return name == package or name.startswith(package + ".")


def _forget(package: str) -> None:
    """Remove a package and its submodules from the module table."""
    for k in [k for k in sys.modules if _in_package(k, package)]:
        del sys.modules[k]


@contextlib.contextmanager
def torchvision_stand_in() -> Iterator[bool]:
    """In the block, ``import torchvision`` gives the stand-in if the real one fails to import; yields whether it does.

    On exit the module table's torchvision entries are as before, so nothing else in the process sees the stand-in.
    """
    before = {k: m for k, m in sys.modules.items() if _in_package(k, "torchvision")}
    try:
        importlib.import_module("torchvision")
    except Exception:  # a broken install fails in many ways (missing ops: RuntimeError)
        pass
    else:
        yield False
        return
    # torchvision's compiled ops do not load beside this torch, and the official network needs only its ResNets
    _forget("torchvision")
    sys.modules.update(stand_in_modules())
    try:
        yield True
    finally:
        _forget("torchvision")
        sys.modules.update(before)


@dataclass(frozen=True)
class OfficialCode:
    """The official network's constructors, imported from a checkout."""

    repo: Path
    MVBTSNet: type
    make_backbone: Callable[..., nn.Module]
    make_head: Callable[..., nn.Module]
    PositionalEncoding: Any  # a class of the checkout (untyped): from_conf builds it
    torchvision: str  # "installed" or "stand-in"


def load_official(repo: str | Path) -> OfficialCode:
    """Import the official network's modules from a checkout of github.com/keonhee-han/KDBTS.

    Its top-level package ``models`` is removed from the module table afterwards, as is the torchvision stand-in.
    """
    repo = Path(repo).resolve()
    if not (repo / NETWORK_FILE).is_file():
        raise OfficialCodeError(f"{repo}: not a checkout of github.com/keonhee-han/KDBTS (no {NETWORK_FILE})")
    clash = sys.modules.get("models")
    if clash is not None:
        raise OfficialCodeError(
            f"a module named 'models' is already imported ({clash!r}); the official code's "
            "top-level package has the same name"
        )
    sys.path.insert(0, str(repo))
    try:
        with torchvision_stand_in() as stand_in:
            importlib.import_module("models.bts")
            package = repo / NETWORK_FILE.parent
            spec = importlib.util.spec_from_file_location(
                "models.bts.model", package / "__init__.py", submodule_search_locations=[str(package)]
            )
            assert spec is not None  # a file location always has one (the source loader)
            # registered but not executed: the package's __init__ imports the training side (lpips, omegaconf)
            sys.modules["models.bts.model"] = importlib.util.module_from_spec(spec)
            net_mod = importlib.import_module("models.bts.model.models_bts")
            heads = importlib.import_module("models.common.model.head_util")
            backbones = importlib.import_module("models.common.backbones.backbone_util")
            code = importlib.import_module("models.common.model.code")
    except ModuleNotFoundError as exc:
        missing = (
            "which the checkout lacks"
            if _in_package(exc.name or "", "models")
            else "which is not installed here; install it (the checkout's environment.yml lists its dependencies)"
        )
        raise OfficialCodeError(f"the official network code in {repo} imports {exc.name!r}, {missing}") from exc
    finally:
        sys.path.remove(str(repo))
        _forget("models")
    return OfficialCode(
        repo,
        net_mod.MVBTSNet,
        backbones.make_backbone,
        heads.make_head,
        code.PositionalEncoding,
        "stand-in" if stand_in else "installed",
    )


def official_config(arch: Architecture) -> dict:
    """The ``model_conf`` of the official configs/train_kitti_raw_KD.yaml, sized to ``arch``.

    With the official architecture (ResNet-50, d_out 64, heads 64 and 128/16) it is
    that config; KITTI-360's differs only in training-time view dropout.
    """
    if arch.backbone not in RESNET_LAYERS:
        raise OfficialCodeError(f"the official encoder has no {arch.backbone!r} (it has {', '.join(RESNET_LAYERS)})")
    return {
        "arch": "MVBTSNet",
        "use_code": True,
        "prediction_mode": "default",
        "use_viewdirs": False,
        "encoder": {
            "type": "monodepth2",
            "freeze": False,
            "pretrained": True,
            "resnet_layers": RESNET_LAYERS[arch.backbone],
            "num_ch_dec": [32, 32, 64, 128, 256],
            "d_out": arch.feature_dim,
        },
        "code": {"num_freqs": 6, "freq_factor": 1.5, "include_input": True},
        "decoder_heads": [
            {
                "type": "MultiViewHead3",
                "name": HEAD_NAMES["mv"],
                "freeze": False,
                "args": {
                    "mlp": {"type": "resnet", "args": {"n_blocks": 0, "d_hidden": arch.mv_hidden}},
                    "mlp2": {
                        "type": "resnet",
                        "d_in": arch.mv_feature_dim,
                        "args": {"n_blocks": 0, "d_hidden": arch.mv_feature_dim},
                    },
                    "dropout_views_rate": 0.0,
                    "dropout_multiviewhead": False,
                },
            },
            {
                "type": "resnet",
                "name": HEAD_NAMES["sv"],
                "args": {"n_blocks": 0, "view_number": 0, "d_hidden": arch.sv_hidden},
            },
        ],
        "z_near": arch.z_near,
        "z_far": arch.z_far,
        "inv_z": True,
        "learn_empty": False,
        "code_mode": "z",
        "flip_augmentation": True,
        "sample_color": True,
    }


def build_official(code: OfficialCode, model: DensityField, head: str) -> nn.Module:
    """The official MVBTSNet with ``model``'s weights, predicting with ``head`` ('sv' or 'mv'), in eval mode."""
    conf = official_config(model.arch)
    encoder = code.make_backbone(conf["encoder"])
    code_xyz = code.PositionalEncoding.from_conf(conf["code"], d_in=3)
    d_in = encoder.latent_size + code_xyz.d_out
    heads = {h["name"]: code.make_head(h, d_in, 1) for h in conf["decoder_heads"]}
    # ren_nc: the configs' renderer n_coarse, which MVBTSNet only stores
    net = code.MVBTSNet(conf, encoder, code_xyz, heads, final_pred_head=HEAD_NAMES[head], ren_nc=64)
    try:
        net.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as exc:
        raise OfficialCodeError(f"our weights do not load into the official network: {exc}") from exc
    return net.eval()


def _official_inputs(entries: list[EncodedFrame], images: dict[int, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Images in [-1, 1] (1, V, 3, H, W), normalised K (1, V, 3, 3) and camera-to-world poses (1, V, 4, 4) of entries.

    The world frame is the current (first) camera's, as in the official evaluators.
    """
    current = entries[0]
    c2w = [np.eye(4)]
    for e in entries[1:]:
        assert current.T_fixed_cam is not None  # other views are used only with a posed current frame
        c2w.append(geometry.invert(current.T_fixed_cam) @ e.T_fixed_cam)
    device = current.Kn.device
    return (
        torch.stack([images[e.stamp_ns] for e in entries], 1) * 2 - 1,  # the official datasets' range
        torch.stack([e.Kn for e in entries])[None],
        torch.as_tensor(np.stack(c2w), dtype=torch.float32, device=device)[None],
    )


def run_official(repo: str | Path, cfg: PipelineConfig, seq: Sequence, warmup: int) -> dict[str, Any]:
    """The official forward pass over the sequence: encode and query times, its densities against our reference path's.

    Each frame, as our pipeline does, enters the window (cfg.window_size, head
    cfg.mode); the official ``encode`` re-encodes every window frame, then
    ``forward(xyz, only_density=True)`` queries the grid cell centres. Our
    network (the same weights) queries the same points through the reference
    path. Times are taken after ``warmup`` frames; peak memory is not reported,
    as the process also holds our network for the comparison.
    """
    code = load_official(repo)
    stages = Stages(cfg)
    device = stages.device
    window = FrameWindow(cfg.window_size, cfg.keyframe)
    heads = HeadChoice(cfg, stages.model, device)
    spec = GridSpec.from_config(cfg.grid)
    centres = spec.centres_cam()
    xyz = torch.as_tensor(centres.reshape(1, -1, 3).astype(np.float32), device=device)
    nets: dict[str, Any] = {}  # the official MVBTSNet per head (its encode is not nn.Module's)
    images: dict[int, torch.Tensor] = {}
    encode_s, query_s = [], []
    max_diff = max_density = 0.0
    for i, (image, T) in enumerate(zip(seq.images, seq.T_fixed_cam)):
        frame = Frame(image, seq.K, i * FRAME_INTERVAL_NS, seq.camera_frame, T)
        with stages.precision():
            prepared = stages.encoding.prepare(image, frame.lens())
            images[frame.stamp_ns] = prepared.image01
            entry = stages.encoding.encode(frame, heads.for_mode(), prepared)
            window.push(entry)
            head, entries = heads.choose(entry, (), window.posed(), spec)
            # the reference path: the model's own point query, at every cell (seen or not, as the official one)
            views = Query.of(head, entries, device).views
            ours = stages.model.query(xyz, views, head, cfg.model.chunk_points)[0][0].float().cpu().numpy()
        images = {e.stamp_ns: images[e.stamp_ns] for e in window.entries}
        if head not in nets:
            nets[head] = build_official(code, stages.model, head).to(device)
        net, inputs = nets[head], _official_inputs(entries, images)
        ids = list(range(len(entries)))
        with torch.no_grad():  # as the official evaluators run it
            t0 = synced_time(device)
            net.encode(*inputs, ids_encoder=ids)
            t1 = synced_time(device)
            sigma = net(xyz, only_density=True)[2]
            t2 = synced_time(device)
        if i >= warmup:
            encode_s.append(t1 - t0)
            query_s.append(t2 - t1)
        max_diff = max(max_diff, float(np.abs(sigma[0, :, 0].cpu().numpy() - ours).max()))
        max_density = max(max_density, float(np.abs(ours).max()))
    if not encode_s:
        raise RuntimeError(f"no frame was measured ({len(seq.images)} frames, warm-up {warmup})")
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            net.encode(*inputs, ids_encoder=ids)
        gflops = {"encode": fc.get_total_flops() / 1e9}
        with FlopCounterMode(display=False) as fc:
            net(xyz, only_density=True)
        gflops["grid"] = fc.get_total_flops() / 1e9
    e2e = [a + b for a, b in zip(encode_s, query_s)]
    return {
        "stages": {"encode": percentiles_ms(encode_s), "grid": percentiles_ms(query_s)},
        "end_to_end": percentiles_ms(e2e),
        "fps": float(1.0 / np.mean(e2e)),
        "frames": len(e2e),
        "head": head,
        "views": len(entries),
        "dropped": {},
        "peak_rss_mb": None,
        "peak_cuda_mb": None,
        "gflops": gflops,
        "official": {"repo": report_path(code.repo), "torchvision": code.torchvision},
        "agreement": {
            "against": "reference path, fp32",
            "points": int(xyz.shape[1]),
            "frames": len(seq.images),
            "max_abs_diff": max_diff,
            "max_density": max_density,
            "max_rel_diff": max_diff / max_density if max_density > 0 else 0.0,
        },
    }
