"""The one place a Lightning `Trainer` is built, from a small typed `TrainerConfig`.

Multi-GPU runs go through Lightning's strategies (`--strategy ddp --devices 4`); no home-made
launcher. Used by avatar training (`erlnet.train.fit_avatar`) and motion training.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import Callback

from erlnet.errors import InputError

log = logging.getLogger(__name__)



@dataclass
class TrainerConfig:
    """How training runs (devices, precision, logging, checkpoints)."""

    max_steps: int = 30000  # optimisation steps in total (a resumed run continues up to this)
    max_minutes: float = 0.0  # also stop after this much training wall time (0 = no limit)
    devices: str = "auto"  # Lightning devices: "auto", a count ("2") or ids ("0,1")
    accelerator: str = "auto"  # "auto", "cpu", "gpu", "cuda", "mps"
    strategy: str = "auto"  # Lightning strategy: "auto", "ddp", "ddp_spawn", "fsdp", ...
    precision: str = "32-true"  # "32-true", "16-mixed", "bf16-mixed"
    log_every: int = 50  # log metrics every N steps
    preview_every: int = 1000  # avatar training: write a preview PNG every N steps (0 = never)
    checkpoint_every: int = 1000  # save checkpoints/last.ckpt and export the model (avatar / motion model) every N steps
    val_every: int = 2000  # validate every N steps (avatar: render the val frames, log PSNR; motion: val clips; 0 = never)
    logger: Literal["csv", "tensorboard"] = "csv"  # metrics logger
    seed: int = 0  # random seed (weights, frame order, ray jitter)


def _devices(spec: str) -> int | list[int] | str:
    """'auto' | '2' | '-1' | '0,1' -> what `lightning.Trainer(devices=...)` takes."""
    spec = str(spec).strip()
    if spec == "auto":
        return spec
    try:
        if "," in spec:
            return [int(x) for x in spec.split(",") if x.strip()]
        return int(spec)
    except ValueError:
        raise InputError(f"--devices must be 'auto', a count or a comma-separated list of ids, got {spec!r}") from None


def _logger(cfg: TrainerConfig, run_dir: Path) -> Any:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    if cfg.logger == "csv":
        return CSVLogger(run_dir, name="logs")
    if cfg.logger == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            try:
                import tensorboardX  # noqa: F401
            except ImportError:
                raise InputError("--logger tensorboard needs the tensorboard package (pip install tensorboard); "
                                 "or use --logger csv") from None
        return TensorBoardLogger(run_dir, name="logs")
    raise InputError(f"--logger must be 'csv' or 'tensorboard', got {cfg.logger!r}")


# Lightning warnings that say nothing to a user of erlnet: a deprecation inside Lightning itself, a
# logging interval longer than a tiny corpus's epoch, and frozen sub-modules kept in eval mode on purpose.
_LIGHTNING_NOISE = (r".*isinstance\(treespec, LeafSpec\).*", r".*smaller than the logging interval.*",
                    r".*module\(s\) in eval mode.*")


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Hide the known harmless Lightning warnings (`_LIGHTNING_NOISE`) while fitting."""
    with warnings.catch_warnings():
        for pattern in _LIGHTNING_NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        yield


def build_trainer(cfg: TrainerConfig, run_dir: str | Path, callbacks: Sequence[Callback] = (),
                  progress: bool = True) -> L.Trainer:
    """The `lightning.Trainer` of an avatar run: step-based, validation every `val_every` steps,
    metrics under run_dir/logs. Checkpointing is done by `AvatarCheckpoint` (in `callbacks`)."""
    run_dir = Path(run_dir)
    val = cfg.val_every > 0
    return L.Trainer(
        max_steps=cfg.max_steps,
        max_epochs=-1,
        max_time=timedelta(minutes=cfg.max_minutes) if cfg.max_minutes > 0 else None,
        devices=_devices(cfg.devices),
        accelerator=cfg.accelerator,
        strategy=cfg.strategy,
        precision=cfg.precision,
        logger=_logger(cfg, run_dir),
        log_every_n_steps=max(1, cfg.log_every),
        callbacks=list(callbacks),
        enable_checkpointing=False,  # AvatarCheckpoint does it (one last.ckpt + the bundle)
        enable_progress_bar=progress,
        enable_model_summary=False,
        val_check_interval=cfg.val_every if val else 1.0,
        check_val_every_n_epoch=None if val else 1,
        limit_val_batches=1.0 if val else 0,
        num_sanity_val_steps=0,
        default_root_dir=run_dir,
    )
