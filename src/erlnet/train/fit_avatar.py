"""`erlnet train-avatar`: train an avatar on a subject.

Run directory (= the avatar directory):

```
AVATAR_DIR/
  config.json, model.safetensors   the avatar bundle (exported at checkpoints, at the end, on Ctrl-C)
  checkpoints/last.ckpt            Lightning checkpoint of the latest state (`--resume` continues it)
  previews/train_0001000.png       prediction | truth | |error| x4 | head alpha | torso alpha
  logs/version_N/                  metrics (CSV or TensorBoard), one version per (re)start
  train_config.json                the settings of the run
```
Multi-GPU runs go through Lightning's strategies (`--strategy ddp --devices 4`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Subset

from erlnet.errors import InputError
from erlnet.render.avatar import AvatarMeta, save_avatar
from erlnet.render.base import Renderer
from erlnet.render.dbf import DBFConfig
from erlnet.render.losses import RenderLoss
from erlnet.train.avatar import AvatarSystem, OptimConfig, PhaseConfig
from erlnet.train.data import DataConfig, SubjectDataModule, batch_condition, evenly_spaced
from erlnet.train.trainer import TrainerConfig, build_trainer, quiet_lightning

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
RUN_CONFIG = "train_config.json"


class AvatarCheckpoint(Callback):
    """Saves checkpoints/last.ckpt and exports the avatar bundle every `every` steps, at the end of
    training, and on Ctrl-C (Lightning's graceful shutdown calls `on_exception`)."""

    def __init__(self, avatar_dir: Path, every: int) -> None:
        self.avatar_dir = Path(avatar_dir)
        self.every = every
        self._saved_step = -1

    @property
    def path(self) -> Path:
        return self.avatar_dir / CHECKPOINTS / LAST

    def save(self, trainer: L.Trainer, system: AvatarSystem) -> None:
        if trainer.global_step == self._saved_step:
            return
        trainer.save_checkpoint(self.path)  # every rank calls it; rank 0 writes
        if trainer.is_global_zero:
            system.meta.train_steps = int(trainer.global_step)
            save_avatar(self.avatar_dir, system.renderer, system.meta)
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.every > 0 and trainer.global_step > 0 and trainer.global_step % self.every == 0:
            self.save(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.save(trainer, pl_module)
            log.warning("interrupted at step %d: saved %s and the avatar in %s",
                        trainer.global_step, self.path, self.avatar_dir)


@dataclass
class AvatarTrainConfig:
    """Everything `erlnet train-avatar` can set."""

    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    renderer: DBFConfig = field(default_factory=DBFConfig)
    loss: RenderLoss = field(default_factory=RenderLoss)
    optim: OptimConfig = field(default_factory=OptimConfig)
    phases: PhaseConfig = field(default_factory=PhaseConfig)


@dataclass
class TrainResult:
    """What `train_avatar` did."""

    avatar_dir: Path
    start_step: int  # step the run started from (0, or the resumed checkpoint's)
    steps: int  # step reached (the exported avatar's `train_steps`)
    metrics: dict[str, float]  # last logged values (train/loss, train/psnr, val/psnr, ...)
    main_process: bool = True  # False in the extra processes a DDP launcher started (report from one only)


def _run_record(cfg: AvatarTrainConfig) -> dict[str, Any]:
    def plain(x: Any) -> Any:
        if hasattr(x, "to_dict"):
            return x.to_dict()
        return asdict(x) if is_dataclass(x) else {"type": type(x).__name__}

    return {k: plain(getattr(cfg, k)) for k in ("trainer", "data", "renderer", "loss", "optim", "phases")}


def _check_avatar_dir(avatar_dir: Path, resume: bool, record: dict[str, Any]) -> Path | None:
    """The checkpoint to resume from (None for a fresh run); refuses unsafe combinations."""
    ckpt = avatar_dir / CHECKPOINTS / LAST
    if resume:
        if not ckpt.exists():
            raise InputError(f"{avatar_dir}: nothing to resume (no {CHECKPOINTS}/{LAST}); drop --resume to start")
        old_path = avatar_dir / RUN_CONFIG
        if old_path.exists():
            old = json.loads(old_path.read_text())
            new = json.loads(json.dumps(record, default=str))  # same JSON types (tuples -> lists)
            changed = [f"renderer.{k}" for k in sorted(set(old.get("renderer", {})) | set(new["renderer"]))
                       if old.get("renderer", {}).get(k) != new["renderer"].get(k)]
            if old.get("data", {}).get("image_size") != new["data"]["image_size"]:
                changed.append("data.image_size")
            if changed:
                raise InputError(f"{avatar_dir}: --resume with other settings than the checkpoint "
                                 f"({', '.join(changed)}); use the same settings")
        return ckpt
    if ckpt.exists():
        raise InputError(f"{avatar_dir}: holds a training run already; pass --resume to continue it "
                         "or choose another directory")
    if avatar_dir.exists() and (not avatar_dir.is_dir() or any(avatar_dir.iterdir())):
        raise InputError(f"{avatar_dir}: exists and is not an avatar run; choose an empty or new directory")
    return None


def _launched_worker() -> bool:
    """True in a process that a DDP launcher started besides the main one (Lightning's `ddp`
    re-runs the command with LOCAL_RANK > 0; torchrun and SLURM set RANK / SLURM_PROCID)."""
    return any(int(os.environ.get(v, "0") or 0) > 0 for v in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def prepare_renderer(renderer: Renderer, data: SubjectDataModule, meta: AvatarMeta, max_frames: int = 200,
                     batch_size: int = 16) -> None:
    """Show a new renderer its training data once: the neutral face, expression statistics of all
    training frames, and the silhouettes (masks + poses) of up to `max_frames` evenly spaced ones for `carve`."""
    train_idx = data.train_set.indices
    renderer.set_face(torch.from_numpy(meta.neutral).float())
    renderer.set_expression_stats(torch.from_numpy(data.subject.tracking()["expression"][train_idx]))
    frames = Subset(data.train_set, evenly_spaced(np.arange(len(train_idx)), max_frames).tolist())
    background = meta.background_tensor()
    ref_r = torch.from_numpy(meta.ref_rotation).float()
    ref_t = torch.from_numpy(meta.ref_translation).float()
    for batch in DataLoader(frames, batch_size=batch_size):
        renderer.carve(batch_condition(batch, background, ref_r, ref_t), batch["labels"])


def train_avatar(subject_dir: str | Path, avatar_dir: str | Path, config: AvatarTrainConfig | None = None,
                 resume: bool = False, progress: bool = True, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train an avatar on a preprocessed subject into `avatar_dir` (bundle + checkpoints + previews).

    With `resume`, continue from avatar_dir/checkpoints/last.ckpt up to `config.trainer.max_steps`.
    Ctrl-C saves a checkpoint and exports the avatar, then re-raises `KeyboardInterrupt`.
    """
    cfg = config or AvatarTrainConfig()
    avatar_dir = Path(avatar_dir)
    record = _run_record(cfg)
    worker = _launched_worker()
    if worker:  # rank 0 checked the directory and already started writing into it
        ckpt = avatar_dir / CHECKPOINTS / LAST if resume else None
    else:
        ckpt = _check_avatar_dir(avatar_dir, resume, record)
    start = int(torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)["global_step"]) if ckpt else 0
    if start >= cfg.trainer.max_steps:
        raise InputError(f"{avatar_dir}: already trained for {start} steps; raise --max-steps to continue")
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    data = SubjectDataModule(subject_dir, cfg.data)
    meta = AvatarMeta.from_subject(data.subject, data.image_size)
    renderer = cfg.renderer.setup(meta.expression_dim, meta.image_size)
    if ckpt is None:  # a resumed run restores these from its checkpoint
        prepare_renderer(renderer, data, meta)
    system = AvatarSystem(renderer, cfg.loss, meta, cfg.trainer.max_steps, cfg.optim, cfg.phases,
                          preview_dir=avatar_dir / "previews", preview_every=cfg.trainer.preview_every,
                          budget_s=60.0 * cfg.trainer.max_minutes)
    avatar_dir.mkdir(parents=True, exist_ok=True)
    if not worker:
        (avatar_dir / RUN_CONFIG).write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    saver = AvatarCheckpoint(avatar_dir, cfg.trainer.checkpoint_every)
    trainer = build_trainer(cfg.trainer, avatar_dir, [saver, *callbacks], progress=progress)
    handler = signal.getsignal(signal.SIGINT)
    try:
        with quiet_lightning():
            trainer.fit(system, datamodule=data, ckpt_path=ckpt)
    except SystemExit:
        # Lightning turns Ctrl-C into a graceful shutdown (our callback saved everything) + sys.exit(1).
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores SIGINT after an interrupt
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    # With ddp_spawn the processes that trained are gone: the exported bundle records the step.
    header = json.loads((avatar_dir / "config.json").read_text())
    steps = int(header.get("config", {}).get("train_steps", trainer.global_step))
    return TrainResult(avatar_dir=avatar_dir, start_step=start, steps=steps, metrics=metrics, main_process=not worker)
