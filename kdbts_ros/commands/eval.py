"""``kdbts eval``: metrics of each checkpoint and head on held-out data, side by side.

Synthetic data (``kdbts synth``): occupancy and depth against the scenes' exact geometry, plus
the profiles figure. KITTI raw / odometry: depth against the projected velodyne. KITTI-360:
that depth, and occupancy against aggregated scans (the BTS lidar protocol). ``--camera-shapes``:
the real frames seen through cameras made from them (crops, a plumb_bob and a fisheye lens),
each camera's depth against the full frame's and against the velodyne (docs/cameras.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdbts_ros.commands.common import add_dataset_args

HELP = (
    "occupancy (O_acc, IE_acc, IE_rec) and depth metrics of checkpoints, every head side by side (real KITTI "
    "data: depth against velodyne; KITTI-360 also occupancy against aggregated scans)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data",
        type=Path,
        help="held-out dataset folder (kdbts synth), or a KITTI recording as kdbts kitti2bag's SOURCE with --dataset",
    )
    p.add_argument(
        "--dataset",
        choices=("synth", "raw", "odometry", "kitti360"),
        default="synth",
        help="synth: occupancy and depth against exact geometry; raw|odometry|kitti360: depth against "
        "the projected velodyne (Garg crop, 80 m cap), kitti360 also occupancy against "
        "aggregated scans (default: synth)",
    )
    add_dataset_args(p)
    p.add_argument("--no-crop", action="store_true", help="real data: score the whole image, not the Garg crop")
    p.add_argument(
        "--occ-scans",
        type=int,
        default=20,
        metavar="J",
        help="kitti360: scans aggregated for occupancy ground truth; a frame needs a pose, J - 1 "
        "posed successors and a scan for each (default: 20, official)",
    )
    p.add_argument(
        "--median-scaling",
        action="store_true",
        help="real data: scale each prediction by median(gt) / median(pred) (monocular protocol)",
    )
    p.add_argument(
        "--priors",
        action="store_true",
        help="real data: also score image-free baselines, a constant 15 m depth and a flat road 1.65 m "
        "below the camera with a wall at 30 m (behind their surface counts as occupied)",
    )
    p.add_argument(
        "--model",
        nargs="+",
        required=True,
        metavar="LABEL=CHECKPOINT",
        help="checkpoints (files, or fetched names from 'kdbts weights list') to evaluate, each "
        "optionally labelled, e.g. BTS=runs/bts/checkpoint.safetensors KDBTS=kitti-360",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("eval_out"),
        help="folder for results.md, results.json and profiles.png (default: eval_out)",
    )
    p.add_argument("--stride", type=int, default=8, help="evaluate every N-th frame of each sequence (default: 8)")
    p.add_argument("--profile-frame", type=int, default=0, help="index of the evaluated frame shown in profiles.png")
    p.add_argument("--device", default="auto", help="torch device (default: auto)")
    p.add_argument(
        "--camera-shapes",
        action="store_true",
        help="real data: the camera-shape benchmark instead: each frame through 4:3, 16:9 and 60-degree crops, "
        "a plumb_bob and an equidistant lens made from it, run as the node runs it (single view, depth at "
        "the network's size); depth agreement with the full frame and Abs Rel against the velodyne, with a "
        "picture per camera of the first model (docs/cameras.md)",
    )


def run(args: argparse.Namespace) -> int:
    """Load every checkpoint (LABEL=PATH, or PATH labelled by its stem) and score it on the chosen data."""
    from kdbts_ros.core.loading import pick_device
    from kdbts_ros.core.model.checkpoint import load_checkpoint

    paths = {}
    for item in args.model:
        label, sep, path = item.partition("=")
        if not sep:
            label, path = Path(item).stem, item
        paths[label] = path
    if args.camera_shapes:
        if args.dataset == "synth":
            print(
                "kdbts eval: --camera-shapes needs real frames with velodyne (--dataset raw|odometry|kitti360)",
                file=sys.stderr,
            )
            return 2
        return _camera_shapes(args, paths)
    models, infos = {}, {}
    for label, path in paths.items():
        models[label], infos[label] = load_checkpoint(path)
    device = pick_device(args.device)
    if args.dataset == "synth":
        return _synthetic(args, models, paths, device)
    return _real(args, models, infos, paths, device)


def _synthetic(args: argparse.Namespace, models: dict, paths: dict, device) -> int:
    """Occupancy and depth against the procedural scenes' exact geometry, plus the profiles figure."""
    from kdbts_ros.data.image_files import write_image
    from kdbts_ros.evaluation.evaluate import EvalSettings, Evaluator, markdown_table, profile_strip, write_report

    evaluator = Evaluator(args.data, EvalSettings(stride=args.stride))
    results, profiles = {}, {}
    for label, model in models.items():
        for head in model.available_heads:
            name = f"{label} ({head.upper()})"
            results[name] = evaluator.run(model, head, device)
            profiles[name] = evaluator.profile(model, head, args.profile_frame, device)
            print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[name].items() if k != "frames"))
    meta = {"data": str(args.data), "frames": len(evaluator.frames), "stride": args.stride, "models": paths}
    md, js = write_report(args.out, results, meta)
    strip = args.out / "profiles.png"
    write_image(strip, profile_strip(evaluator, profiles, args.profile_frame))
    print(markdown_table(results), end="")
    print(f"wrote {md}, {js}, {strip}")
    return 0


def _real(args: argparse.Namespace, models: dict, infos: dict, paths: dict, device) -> int:
    """Depth against projected velodyne scans of a KITTI raw / odometry / KITTI-360 recording;
    on KITTI-360 also occupancy against aggregated scans (the BTS lidar protocol)."""
    from kdbts_ros.core.loading import checkpoint_camera
    from kdbts_ros.data.datasets import load_recording
    from kdbts_ros.evaluation.evaluate import TABLE_KEYS, markdown_table, write_report
    from kdbts_ros.evaluation.metrics import DEPTH_KEYS, SPLIT_KEYS
    from kdbts_ros.evaluation.priors import PRIORS
    from kdbts_ros.evaluation.real_depth import RealDepthEvaluator, RealDepthSettings
    from kdbts_ros.evaluation.real_occupancy import LidarOccupancySettings

    rec = load_recording(args.dataset, args.data, args.calib, args.poses, args.sequence, args.cameras)
    settings = RealDepthSettings(stride=args.stride, garg_crop=not args.no_crop, median_scaling=args.median_scaling)
    occupancy = LidarOccupancySettings(scans=args.occ_scans) if args.dataset == "kitti360" else None
    evaluator = RealDepthEvaluator(rec, settings, occupancy=occupancy)
    occ = evaluator.occupancy
    if occ is not None:
        print(occ.message(len(evaluator.frames)), file=sys.stdout if occ.truth else sys.stderr)
    keys = (TABLE_KEYS if occ is not None and occ.truth else DEPTH_KEYS) + SPLIT_KEYS
    results = {}
    for label, model in models.items():
        # the network sees each frame through its checkpoint's camera at its training size, as the node does
        camera = checkpoint_camera(infos[label])
        heads = [h for h in model.available_heads if h == "sv" or len(rec.posed()) > 1]
        for head in heads:
            name = f"{label} ({head.upper()})"
            r = results[name] = evaluator.run(model, head, camera, device)
            print(
                f"{name}: "
                + ", ".join(f"{k} {v:.3f}" for k, v in r.items() if k in keys)
                + f"; {r['unseen_gt_pixels']} of {r['gt_pixels']} ground-truth pixels outside the network's view"
            )
    for prior in PRIORS if args.priors else ():
        results[prior.name] = evaluator.run_prior(prior)
    meta = {
        "data": str(args.data),
        "dataset": args.dataset,
        "recording": rec.name,
        "camera": rec.rig.cameras[0].name,
        "frames": len(evaluator.frames),
        "stride": args.stride,
        "ground_truth": "projected velodyne, nearest return per pixel",
        "crop": "none" if args.no_crop else "garg",
        "max_depth": settings.max_depth,
        "median_scaling": args.median_scaling,
        "models": paths,
    }
    if occ is not None:
        meta["occupancy"] = {
            "ground_truth": f"{occ.settings.scans} aggregated velodyne scans (BTS lidar protocol), "
            "visibility from the ground truth only",
            "scans": occ.settings.scans,
            "frames": len(occ.truth),
            "skipped": dict(occ.skipped),
        }
    md, js = write_report(args.out, results, meta, keys)
    print(markdown_table(results, keys), end="")
    print(f"wrote {md}, {js}")
    return 0


def _camera_shapes(args: argparse.Namespace, paths: dict) -> int:
    """Each network through the runtime (single view, depth at its input size) on every made camera."""
    import json

    from kdbts_ros.core.report_paths import report_path
    from kdbts_ros.data.datasets import load_recording
    from kdbts_ros.data.image_files import write_image
    from kdbts_ros.evaluation.camera_shapes import CameraShapeBenchmark, ShapeSettings, markdown, picture_png, summary
    from kdbts_ros.runtime.config import RunnerConfig
    from kdbts_ros.runtime.runner import FrameRunner

    rec = load_recording(args.dataset, args.data, args.calib, args.poses, args.sequence, args.cameras)
    bench = CameraShapeBenchmark(rec, ShapeSettings(stride=args.stride, garg_crop=not args.no_crop))
    args.out.mkdir(parents=True, exist_ok=True)
    results, networks, pictures = {}, {}, []
    for n, (label, path) in enumerate(paths.items()):
        cfg = RunnerConfig()
        cfg.model.checkpoint, cfg.model.device = str(path), args.device
        # every ray's expected depth, as the official evaluator scores it: no NaN mask (render.min_opacity)
        cfg.mode, cfg.render.depth_scale, cfg.render.min_opacity = "sv", 1.0, 0.0
        runner = FrameRunner(cfg)
        scores = bench.run(runner, label=label)
        results[label] = summary(scores)
        info = runner.stages.model_info
        stated = info.get("camera")  # the record, or a sentence when the checkpoint states none
        networks[label] = {
            "weights": report_path(path),
            "canonical": runner.stages.canonical.record(),
            "canonical_source": info.get("camera_source", stated if isinstance(stated, str) else ""),
        }
        for name, s in scores.items() if n == 0 else ():
            assert s.picture is not None  # every camera draws its first frame
            png = args.out / f"{name.replace(' ', '_').replace(':', 'x')}.png"
            write_image(png, picture_png(s.picture, cfg.model.z_near, cfg.model.z_far, title=name))
            pictures.append(report_path(png))
        print(markdown({label: results[label]}), end="")
    meta = {
        "data": report_path(args.data),
        "dataset": args.dataset,
        "recording": rec.name,
        "frames": len(bench.frames),
        "stride": args.stride,
        "full_frame": {"width": bench.full.width, "height": bench.full.height, "K": bench.full.K.tolist()},
        "cameras": {
            c.name: {
                "model": c.lens.model,
                "width": c.lens.width,
                "height": c.lens.height,
                "K": c.lens.K.tolist(),
                "D": c.lens.D.tolist(),
                "crop_origin": c.origin,
            }
            for c in bench.cameras
        },
        "ground_truth": "projected velodyne in the canonical depth camera, nearest return per pixel",
        "crop": "none" if args.no_crop else "garg, of the canonical depth image",
        "networks": networks,
        "pictures": pictures,
    }
    md, js = args.out / "results.md", args.out / "results.json"
    md.write_text(markdown(results))
    js.write_text(json.dumps({"results": results, **meta}, indent=2))
    print(f"wrote {md}, {js} and {len(pictures)} pictures")
    return 0
