"""``kdbts export``: the network as ONNX graphs (encoder with folded head maps, query per head) and export.json.

Optionally an int8 encoder (onnxruntime static quantization) calibrated on frames of the
shared KITTI sample. The node uses the same export with ``model.backend: onnxruntime`` (cached
under $KDBTS_CACHE_DIR/onnx, made at start when missing); this command writes one for deployment.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "export the network as ONNX (encoder + folded maps, query graphs) for onnxruntime / TensorRT"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        default="",
        help="project checkpoint, fetched release name or 'random'; default: the embedded KDBTS network",
    )
    p.add_argument("--out", type=Path, default=Path("onnx_export"), help="output folder")
    p.add_argument("--height", type=int, default=0, help="input height; 0: the checkpoint's training height")
    p.add_argument("--width", type=int, default=0, help="input width; 0: the checkpoint's training width")
    p.add_argument("--heads", default="", help="comma-separated heads (sv, mv); default: all the weights have")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (GridSample needs >= 16)")
    p.add_argument(
        "--int8",
        type=Path,
        default=None,
        metavar="KITTI",
        help="also write encoder_int8.onnx, calibrated on the first --calibration frames of this "
        "KITTI raw sample folder (e.g. ../shared/data/kitti)",
    )
    p.add_argument("--calibration", type=int, default=8, help="calibration frames for --int8")


def run(args: argparse.Namespace) -> int:
    from kdbts_ros.core.config import PipelineConfig
    from kdbts_ros.core.loading import OFFICIAL_INPUT_SIZE, build_model, checkpoint_camera
    from kdbts_ros.core.model.export import export_onnx

    cfg = PipelineConfig()
    cfg.model.checkpoint = args.checkpoint
    model, info = build_model(cfg)
    H = args.height or int(info.get("image_height", OFFICIAL_INPUT_SIZE[0]))
    W = args.width or int(info.get("image_width", OFFICIAL_INPUT_SIZE[1]))
    camera = checkpoint_camera(info, (H, W))
    heads = [h.strip() for h in args.heads.split(",") if h.strip()] or None
    meta = export_onnx(
        model, args.out, (H, W), heads, opset=args.opset, checkpoint=Path(str(info.get("weights", ""))).name
    )
    # the graphs take images seen through the checkpoint's camera: a deployment resamples into it
    meta["camera"] = camera.record()
    if args.int8 is not None:
        from kdbts_ros.core.lens import Lens, resampler
        from kdbts_ros.core.model.quantize import quantize_encoder
        from kdbts_ros.data.sequences import kitti_sample

        seq = kitti_sample(args.int8, args.calibration)
        h, w = seq.images[0].shape[:2]
        view = resampler(Lens.pinhole(seq.K, w, h), camera.lens())
        frames = [view(im) for im in seq.images]
        path = quantize_encoder(args.out, frames)
        meta["files"]["encoder_int8"] = path.name
        meta["int8"] = {
            "calibration": f"first {len(frames)} frames of {args.int8}",
            "format": "QDQ, Conv only, per-channel int8 weights, uint8 activations, MinMax",
        }
    (args.out / "export.json").write_text(json.dumps(meta, indent=2) + "\n")
    for name in meta["files"].values():
        print(args.out / name)
    print(args.out / "export.json")
    return 0
