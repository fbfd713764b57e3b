"""The training loop: single process, or one process per GPU/CPU under ``torchrun`` (DDP).

Writes into the output folder:
  ``checkpoint.safetensors``  the trained network (project format, loadable by the node), its info holding
                              the compact state (step, scheduler, RNGs: a few kB)
  ``state.pt``                resumable state (weights, optimiser, scheduler, RNGs, step)

A run resumes from ``state.pt``; without one (it is 3x the network, too big to commit), from a
checkpoint's weights and compact state (``OUT/checkpoint.safetensors``, or ``resume_from``: the
committed default), at the same step, batch order and learning rate. Only Adam's moment estimates
start again from zero: they re-form within a few dozen steps (Adam's beta2 horizon is 1000 steps, but
its bias correction restarts with them).
  ``metrics.jsonl``           one record per ``log_every`` steps (also TensorBoard events in ``tb/``)
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from kdbts_ros.core.lens import CanonicalCamera, Lens
from kdbts_ros.core.loading import pick_device
from kdbts_ros.core.model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_torch_file,
    random_model,
    save_checkpoint,
)
from kdbts_ros.core.model.network import DensityField
from kdbts_ros.data.datasets import load_recording
from kdbts_ros.data.records import RecordingFrames
from kdbts_ros.data.synth_folder import ResampledSynthFolder, SynthFolder
from kdbts_ros.training.config import SourceConfig, TrainConfig, TrainDataConfig
from kdbts_ros.training.objective import Objective
from kdbts_ros.training.samples import MixedFrames, PosedFrames, SourceBatches, TrainingFrames, seed_worker

TRAINED_HEADS = {"bts": ["sv"], "mvbts": ["mv"], "kdbts": ["sv", "mv"]}
RAW_COLOUR_PAIR = ("image_02", "image_03")


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _device(name: str, local_rank: int) -> torch.device:
    device = pick_device(name)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank)
    return device


def training_camera(data: TrainDataConfig, first: Lens) -> CanonicalCamera:
    """The camera every source is seen through: ``data.camera`` (else the first source's first camera) at
    ``data.width`` x ``data.height`` (else that camera's size)."""
    width, height = (data.width, data.height) if data.width and data.height else (first.width, first.height)
    normalised = data.normalised_camera()
    if normalised is None:
        return CanonicalCamera.of(first, width, height)
    return CanonicalCamera.from_normalised(normalised, width, height)


def source_frames(src: SourceConfig, data: TrainDataConfig, camera: CanonicalCamera | None) -> PosedFrames:
    """The posed frames one ``data.sources`` line names, seen through ``camera`` (None: the training camera this
    source, as the first, defines)."""
    if src.format == "synth":
        folder = SynthFolder(Path(src.root))
        lens = Lens.pinhole(folder.Ks[0], folder.width, folder.height)
        return ResampledSynthFolder(folder, camera or training_camera(data, lens))
    cameras = [c for c in src.cameras.split(",") if c] or None
    if src.format == "raw" and cameras is None:
        # the official KITTI raw loaders train on the colour pair; the grey pair is another rig
        cameras = [c for c in RAW_COLOUR_PAIR if (Path(src.root) / c).is_dir()] or None
    rec = load_recording(
        src.format,
        Path(src.root),
        Path(src.calib) if src.calib else None,
        Path(src.poses) if src.poses else None,
        src.sequence or None,
        cameras,
    )
    first = rec.rig.cameras[rec.rig.camera(cameras[0]) if cameras else 0]
    return RecordingFrames([rec], cameras, camera or training_camera(data, first.lens()))


def build_dataset(cfg: TrainConfig, seed: int) -> MixedFrames:
    """The training samples of every configured source, each drawn with its weight, all in one training camera."""
    d = cfg.data
    sources = d.parsed_sources()
    camera: CanonicalCamera | None = None
    frames = []
    for k, src in enumerate(sources):
        posed = source_frames(src, d, camera)
        camera = posed.camera
        frames.append(
            TrainingFrames(
                posed,
                d.side_offset,
                d.flip_lr,
                d.colour_jitter,
                seed + 7919 * k,
                layout=src.layout,
                grey=d.grey,
                min_motion=d.min_motion,
                hints=(cfg.loss.motion_hints if src.layout == "mono" else cfg.loss.stereo_hints) > 0,
                depth_range=(cfg.model.z_near, cfg.model.z_far),
                crop_padding=d.crop_padding,
            )
        )
    return MixedFrames(frames, [src.weight for src in sources])


def initial_model(cfg: TrainConfig) -> DensityField:
    """Weights to start from: init_checkpoint, else seeded random weights."""
    if cfg.init_checkpoint:
        model, _ = load_checkpoint(cfg.init_checkpoint)
        arch = cfg.model.architecture()
        if dataclasses.replace(model.arch, grey_input=arch.grey_input) == arch:
            model.arch = arch  # same weights, only the input changes: a colour network fine-tunes to grey input
        if model.arch != arch:
            raise CheckpointError(
                f"{cfg.init_checkpoint}: init_checkpoint architecture {model.arch} differs from the config's {arch}"
            )
        return model
    return random_model(cfg.model.architecture(), cfg.seed)


def _loop(loader: DataLoader) -> Iterator[dict[str, torch.Tensor]]:
    """Batches forever (the batch sampler draws afresh on every pass)."""
    while True:
        yield from loader


def train(
    cfg: TrainConfig,
    out_dir: Path,
    resume: bool = True,
    max_minutes: float = 0.0,
    progress: bool = True,
    resume_from: Path | None = None,
) -> DensityField:
    """Train as configured; returns the trained network (every rank's copy is identical under DDP).

    ``resume``: continue from ``out_dir/state.pt``, else from the compact state of ``resume_from`` (default
    ``out_dir/checkpoint.safetensors``) when it has one."""
    rank, world, local_rank = _distributed()
    device = _device(cfg.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL binds each process's collectives to its current device
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    model = initial_model(cfg).to(device)
    model.available_heads = ["sv", "mv"]  # both modules exist while training; the checkpoint records the trained ones
    objective = Objective(model, cfg, cfg.seed + 1000 * rank).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimiser, cfg.lr_step, cfg.lr_gamma)
    dataset = build_dataset(cfg, cfg.seed + rank)
    camera = dataset.sources[0].source.camera
    # every rank draws its own batches (seeded by rank): DDP needs no shared sampler
    batches = SourceBatches(dataset, cfg.batch_size, torch.Generator().manual_seed(cfg.seed + 1000 * rank))
    info = {
        "method": cfg.method,
        "teacher": cfg.teacher if cfg.method == "kdbts" else "",
        "data": "; ".join(cfg.data.sources),
        "image_height": camera.height,
        "image_width": camera.width,
        "camera": camera.record(),  # what the runtime resamples every frame into
    }
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=cfg.workers, worker_init_fn=seed_worker)

    step = 0
    state_path = out_dir / "state.pt"
    compact_path = Path(resume_from) if resume_from else out_dir / "checkpoint.safetensors"
    if resume and state_path.exists():
        # our own file, but loaded without pickle execution all the same
        step = _resume(state_path, load_torch_file(state_path), model, optimiser, scheduler, objective, batches)
    elif resume and compact_path.is_file():
        saved, saved_info = load_checkpoint(compact_path)
        compact: dict | None = saved_info.get("resume")  # none in a checkpoint written before it was recorded: step 0
        if compact:
            state = {
                **compact,
                "model": saved.state_dict(),
                "generator": _unb64(compact["generator"]),
                "batches": _unb64(compact["batches"]),
            }
            step = _resume(compact_path, state, model, optimiser, scheduler, objective, batches)
    wrapped = (
        DistributedDataParallel(objective, device_ids=[local_rank] if device.type == "cuda" else None)
        if world > 1
        else objective
    )
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tb"), purge_step=step)
        (out_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    model.train()
    if objective.frozen_teacher:
        model.encoder.eval()  # frozen BatchNorm statistics as well as weights

    start = time.monotonic()
    bar = tqdm(total=cfg.iterations, initial=step, disable=not (progress and rank == 0), desc=cfg.method)
    # a fresh run (no state, or --restart) starts a fresh log; a resumed one appends
    log = open(out_dir / "metrics.jsonl", "a" if step else "w") if rank == 0 else None  # noqa: SIM115 - closed in finally
    try:
        stream = _loop(loader)
        # the stop test comes before the next batch is drawn: a saved state must not have drawn one it never used
        while step < cfg.iterations and not (max_minutes and time.monotonic() - start > 60 * max_minutes):
            batch = {k: v.to(device) for k, v in next(stream).items()}
            losses = wrapped(batch)
            optimiser.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimiser.step()
            scheduler.step()
            step += 1
            bar.update(1)
            if log is not None and writer is not None and (step % cfg.log_every == 0 or step == cfg.iterations):
                record = {
                    "step": step,
                    "time_s": round(time.monotonic() - start, 2),
                    "lr": scheduler.get_last_lr()[0],
                    **{k: float(v.detach()) for k, v in losses.items()},
                }
                log.write(json.dumps(record) + "\n")
                log.flush()
                for k, v in record.items():
                    if k != "step":
                        writer.add_scalar(f"train/{k}", v, step)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.iterations:
                _save(cfg, model, optimiser, scheduler, objective, batches, step, out_dir, rank, info)
    finally:
        bar.close()
        if log:
            log.close()
        if writer:
            writer.close()
    _save(cfg, model, optimiser, scheduler, objective, batches, step, out_dir, rank, info)
    if world > 1:
        dist.barrier()
    model.available_heads = TRAINED_HEADS[cfg.method]
    return model


def _save(
    cfg: TrainConfig,
    model: DensityField,
    optimiser,
    scheduler,
    objective: Objective,
    batches: SourceBatches,
    step: int,
    out_dir: Path,
    rank: int,
    info: dict,
) -> None:
    """Resumable state and the network checkpoint (rank 0 only; ranks hold identical weights)."""
    if rank != 0:
        return
    state = {
        "model": model.state_dict(),
        "optimiser": optimiser.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generator": objective.generator.get_state(),
        "batches": batches.generator.get_state(),
        "augmentation": batches.data.augmentation_state,
        "step": step,
    }
    tmp = out_dir / "state.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(out_dir / "state.pt")  # atomic: a crash mid-write never corrupts the last state
    heads = model.available_heads
    model.available_heads = TRAINED_HEADS[cfg.method]
    compact = {
        **{k: state[k] for k in ("step", "scheduler", "augmentation")},
        "generator": _b64(state["generator"]),
        "batches": _b64(state["batches"]),
    }
    try:
        save_checkpoint(out_dir / "checkpoint.safetensors", model, {**info, "step": step, "resume": compact})
    finally:
        model.available_heads = heads


def _b64(state: torch.Tensor) -> str:
    """A generator's state (a uint8 tensor) as text for the checkpoint's JSON info."""
    return base64.b64encode(state.numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def _resume(
    path: Path, state: dict, model: DensityField, optimiser, scheduler, objective: Objective, batches: SourceBatches
) -> int:
    """Load a saved state (as :func:`_save` writes it; a compact one has no optimiser: Adam's moments start
    again) into this run; its step."""
    try:
        model.load_state_dict(state["model"])
        if "optimiser" in state:
            optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        objective.generator.set_state(state["generator"])
        if "batches" in state:  # states written before sources were mixed have none
            batches.generator.set_state(state["batches"])
        if "augmentation" in state:  # nor before the augmentation streams were kept
            batches.data.augmentation_state = state["augmentation"]
        return int(state["step"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # another run's state, or a damaged one
        raise CheckpointError(
            f"{path}: does not resume this run ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); --restart ignores it"
        ) from exc
