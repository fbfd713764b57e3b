"""``kdbts``: command-line tools that run the node's pipeline without ROS."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

from kdbts_ros.core.config import ConfigError, load_config
from kdbts_ros.data.records import DatasetError
from kdbts_ros.core.errors import DEBUG_ENV, classify
from kdbts_ros.data.image_files import read_image, write_image
from kdbts_ros.core.interrupts import signals_as_exceptions
from kdbts_ros.core.model.registry import RELEASES

DEFAULT_KITTI = Path(os.environ.get("KDBTS_KITTI_SAMPLE", "../shared/data/kitti"))
DEBUG_HELP = f"on a failure, print the Python traceback too (or set {DEBUG_ENV}=1)"


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML parameter file (the node's format); default: built-in")
    p.add_argument("--checkpoint", help="project checkpoint (.safetensors), a name from 'kdbts weights list' once "
                                        "fetched, or 'random' for seeded random weights; default: the config's "
                                        "model.checkpoint (empty: the embedded KDBTS network)")
    p.add_argument("--mode", choices=("sv", "mv", "auto"), help="density head (overrides the config)")


def _config(args: argparse.Namespace, overrides: dict | None = None):
    overrides = dict(overrides or {})
    if args.checkpoint:
        overrides["model.checkpoint"] = args.checkpoint
    if args.mode:
        overrides["mode"] = args.mode
    return load_config(args.config, overrides)


def _print_counts(counts: dict[str, int]) -> None:
    """Messages written per topic, one line each."""
    for topic, count in sorted(counts.items()):
        print(f"    {count:5d} x {topic}")


def cmd_demo(args: argparse.Namespace) -> int:
    """Run a short sequence through the node's runner and write a bag and PNGs."""
    from kdbts_ros.commands.demo import run_demo
    from kdbts_ros.data.sequences import kitti_sample, synthetic_sample

    if args.frames < 1:
        raise ConfigError(f"--frames {args.frames}: need at least one frame")
    cfg = _config(args)
    use_kitti = args.source == "kitti" or (args.source == "auto" and args.kitti.is_dir())
    if args.source == "kitti" and not args.kitti.is_dir():
        raise DatasetError(f"{args.kitti}: KITTI sample folder not found")
    seq = kitti_sample(args.kitti, args.frames) if use_kitti else synthetic_sample(args.frames)
    print(f"input: {seq.name}, {len(seq.images)} frames {seq.images[0].shape[1]}x{seq.images[0].shape[0]}")
    result = run_demo(cfg, args.out, seq)
    print(f"weights: {result['weights']}; head: {result['head']}; frames processed: {result['frames']}; "
          f"dropped: {result['drops'] or 'none'}")
    print("last frame, seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in result["timings"].items()))
    print("wrote:")
    for label, path in result["files"].items():
        print(f"  {label:14s} {path}")
    _print_counts(result["messages"])
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Convert an official BTS / MVBTS / KDBTS checkpoint into the project's safetensors format."""
    from kdbts_ros.core.model.official import import_official, save_imported

    model, report = import_official(args.checkpoint)
    print(f"architecture: {report.architecture}")
    print(f"mapped {report.mapped} tensors; heads present: {', '.join(report.heads) or 'none'}")
    for key in report.ignored:
        print(f"  ignored (renderer counter): {key}")
    for key in report.unexpected:
        print(f"  UNEXPECTED (not in the network): {key}")
    for key in report.missing:
        print(f"  MISSING (would stay random): {key}")
    if not report.complete:
        print("kdbts import: refusing to write a partially loaded network (see the keys above)", file=sys.stderr)
        return 1
    if report.absent:
        print(f"note: no weights for {', '.join(report.absent)}; that head is marked unavailable")
    save_imported(args.out, model, report, str(args.checkpoint))
    print(f"wrote {args.out}")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    """List the released official checkpoints, or fetch them into the cache and print their paths."""
    from kdbts_ros.core.model.registry import BASE_URL_ENV, CACHE_ENV, base_url, cache_dir, cached_path

    if args.action == "list":
        for r in RELEASES.values():
            state = str(cached_path(r.name)) if cached_path(r.name).is_file() else "not fetched"
            print(f"{r.name:16s} {r.model:6s} {r.dataset:10s} {state}\n{'':16s} {r.url()}"
                  + (f" : {r.member}" if r.member else ""))
        print(f"cache: {cache_dir()} (${CACHE_ENV}); source: {base_url()} (${BASE_URL_ENV} or get --url)")
        return 0
    from kdbts_ros.commands.weights_fetch import fetch

    for _name, path in fetch(args.names, args.url, args.force):
        print(path)
    return 0


def cmd_viz(args: argparse.Namespace) -> int:
    """Write one PNG with the input, its depth and its bird's-eye density profile."""
    import cv2
    import numpy as np

    from kdbts_ros.runtime.pictures import figure_head
    from kdbts_ros.commands.viz import PRESETS, preset_intrinsics, render_figure

    rgb = cv2.cvtColor(read_image(args.image), cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    if args.intrinsics:
        fx, fy, cx, cy = args.intrinsics
        K, pitch = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), 0.0
    else:
        K, pitch = preset_intrinsics(args.preset, w, h), PRESETS[args.preset][1]
    cfg = _config(args)
    head = args.head or figure_head(cfg)
    _, _, picture = render_figure(cfg, rgb, K, head, pitch)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_image(args.out, picture)
    print(f"head {head}; wrote {args.out} ({picture.shape[1]}x{picture.shape[0]})")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    """Print every parameter with its default, range and description."""
    from kdbts_ros.core.config import PipelineConfig, iter_params, to_yaml

    if args.train:
        from kdbts_ros.training.config import TrainConfig

        cfg = TrainConfig()
    else:
        cfg = PipelineConfig()
    if args.format == "yaml":
        print(to_yaml(cfg), end="")
        return 0
    print("| parameter | default | range / choices | runtime | description |\n|---|---|---|---|---|")
    for s in iter_params(cfg):
        allowed = f"[{s.range[0]:g}, {s.range[1]:g}]" if s.range else ", ".join(s.choices or ())
        print(f"| `{s.name}` | `{s.default!r}` | {allowed} | {'yes' if s.runtime else 'no'} | {s.description} |")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    """Write procedural multi-camera street sequences in the KITTI-style synthetic folder format."""
    from kdbts_ros.data.rig import RigConfig
    from kdbts_ros.data.synth_folder import write_sequence

    seeds = list(range(*args.seed_range)) if args.seed_range else args.seeds
    if not seeds or args.frames < 1 or args.width < 1 or args.height < 1:
        print("kdbts synth: need at least one seed, one frame and a positive image size", file=sys.stderr)
        return 2
    rig = RigConfig(width=args.width, height=args.height)
    for seed in seeds:
        seq = write_sequence(args.out, seed, args.frames, rig, step_m=args.step, bag=args.bag)
        print(f"wrote {seq}: {args.frames} frames x {len(rig.cameras)} cameras "
              f"({', '.join(c.name for c in rig.cameras)}) at {rig.width}x{rig.height}"
              + (f"; bag {seq / 'bag'}" if args.bag else ""))
    print(f"rig: {args.out / 'rig.json'}")
    return 0


def _overrides(pairs: list[str]) -> dict[str, object]:
    """KEY=VALUE command-line settings, values parsed as YAML scalars (2e-4, true, text)."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {pair}: not a YAML value ({getattr(exc, 'problem', None) or exc})") from exc
    return out


def cmd_train(args: argparse.Namespace) -> int:
    """Train BTS, MVBTS or KDBTS as the config says; resumes from OUT/state.pt when present."""
    from kdbts_ros.core.config import load_config
    from kdbts_ros.training.config import TrainConfig
    from kdbts_ros.training.trainer import train

    cfg = load_config(args.config, _overrides(args.set), TrainConfig)
    model = train(cfg, args.out, resume=not args.restart, max_minutes=args.max_minutes)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"heads trained: {model.available_heads}; wrote {args.out / 'checkpoint.safetensors'} "
              f"and {args.out / 'metrics.jsonl'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Metrics of each checkpoint and head on held-out data (synthetic: occupancy, depth, profiles; KITTI: depth;
    KITTI-360: occupancy and depth)."""
    from kdbts_ros.core.model.checkpoint import load_checkpoint
    from kdbts_ros.core.pipeline import pick_device

    models, infos, paths = {}, {}, {}
    for item in args.model:
        label, sep, path = item.partition("=")
        if not sep:
            label, path = Path(item).stem, item
        paths[label] = path
        models[label], infos[label] = load_checkpoint(path)
    device = pick_device(args.device)
    if args.dataset == "synth":
        return _eval_synthetic(args, models, paths, device)
    return _eval_real(args, models, infos, paths, device)


def _eval_synthetic(args: argparse.Namespace, models: dict, paths: dict, device) -> int:
    """Occupancy and depth against the procedural scenes' exact geometry, plus the profiles figure."""
    from kdbts_ros.evaluation.evaluate import EvalSettings, Evaluator, markdown_table, profile_strip, write_report

    evaluator = Evaluator(args.data, EvalSettings(stride=args.stride))
    results, profiles = {}, {}
    for label, model in models.items():
        for head in model.available_heads:
            name = f"{label} ({head.upper()})"
            results[name] = evaluator.run(model, head, device)
            profiles[name] = evaluator.profile(model, head, args.profile_frame, device)
            print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[name].items() if k != "frames"))
    meta = {"data": str(args.data), "frames": len(evaluator.frames), "stride": args.stride,
            "models": paths}
    md, js = write_report(args.out, results, meta)
    strip = args.out / "profiles.png"
    write_image(strip, profile_strip(evaluator, profiles, args.profile_frame))
    print(markdown_table(results), end="")
    print(f"wrote {md}, {js}, {strip}")
    return 0


def _csv(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def cmd_bench(args: argparse.Namespace) -> int:
    """Per-stage latency, frames/s and peak memory of the node's per-frame path; JSON and Markdown."""
    import torch

    from kdbts_ros.bench.latency import Case, markdown, run
    from kdbts_ros.bench.official_forward import OfficialCodeError
    from kdbts_ros.ros.harness import can_publish

    if args.official is not None and "resnet50" not in _csv(args.networks):
        print("kdbts bench: --official runs beside the resnet50 network; add resnet50 to --networks", file=sys.stderr)
        return 2
    devices = _csv(args.device) or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        print("kdbts bench: CUDA was asked for but torch sees no GPU", file=sys.stderr)
        return 2
    publish = args.publish
    if publish is None:
        publish = can_publish()
    cases = [Case(net, dev, path, int(w), args.dtype) for dev in devices for net in _csv(args.networks)
             for path in _csv(args.paths) for w in _csv(args.windows)]
    base = _config(args)
    base.model.compile = base.model.compile or args.compile
    try:
        report = run(base, cases, args.frames, args.warmup, args.depth_scale, publish, args.official)
    except OfficialCodeError as exc:
        print(f"kdbts bench: --official: {exc}", file=sys.stderr)
        return 2
    _write_report(args.out, "bench", report, markdown(report))
    return 0


def _write_report(out: Path, name: str, report: dict, table: str) -> None:
    """Write ``name``.json and ``name``.md into ``out`` and print the table."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1))
    (out / f"{name}.md").write_text(table)
    print(table, end="")
    print(f"wrote {out / f'{name}.json'} and {out / f'{name}.md'}")


def cmd_soak(args: argparse.Namespace) -> int:
    """The live rclpy node under sustained overload: latency percentiles, drops and memory; JSON and Markdown."""
    from kdbts_ros.bench.soak import markdown, run, soak_config

    if args.frames < 20 or args.load_factor <= 0 or min(args.image_size) < 8:
        print("kdbts soak: need --frames >= 20, --load-factor > 0 and an image size of at least 8x8", file=sys.stderr)
        return 2
    cfg = soak_config(load_config(args.config), args.network, args.cameras)
    report = run(cfg, args.frames, args.rate, args.load_factor, tuple(args.image_size),
                 progress=print if args.progress else lambda _line: None)
    _write_report(args.out, "soak", report, markdown(report))
    return 0


def _eval_real(args: argparse.Namespace, models: dict, infos: dict, paths: dict, device) -> int:
    """Depth against projected velodyne scans of a KITTI raw / odometry / KITTI-360 recording;
    on KITTI-360 also occupancy against aggregated scans (the BTS lidar protocol)."""
    from kdbts_ros.core.pipeline import OFFICIAL_INPUT_SIZE
    from kdbts_ros.data.datasets import load_recording
    from kdbts_ros.evaluation.evaluate import TABLE_KEYS, markdown_table, write_report
    from kdbts_ros.evaluation.metrics import DEPTH_KEYS
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
    keys = TABLE_KEYS if occ is not None and occ.truth else DEPTH_KEYS
    results = {}
    for label, model in models.items():
        # the network sees each frame at its training size, as the node does by default
        size = (int(infos[label].get("image_height", OFFICIAL_INPUT_SIZE[0])),
                int(infos[label].get("image_width", OFFICIAL_INPUT_SIZE[1])))
        heads = [h for h in model.available_heads if h == "sv" or len(rec.posed()) > 1]
        for head in heads:
            name = f"{label} ({head.upper()})"
            results[name] = evaluator.run(model, head, size, device)
            print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[name].items() if k != "frames"))
    for prior in PRIORS if args.priors else ():
        results[prior.name] = evaluator.run_prior(prior)
    meta = {"data": str(args.data), "dataset": args.dataset, "recording": rec.name,
            "camera": rec.rig.cameras[0].name, "frames": len(evaluator.frames), "stride": args.stride,
            "ground_truth": "projected velodyne, nearest return per pixel",
            "crop": "none" if args.no_crop else "garg", "max_depth": settings.max_depth,
            "median_scaling": args.median_scaling, "models": paths}
    if occ is not None:
        meta["occupancy"] = {"ground_truth": f"{occupancy.scans} aggregated velodyne scans (BTS lidar protocol), "
                                             "visibility from the ground truth only",
                             "scans": occupancy.scans, "frames": len(occ.truth), "skipped": dict(occ.skipped)}
    md, js = write_report(args.out, results, meta, keys)
    print(markdown_table(results, keys), end="")
    print(f"wrote {md}, {js}")
    return 0


def cmd_kitti2bag(args: argparse.Namespace) -> int:
    """Convert a KITTI raw drive, odometry sequence or KITTI-360 sequence into a ROS 2 bag."""
    from kdbts_ros.data.datasets import conventions, load_recording
    from kdbts_ros.data.kitti_bag import write_recording_bag

    rec = load_recording(args.kind, args.source, args.calib, args.poses, args.sequence, args.cameras)
    posed = len(rec.posed())
    print(f"{rec.name}: {len(rec.frames)} frames ({posed} posed), cameras "
          f"{', '.join(f'{c.name} -> {c.frame_id}' for c in rec.rig.cameras)}")
    print(f"poses: {rec.poses_from}; stamps: {rec.stamps_from}")
    counts = write_recording_bag(rec, args.out, conventions(args.kind), args.storage, args.frames or None,
                                 velodyne=not args.no_velodyne, clock=not args.no_clock)
    print(f"wrote {args.out} ({args.storage})")
    _print_counts(counts)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Run a ROS 2 bag through the node's runner; write its messages plus the node's outputs to a new bag."""
    from kdbts_ros.messages.bag_info import info_beside
    from kdbts_ros.commands.replay import replay

    if args.camera_infos and not args.images:
        raise ConfigError("--camera-infos names the camera_info of each camera of --images; give --images too")
    chosen = {"fixed_frame": args.fixed_frame} if args.fixed_frame else {}
    if args.images:
        chosen["topics.images"] = args.images
        chosen["topics.camera_infos"] = args.camera_infos or [info_beside(t) for t in args.images]
    result = replay(_config(args, chosen), args.bag_in, args.bag_out, args.storage, args.png,
                    png_pitch_deg=args.pitch, pick_cameras=not args.images, pick_fixed_frame=not args.fixed_frame,
                    report=print)
    if result.cut_short and result.processed:
        print(f"kdbts replay: warning: {result.cut_short}", file=sys.stderr)
    print(f"frames processed: {result.processed}")
    print("dropped: " + (", ".join(f"{k} {v}" for k, v in sorted(result.drops.items())) or "none"))
    print("faults worked around: " + (", ".join(f"{k} {v}" for k, v in sorted(result.faults.items())) or "none"))
    if result.skipped:
        print("left out (node output topics or unknown types): "
              + ", ".join(f"{k} {v}" for k, v in sorted(result.skipped.items())))
    print(f"wrote {args.bag_out} ({args.storage})")
    _print_counts(result.written)
    if args.png:
        print(f"wrote {len(result.pngs)} PNGs to {args.png}")
    if not result.processed:  # one line: what was read of a bag cut short, and that it held no whole frame
        print(f"kdbts replay: {result.cut_short or args.bag_in}; no frame was processed"
              + (" (see the drops above)" if result.drops else ""), file=sys.stderr)
        return 1
    return 0


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    """Where the parts of a KITTI raw / odometry / KITTI-360 recording are, when not in the standard layout."""
    p.add_argument("--sequence", help="kitti360: sequence name, e.g. 2013_05_28_drive_0000_sync")
    p.add_argument("--calib", type=Path, help="raw: the date folder with calib_*.txt (default: SOURCE/..); "
                                             "odometry: calib.txt (default: SOURCE/calib.txt); "
                                             "kitti360: the calibration folder (default: SOURCE/calibration)")
    p.add_argument("--poses", type=Path, help="raw: ORB-SLAM pose file (default: the drive's OXTS packets); "
                                             "odometry: poses/NN.txt (default: SOURCE/../../poses/NN.txt); "
                                             "kitti360: poses.txt (default: data_poses/SEQ/poses.txt)")
    p.add_argument("--cameras", nargs="+", help="dataset camera folders, e.g. image_02 image_03; kitti360: "
                                                "image_00 image_01 (perspective), image_02 image_03 (fisheyes, "
                                                "as virtual pinholes) (default: every one present; eval scores "
                                                "the first)")


def build_parser() -> argparse.ArgumentParser:
    """The ``kdbts`` argument parser with one sub-command per tool."""
    parser = argparse.ArgumentParser(prog="kdbts", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every dropped input")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the node's pipeline on a short posed sequence (no ROS, no GPU)")
    _add_config_args(demo)
    demo.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    demo.add_argument("--frames", type=int, default=8, help="frames to process (default: 8)")
    demo.add_argument("--source", choices=("auto", "kitti", "synthetic"), default="auto",
                      help="auto: the KITTI sample when --kitti exists, else a procedural street")
    demo.add_argument("--kitti", type=Path, default=DEFAULT_KITTI,
                      help=f"folder of the shared KITTI samples (default: {DEFAULT_KITTI}, "
                           "or $KDBTS_KITTI_SAMPLE)")
    demo.set_defaults(func=cmd_demo)
    imp = sub.add_parser("import", help="convert an official BTS / MVBTS / KDBTS checkpoint (.pt) to .safetensors")
    imp.add_argument("checkpoint", type=Path, help="official training checkpoint (torch.save file)")
    imp.add_argument("out", type=Path, help="output .safetensors file")
    imp.set_defaults(func=cmd_import)
    wt = sub.add_parser("weights", help="list the released official BTS / MVBTS / KDBTS checkpoints, or download "
                                        "and import them into the cache (then usable by name as a checkpoint)")
    wt_sub = wt.add_subparsers(dest="action", required=True)
    wt_sub.add_parser("list", help="names, sources and which are cached")
    get = wt_sub.add_parser("get", help="download (progress bar), check, import into the cache; prints each path")
    get.add_argument("names", nargs="+", choices=RELEASES, metavar="NAME", help=f"one of {', '.join(RELEASES)}")
    get.add_argument("--url", help="base URL to download from instead of $KDBTS_WEIGHTS_URL or the authors' webshare")
    get.add_argument("--force", action="store_true", help="download again even when cached")
    wt.set_defaults(func=cmd_weights)
    viz = sub.add_parser("viz", help="one PNG: input, depth and bird's-eye density profile (paper Figs. 4-5)")
    _add_config_args(viz)
    viz.add_argument("image", type=Path, help="input image (any size; shown at its size, resized for the network)")
    viz.add_argument("--out", type=Path, default=Path("kdbts_viz.png"), help="output PNG (default: kdbts_viz.png)")
    viz.add_argument("--preset", choices=("kitti360", "kitti_raw"), default="kitti360",
                     help="default intrinsics (normalised, so any image size) and camera pitch")
    viz.add_argument("--intrinsics", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"),
                     help="pixel intrinsics of the given image instead of a preset")
    viz.add_argument("--head", choices=("sv", "mv"), help="density head (default: sv)")
    viz.set_defaults(func=cmd_viz)
    params = sub.add_parser("params", help="print the parameter table (node parameters and config keys)")
    params.add_argument("--format", choices=("yaml", "markdown"), default="yaml",
                        help="yaml: a commented parameter file like config/default.yaml")
    params.add_argument("--train", action="store_true", help="the training settings (kdbts train --config) instead")
    params.set_defaults(func=cmd_params)
    synth = sub.add_parser("synth", help="write procedural multi-camera street sequences (KITTI-style folder)")
    synth.add_argument("out", type=Path, help="dataset root; one folder seed_<NNNN> per seed plus rig.json")
    seeds = synth.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, nargs="+", default=[0], help="scene seeds (default: 0)")
    seeds.add_argument("--seed-range", type=int, nargs=2, metavar=("START", "STOP"),
                       help="seeds START, START+1, ..., STOP-1 (instead of --seeds)")
    synth.add_argument("--frames", type=int, default=40, help="frames per sequence (default: 40)")
    synth.add_argument("--step", type=float, default=1.0, help="metres driven per frame (default: 1.0)")
    synth.add_argument("--width", type=int, default=320, help="image width in pixels (default: 320)")
    synth.add_argument("--height", type=int, default=96, help="image height in pixels (default: 96)")
    synth.add_argument("--bag", action="store_true",
                       help="also write each sequence as an mcap ROS 2 bag (tf, images, camera_info)")
    synth.set_defaults(func=cmd_synth)
    tr = sub.add_parser("train", help="train BTS / MVBTS / KDBTS (single process or under torchrun with DDP)")
    tr.add_argument("--config", type=Path, help="training YAML (see config/train_*.yaml); default: built-in")
    tr.add_argument("--out", type=Path, required=True,
                    help="run folder: checkpoint.safetensors, state.pt (resume), metrics.jsonl, tb/")
    tr.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override settings, e.g. iterations=100 loss.kd=0.05")
    tr.add_argument("--restart", action="store_true", help="ignore OUT/state.pt and start from step 0")
    tr.add_argument("--max-minutes", type=float, default=0.0,
                    help="stop after this much wall-clock time (0: run all iterations)")
    tr.set_defaults(func=cmd_train)
    k2b = sub.add_parser("kitti2bag", help="convert a KITTI raw drive, odometry sequence or KITTI-360 sequence "
                                           "into a ROS 2 bag (images, camera_info, TF, velodyne, /clock)")
    k2b.add_argument("kind", choices=("raw", "odometry", "kitti360"), help="dataset layout")
    k2b.add_argument("source", type=Path, help="raw: the drive folder (image_0k/data); odometry: the sequence "
                                              "folder (image_k, calib.txt); kitti360: the dataset root")
    k2b.add_argument("out", type=Path, help="bag folder to create")
    _add_dataset_args(k2b)
    k2b.add_argument("--frames", type=int, default=0, help="convert only the first N frames (default: all)")
    k2b.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="bag storage (default: mcap)")
    k2b.add_argument("--no-velodyne", action="store_true", help="leave the velodyne scans out")
    k2b.add_argument("--no-clock", action="store_true",
                     help="leave /clock out (for players that publish their own, e.g. ros2 bag play --clock)")
    k2b.set_defaults(func=cmd_kitti2bag)
    rp = sub.add_parser("replay", help="run a ROS 2 bag through the node's pipeline; write inputs plus outputs "
                                       "to a new bag (and optional PNGs)")
    _add_config_args(rp)
    rp.add_argument("bag_in", type=Path, help="input ROS 2 bag (mcap or sqlite3), e.g. from kdbts kitti2bag")
    rp.add_argument("bag_out", type=Path, help="output bag folder to create")
    rp.add_argument("--png", type=Path, metavar="DIR", help="also write occupancy_<stamp>.png, depth_<stamp>.png "
                    "and figure_<stamp>.png (input, depth, density profile) of every processed frame; the figure "
                    "encodes the image again and queries the profile: slower")
    rp.add_argument("--pitch", type=float, default=0.0, metavar="DEG",
                    help="camera pitch to the road, for the figures' density profile (default: 0; KITTI-360: 5)")
    rp.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="output storage (default: mcap)")
    rp.add_argument("--images", nargs="+", metavar="TOPIC", help="image topic of each camera, the first the one the "
                    "outputs are made for (default: the config's; when the bag lacks them, every image topic "
                    "of the bag with a camera_info beside it)")
    rp.add_argument("--camera-infos", nargs="+", metavar="TOPIC", help="camera_info topic of each camera of --images "
                    "(default: <namespace>/camera_info beside each)")
    rp.add_argument("--fixed-frame", metavar="FRAME", help="frame poses are looked up in (default: the config's; "
                    "when the bag's TF lacks it, the root of its TF tree)")
    rp.set_defaults(func=cmd_replay)
    ev = sub.add_parser("eval", help="occupancy (O_acc, IE_acc, IE_rec) and depth metrics of checkpoints, "
                                     "every head side by side (real KITTI data: depth against velodyne; KITTI-360 also "
                                     "occupancy against aggregated scans)")
    ev.add_argument("data", type=Path, help="held-out dataset folder (kdbts synth), or a KITTI recording as "
                                           "kdbts kitti2bag's SOURCE with --dataset")
    ev.add_argument("--dataset", choices=("synth", "raw", "odometry", "kitti360"), default="synth",
                    help="synth: occupancy and depth against exact geometry; raw|odometry|kitti360: depth against "
                         "the projected velodyne (Garg crop, 80 m cap), kitti360 also occupancy against "
                         "aggregated scans (default: synth)")
    _add_dataset_args(ev)
    ev.add_argument("--no-crop", action="store_true", help="real data: score the whole image, not the Garg crop")
    ev.add_argument("--occ-scans", type=int, default=20, metavar="J",
                    help="kitti360: scans aggregated for occupancy ground truth; a frame needs a pose, J - 1 "
                         "posed successors and a scan for each (default: 20, official)")
    ev.add_argument("--median-scaling", action="store_true",
                    help="real data: scale each prediction by median(gt) / median(pred) (monocular protocol)")
    ev.add_argument("--priors", action="store_true",
                    help="real data: also score image-free baselines, a constant 15 m depth and a flat road 1.65 m "
                         "below the camera with a wall at 30 m (behind their surface counts as occupied)")
    ev.add_argument("--model", nargs="+", required=True, metavar="LABEL=CHECKPOINT",
                    help="checkpoints (files, or fetched names from 'kdbts weights list') to evaluate, each "
                         "optionally labelled, e.g. BTS=runs/bts/checkpoint.safetensors KDBTS=kitti-360")
    ev.add_argument("--out", type=Path, default=Path("eval_out"),
                    help="folder for results.md, results.json and profiles.png (default: eval_out)")
    ev.add_argument("--stride", type=int, default=8, help="evaluate every N-th frame of each sequence (default: 8)")
    ev.add_argument("--profile-frame", type=int, default=0, help="index of the evaluated frame shown in profiles.png")
    ev.add_argument("--device", default="auto", help="torch device (default: auto)")
    ev.set_defaults(func=cmd_eval)

    be = sub.add_parser("bench", help="per-stage latency, frames/s and peak memory of the node's per-frame path "
                                      "(not a test: run it on a quiet machine)")
    _add_config_args(be)
    be.add_argument("--device", default="", help="comma-separated torch devices (default: cpu, and cuda when "
                    "available)")
    be.add_argument("--networks", default="resnet50,embedded",
                    help="comma-separated: resnet50 (official network at 192x640, seeded random weights), embedded "
                    "(the shipped KDBTS network), or checkpoint paths (default: resnet50,embedded)")
    be.add_argument("--windows", default="1,2,4,8",
                    help="comma-separated window sizes; 1 runs the SV head, more the MV head (default: 1,2,4,8)")
    be.add_argument("--paths", default="fast", help="comma-separated: fast, reference (model.fast) (default: fast)")
    be.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                    help="compute dtype (default: float32)")
    be.add_argument("--frames", type=int, default=20, help="frames of the input stream (default: 20)")
    be.add_argument("--warmup", type=int, help="frames processed before timing starts (default: the window size)")
    be.add_argument("--depth-scale", type=float,
                    help="depth image size relative to the network input (default: 0.25 on CPU, 1 on CUDA)")
    be.add_argument("--compile", action="store_true", help="set model.compile (torch.compile the encoder; CUDA "
                    "graphs on CUDA); give --warmup for the compilation frames")
    be.add_argument("--publish", action=argparse.BooleanOptionalAction, default=None,
                    help="go through the rclpy node and publish to subscribers (default: when rclpy and the "
                    "kdbts_ros messages are importable)")
    be.add_argument("--official", type=Path, metavar="PATH",
                    help="a checkout of the official code (github.com/keonhee-han/KDBTS): per device and window of "
                    "the resnet50 cases, also time its own forward pass (its encode of every window frame and its "
                    "density query of the grid cell centres, fp32) on the same frames with the same weights, and "
                    "report the largest difference of its densities from our reference path's (default: off)")
    be.add_argument("--out", type=Path, default=Path("bench_out"),
                    help="folder for bench.json and bench.md (default: bench_out)")
    be.set_defaults(func=cmd_bench)

    so = sub.add_parser("soak", help="the live rclpy node fed faster than it keeps up: latency percentiles per "
                                     "tenth of the run, drops and memory (not a test: run it on a quiet machine)")
    so.add_argument("--config", type=Path, help="YAML parameter file (the node's format); default: built-in")
    so.add_argument("--network", default="",
                    help="resnet50 (official network at 192x640, seeded random weights), embedded (the shipped "
                    "KDBTS network) or a checkpoint path (default: the config's model.checkpoint, i.e. embedded "
                    "unless the config names another)")
    so.add_argument("--frames", type=int, default=10000, help="rig frames to publish (default: 10000)")
    so.add_argument("--rate", type=float, default=0.0,
                    help="publish rate in Hz; 0: measure the node's sustained rate in a closed loop first and "
                    "publish at --load-factor times it (default: 0)")
    so.add_argument("--load-factor", type=float, default=2.0,
                    help="publish rate over the measured sustained rate, with --rate 0 (default: 2)")
    so.add_argument("--image-size", type=int, nargs=2, default=[640, 192], metavar=("W", "H"),
                    help="input image size in pixels (default: 640 192)")
    so.add_argument("--cameras", type=int, choices=(1, 2), default=1,
                    help="2: a second camera on /right/image_raw/compressed (jpeg), so rig frames and decoding "
                    "are exercised (default: 1)")
    so.add_argument("--out", type=Path, default=Path("soak_out"),
                    help="folder for soak.json and soak.md (default: soak_out)")
    so.add_argument("--progress", action="store_true", help="print a line per tenth of the run")
    so.set_defaults(func=cmd_soak)
    for command in sub.choices.values():  # after the command as well as before it; SUPPRESS keeps an earlier one
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kdbts`` command.

    A failure the user caused (a missing, unreadable, truncated, corrupt or hostile file, a bad
    setting, a full disk, Ctrl-C or SIGTERM) is one line ``kdbts <command>: <file>: <what>`` on
    stderr and an exit code (:mod:`kdbts_ros.core.errors`); anything else is a bug and keeps its
    traceback. ``--debug`` or ``KDBTS_DEBUG=1`` print the traceback of every failure.
    """
    import cv2

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(message)s")
    # a corrupt image is reported as one line by the loader; OpenCV's own warnings would add more
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    stdout = sys.stdout
    try:
        with signals_as_exceptions():
            sys.stdout = _NamedStdout(stdout)
            status = args.func(args)
            sys.stdout.flush()  # a full disk or a closed pipe shows now, not when Python exits
            return status
    except BaseException as exc:  # noqa: BLE001 - classified below; bugs are re-raised untouched
        failure = classify(exc)
        if failure is None:
            raise
        if debug:
            traceback.print_exc()
        print(f"kdbts {args.command}: {failure.line}", file=sys.stderr)
        return failure.code
    finally:
        sys.stdout = stdout if not isinstance(sys.stdout, _NamedStdout) or not sys.stdout.failed else \
            open(os.devnull, "w")  # noqa: SIM115 - unflushed text would fail again when Python exits


class _NamedStdout:
    """sys.stdout whose write errors (a full disk, a closed pipe) name it, as file errors name their file."""

    def __init__(self, stream):
        self.stream, self.failed = stream, False

    def write(self, text: str) -> int:
        return self._named(self.stream.write, text)

    def flush(self) -> None:
        self._named(self.stream.flush)

    def _named(self, call, *args):
        try:
            return call(*args)
        except OSError as exc:
            self.failed = True
            exc.filename = exc.filename or "<stdout>"
            raise

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


if __name__ == "__main__":
    sys.exit(main())
