"""`erlnet train-motion`: train the ADF motion model (and the no-VQ baseline) on a motion corpus.

One command runs three phases in order, each a Lightning fit with its own optimiser, checkpoint and
logs; a phase that is complete is skipped, so rerunning with `--resume` continues where it stopped:

    stage1     the two VQ-VAEs (expression + blink, head-pose deltas) on every training clip,
               including clips without speech (MEAD style clips)
    stage2     style encoders, audio projection and code decoders on clips with speech, VQ-VAEs frozen
    regressor  the direct audio -> expression baseline (`ExpressionRegressor`), for evaluation

Run directory (= the motion-model bundle):

```
MOTION_MODEL/
  config.json, model.safetensors   the bundle (kind "motion-model"; exported at checkpoints, after each
                                   phase and on Ctrl-C; `meta.stages` records the steps done per phase)
  train_config.json                the settings of the run
  stage1/last.ckpt, stage1/logs/version_N/metrics.csv   (likewise stage2/, regressor/)
```
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset

from erlnet.errors import InputError
from erlnet.eval.motion import mean_rotation
from erlnet.inference.animate import cpu_threads, save_motion_model
from erlnet.motion.adf import ADFModel, ExpressionRegressor, MotionBatch, motion_batch
from erlnet.motion.config import (
    ADFConfig,
    MotionStatistics,
    RegressorConfig,
    compute_statistics,
    emotion_index,
)
from erlnet.motion.corpus import ClipData, Corpus
from erlnet.train.trainer import TrainerConfig, build_trainer, quiet_lightning

log = logging.getLogger(__name__)

Phase = Literal["stage1", "stage2", "regressor"]
PHASES: tuple[Phase, ...] = ("stage1", "stage2", "regressor")
RUN_CONFIG = "train_config.json"
LAST = "last.ckpt"


# ---------------------------------------------------------------- configuration
@dataclass
class MotionDataConfig:
    """How training windows are cut from the corpus."""

    batch_size: int = 32  # windows per optimisation step (per device)
    num_workers: int = 0  # DataLoader worker processes
    stride: int = 4  # frames between the starts of indexed training windows
    style_min_frames: int = 50  # shortest style clip given to stage 2 (raised to the model's min_style_frames)
    style_max_frames: int = 100  # longest style clip given to stage 2 (the style encoders are most of a step's cost)
    same_clip_style: float = 0.5  # chance the style clip comes from the window's own clip (else another clip
    # of the same speaker and style label, when there is one)
    val_windows: int = 64  # validation windows scored at each validation
    reference: Literal["speaker", "clip"] = "speaker"  # neutral face the expressions are measured from
    # Validation clips for checkpoint selection, taken from the *training* clips (never the corpus' held-out
    # evaluation clips): this share of the speech clips of every source with at least 1 / val_fraction of
    # them (whole clips, reproducible). 0, or no source that large: validate on the held-out clips, for the
    # logs only (no selection).
    val_fraction: float = 0.1
    # The style clip never overlaps the training window (another segment of the same clip when it has room,
    # else another clip of the speaker, else the overlapping segment): at generation the style clip is never
    # the speech being animated, and a style clip holding the target lets stage 2 memorise clips.
    style_disjoint: bool = True
    # Augmentation of speech windows (stage 2 and the regressor alike; training split only):
    time_warp: float = 0.1  # speaking rate: audio and motion resampled together by a factor in [1 - x, 1 + x]
    audio_noise: float = 0.1  # Gaussian noise on the audio features, in units of each feature's corpus std


@dataclass
class MotionOptimConfig:
    """AdamW with linear warm-up and cosine decay, per phase."""

    lr_stage1: float = 2e-3  # peak learning rate of the VQ-VAEs
    lr_stage2: float = 1e-3  # peak learning rate of stage 2
    lr_regressor: float = 1e-3  # peak learning rate of the baseline
    weight_decay: float = 0.01  # AdamW weight decay
    warmup_steps: int = 200  # linear warm-up at the start of each phase
    final_lr_ratio: float = 0.05  # cosine decay to this fraction of the peak at the end of a phase
    grad_clip: float = 1.0  # clip the gradient norm (0 = off)


@dataclass
class MotionTrainConfig:
    """Everything `erlnet train-motion` can set (trainer.max_steps is unused: phases set their steps)."""

    stage1_steps: int = 6000  # optimisation steps of the VQ-VAEs
    stage2_steps: int = 6000  # optimisation steps of stage 2
    regressor_steps: int = 2000  # optimisation steps of the baseline (0 = no baseline)
    cpu_threads: int = 0  # torch CPU threads (0 = torch's default); 1 is much faster on a shared, busy CPU
    # Stage 2 and the regressor keep the weights of their best validation (lowest expression loss on the
    # validation clips, see MotionDataConfig.val_fraction) instead of the last step's: both overfit the
    # small corpus long before their step budget ends.
    select_best: bool = True
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(val_every=100, checkpoint_every=500))
    data: MotionDataConfig = field(default_factory=MotionDataConfig)
    optim: MotionOptimConfig = field(default_factory=MotionOptimConfig)
    # 64 components: 0.1 mm mouth LMD
    model: ADFConfig = field(default_factory=lambda: ADFConfig(pca_dim=64, offset_head=True))
    regressor: RegressorConfig = field(default_factory=lambda: RegressorConfig(pca_dim=64))

    def steps(self, phase: Phase) -> int:
        return {"stage1": self.stage1_steps, "stage2": self.stage2_steps, "regressor": self.regressor_steps}[phase]


# ---------------------------------------------------------------- data
def reference_pose(clip: ClipData) -> tuple[np.ndarray, np.ndarray]:
    """Mean head pose of a clip over its tracked frames: rotation (3, 3), translation (3,) float32."""
    ok = clip.valid if clip.valid.any() else np.ones(len(clip), bool)
    return (mean_rotation(clip.rotation[ok]).astype(np.float32),
            clip.translation[ok].astype(np.float64).mean(axis=0).astype(np.float32))


def mean_expression(clip: ClipData) -> np.ndarray:
    """Mean expression (D,) float32 of a clip over its tracked frames."""
    ok = clip.valid if clip.valid.any() else np.ones(len(clip), bool)
    return clip.expression[ok].astype(np.float64).mean(axis=0).astype(np.float32)


class MotionWindows(Dataset):
    """Windows of `window` frames from clips; items are dicts that `motion_batch` collates.

    Every `stride`-th start of every clip is one item (a clip shorter than the window gives one padded
    window whose padding is masked out). With `style=True` an item also carries a style clip: a random
    segment of the same clip or of another clip of the same speaker and style label; `style_disjoint`
    keeps it off the window's own frames (see `MotionDataConfig.style_disjoint`). `deterministic` draws
    those choices from the item index (validation), else from torch's seeded generator.

    Augmentation (random, so only when not `deterministic`; `time_warp` and `audio_noise` as in
    `MotionDataConfig`): the window is read at a random speaking rate, audio features and motion
    resampled together (rotations re-orthonormalised), and the audio features get Gaussian noise.
    """

    def __init__(self, clips: Sequence[ClipData], window: int, stride: int, audio: bool = False,
                 style: bool = False, style_frames: tuple[int, int] = (50, 200), same_clip_style: float = 0.5,
                 deterministic: bool = False, style_disjoint: bool = False, time_warp: float = 0.0,
                 audio_noise: float = 0.0) -> None:
        if not clips:
            raise InputError("no clips to cut training windows from")
        if not 0 <= time_warp < 1 or audio_noise < 0:
            raise InputError(f"time_warp must be in [0, 1) and audio_noise >= 0, got {time_warp}, {audio_noise}")
        self.clips = list(clips)
        self.window, self.audio, self.style = window, audio, style
        self.style_frames, self.same_clip_style, self.deterministic = style_frames, same_clip_style, deterministic
        self.style_disjoint = style_disjoint
        self.time_warp = 0.0 if deterministic else float(time_warp)
        self.audio_noise = 0.0 if deterministic or not audio else float(audio_noise)
        if audio and any(c.audio is None for c in self.clips):
            raise InputError("audio windows need clips with speech")
        self.audio_std = None
        if self.audio_noise > 0:
            feats = np.concatenate([c.audio for c in self.clips if c.audio is not None]).astype(np.float64)
            self.audio_std = feats.std(axis=0).astype(np.float32)
        self.refs = [reference_pose(c) for c in self.clips]
        self.mean_expressions = [mean_expression(c) for c in self.clips]
        self.index = [(k, s) for k, c in enumerate(self.clips)
                      for s in range(0, max(1, len(c) - window + 1), max(1, stride))]
        groups: dict[tuple[str, str | None], list[int]] = {}
        for k, c in enumerate(self.clips):
            groups.setdefault((c.info.speaker, c.info.style), []).append(k)
        self.partners = [groups[(c.info.speaker, c.info.style)] for c in self.clips]

    def __len__(self) -> int:
        return len(self.index)

    def _rng(self, i: int) -> np.random.Generator:
        seed = i if self.deterministic else int(torch.randint(0, 2**31 - 1, ()).item())
        return np.random.default_rng(seed)

    @staticmethod
    def _cut(x: np.ndarray, start: int, n: int) -> np.ndarray:
        """x[start:start + n], padded with the last frame."""
        seg = x[start:start + n]
        if len(seg) < n:
            seg = np.concatenate([seg, np.repeat(seg[-1:], n - len(seg), axis=0)])
        return seg

    @staticmethod
    def _resample(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """x (T, ...) read at fractional frame positions pos (n,) in [0, T - 1] by linear interpolation."""
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, len(x) - 1)
        f = (pos - lo).astype(np.float32).reshape(-1, *([1] * (x.ndim - 1)))
        return ((1 - f) * x[lo] + f * x[hi]).astype(x.dtype)

    def _frames(self, c: ClipData, s: int, speed: float) -> dict[str, np.ndarray]:
        """The window's per-frame arrays; speed != 1 reads `speed` source frames per output frame."""
        w = self.window
        names = ["expression", "blink", "rotation", "translation"] + (["audio"] if self.audio else [])
        if speed == 1.0:
            out = {k: self._cut(getattr(c, k), s, w) for k in names}
            valid = self._cut(c.valid, s, w).copy()
            valid[max(0, len(c) - s):] = False  # padding
            return out | {"valid": valid}
        pos = s + speed * np.arange(w)
        inside = pos <= len(c) - 1
        pos = np.minimum(pos, len(c) - 1)
        out = {k: self._resample(getattr(c, k), pos) for k in names}
        u, _, vt = np.linalg.svd(out["rotation"].astype(np.float64))  # back onto rotations
        d = np.sign(np.linalg.det(u @ vt))
        u[..., :, -1] *= d[..., None]
        out["rotation"] = (u @ vt).astype(np.float32)
        lo = np.floor(pos).astype(np.int64)
        valid = c.valid[lo] & c.valid[np.minimum(lo + 1, len(c) - 1)] & inside
        return out | {"valid": valid}

    def _style_segment(self, k: int, s: int, rng: np.random.Generator) -> tuple[int, int, int]:
        """(clip, start, length) of the style clip of window (clip k, start s)."""
        lo, hi = self.style_frames
        others = [j for j in self.partners[k] if j != k]
        same = not others or rng.random() < self.same_clip_style
        if self.style_disjoint:
            n_k = len(self.clips[k])
            before, after = s, max(0, n_k - (s + self.window))  # frames of clip k outside the window
            room = [(a, b) for a, b in ((0, before), (n_k - after, n_k)) if b - a >= min(lo, n_k)]
            if same and room:
                a, b = room[int(rng.integers(len(room)))]
                n = int(rng.integers(min(lo, b - a), min(hi, b - a) + 1))
                return k, a + int(rng.integers(0, b - a - n + 1)), n
            if others:
                same = False
        j = k if same else others[int(rng.integers(len(others)))]
        n_j = len(self.clips[j])
        n = int(rng.integers(min(lo, n_j), min(hi, n_j) + 1))
        return j, int(rng.integers(0, n_j - n + 1)), n

    def __getitem__(self, i: int) -> dict[str, Any]:
        k, s = self.index[i]
        c = self.clips[k]
        rng = self._rng(i) if (self.style or self.time_warp > 0 or self.audio_noise > 0) else None
        speed = 1.0
        if self.time_warp > 0 and rng is not None:
            speed = float(rng.uniform(1 - self.time_warp, 1 + self.time_warp))
        item: dict[str, Any] = self._frames(c, s, speed) | {
            "emotion": emotion_index(c.info.emotion),
            "ref_rotation": self.refs[k][0], "ref_translation": self.refs[k][1],
            "ref_expression": self.mean_expressions[k],
        }
        if self.audio_noise > 0 and rng is not None and self.audio_std is not None:
            noise = rng.standard_normal(item["audio"].shape).astype(np.float32)
            item["audio"] = item["audio"] + self.audio_noise * self.audio_std * noise
        if self.style:
            assert rng is not None
            j, a, n = self._style_segment(k, s, rng)
            sc = self.clips[j]
            item |= {"style_expression": sc.expression[a:a + n], "style_rotation": sc.rotation[a:a + n],
                     "style_translation": sc.translation[a:a + n]}
        return item


def validation_split(clips: Sequence[ClipData], fraction: float) -> list[str]:
    """Ids of the training clips set aside for validation (checkpoint selection): in every source with at
    least 1 / fraction speech clips, int(fraction * n) of them, chosen reproducibly (sha256 of the id).
    Smaller sources keep all their clips for training. fraction 0 -> none."""
    import hashlib

    if not 0 <= fraction < 1:
        raise InputError(f"val_fraction must be in [0, 1), got {fraction}")
    by_source: dict[str, list[str]] = {}
    for c in clips:
        if c.audio is not None:
            by_source.setdefault(c.info.source, []).append(c.info.id)
    out: list[str] = []
    for ids in by_source.values():
        n = int(fraction * len(ids))
        ranked = sorted(ids, key=lambda x: hashlib.sha256(f"val:{x}".encode()).hexdigest())
        out += ranked[:n] if n < len(ids) else []
    return sorted(out)


class MotionData(L.LightningDataModule):
    """Corpus clips in memory, split into training and validation clips; one dataset per phase.

    The validation clips are a part of the corpus' training clips (`validation_split`) when
    `val_fraction` finds some (`selects` is then True: validation may pick checkpoints); else the
    corpus' held-out clips, for the logs only.
    """

    def __init__(self, corpus: Corpus, config: MotionDataConfig, window: int, min_style_frames: int) -> None:
        super().__init__()
        self.corpus, self.cfg, self.window = corpus, config, window
        self.min_style = min_style_frames
        self.phase: Phase = "stage1"
        train = [corpus.load(c, config.reference) for c in corpus.select("train")]
        val_ids = set(validation_split(train, config.val_fraction))
        self.selects = bool(val_ids)
        self.train_clips = [c for c in train if c.info.id not in val_ids]
        self.val_clips = [c for c in train if c.info.id in val_ids] if val_ids else \
            [corpus.load(c, config.reference) for c in corpus.select("heldout")]
        if not self.train_clips:
            raise InputError(f"{corpus.root}: no training clips (every clip is held out)")
        short = [c.info.id for c in self.train_clips if len(c) < 2]
        if short:
            raise InputError(f"{corpus.root}: clips {', '.join(short[:3])} have fewer than 2 frames")

    def clips(self, split: Literal["train", "val"], audio: bool) -> list[ClipData]:
        pool = self.train_clips if split == "train" else self.val_clips
        return [c for c in pool if c.audio is not None or not audio]

    def style_ok(self, clips: Sequence[ClipData]) -> list[ClipData]:
        """Clips long enough to serve as their own style reference."""
        return [c for c in clips if len(c) >= self.min_style]

    def dataset(self, split: Literal["train", "val"], phase: Phase) -> MotionWindows | None:
        audio = phase != "stage1"
        clips = self.clips(split, audio)
        if phase == "stage2":
            clips = self.style_ok(clips)
        if not clips:
            return None
        lo = max(self.cfg.style_min_frames, self.min_style)
        train = split == "train"
        augment = train and audio
        return MotionWindows(clips, self.window, self.cfg.stride if train or self.selects else self.window,
                             audio=audio, style=phase == "stage2",
                             style_frames=(lo, max(lo, self.cfg.style_max_frames)),
                             same_clip_style=self.cfg.same_clip_style, deterministic=not train,
                             style_disjoint=self.cfg.style_disjoint,
                             time_warp=self.cfg.time_warp if augment else 0.0,
                             audio_noise=self.cfg.audio_noise if augment else 0.0)

    def check_phase(self, phase: Phase) -> None:
        if self.dataset("train", phase) is None:
            need = {"stage1": "clips", "stage2": f"clips with speech of at least {self.min_style} frames",
                    "regressor": "clips with speech"}[phase]
            raise InputError(f"{self.corpus.root}: no training {need} for {phase}")

    def train_dataloader(self) -> DataLoader:
        ds = self.dataset("train", self.phase)
        assert ds is not None
        return DataLoader(ds, batch_size=self.cfg.batch_size, shuffle=True, drop_last=len(ds) > self.cfg.batch_size,
                          num_workers=self.cfg.num_workers, collate_fn=motion_batch,
                          persistent_workers=self.cfg.num_workers > 0)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        ds = self.dataset("val", self.phase)
        if ds is None:
            return []
        if len(ds) > self.cfg.val_windows:  # evenly spaced, fixed: comparable across validations
            keep = np.linspace(0, len(ds) - 1, self.cfg.val_windows).round().astype(int)
            ds.index = [ds.index[i] for i in keep]
        return DataLoader(ds, batch_size=self.cfg.batch_size, shuffle=False, num_workers=0, collate_fn=motion_batch)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch.to(device) if isinstance(batch, MotionBatch) else super().transfer_batch_to_device(
            batch, device, dataloader_idx)


def corpus_statistics(data: MotionData, window: int, pca_dim: int, seed: int) -> MotionStatistics:
    """Normalisation statistics (and PCA basis) of the training clips."""
    clips = data.train_clips
    return compute_statistics([c.expression for c in clips], [c.rotation for c in clips],
                              [c.translation for c in clips], [c.audio for c in clips], window=window,
                              pca_dim=pca_dim, seed=seed)


def build_models(data: MotionData, cfg: MotionTrainConfig) -> tuple[ADFModel, ExpressionRegressor | None,
                                                                    MotionStatistics]:
    """Untrained ADF model and regressor (None when regressor_steps is 0) with the training clips'
    statistics loaded; returns (model, regressor, statistics of the model)."""
    c = data.corpus
    stats = corpus_statistics(data, cfg.model.window, cfg.model.pca_dim, cfg.trainer.seed)
    model = cfg.model.setup(c.expression_dim, c.audio_dim, statistics=stats)
    regressor = None
    if cfg.regressor_steps > 0:
        r_stats = stats if cfg.regressor.pca_dim == cfg.model.pca_dim else \
            corpus_statistics(data, cfg.model.window, cfg.regressor.pca_dim, cfg.trainer.seed)
        regressor = cfg.regressor.setup(c.expression_dim, c.audio_dim, statistics=r_stats)
    return model, regressor, stats


# ---------------------------------------------------------------- the system
def lr_factor(step: int, total: int, cfg: MotionOptimConfig) -> float:
    """Linear warm-up, then cosine decay to final_lr_ratio at `total` steps."""
    warm = min(cfg.warmup_steps, max(1, total // 10))
    if step < warm:
        return (step + 1) / warm
    p = min(1.0, (step - warm) / max(1, total - warm))
    return cfg.final_lr_ratio + (1 - cfg.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))


class MotionSystem(L.LightningModule):
    """The ADF model and the baseline regressor; `phase` selects which losses and parameters train."""

    def __init__(self, model: ADFModel, regressor: ExpressionRegressor | None, optim: MotionOptimConfig) -> None:
        super().__init__()
        self.model, self.regressor, self.optim = model, regressor, optim
        self.phase: Phase = "stage1"
        self.phase_steps = 1

    def set_phase(self, phase: Phase, steps: int) -> None:
        """Select the phase; only its parameters require gradients (keeps DDP free of unused parameters)."""
        if phase == "regressor" and self.regressor is None:
            raise InputError("no regressor to train")
        self.phase, self.phase_steps = phase, steps
        if phase == "stage2":
            self.model.freeze_stage1()
        trainable = {id(p) for p in self._phase_parameters()}
        for p in self.parameters():
            p.requires_grad_(id(p) in trainable)

    def _phase_parameters(self) -> list[torch.nn.Parameter]:
        if self.phase == "stage1":
            return self.model.stage1_parameters()
        if self.phase == "stage2":
            return self.model.stage2_parameters()
        assert self.regressor is not None
        return list(self.regressor.parameters())

    def configure_optimizers(self) -> Any:
        lr = {"stage1": self.optim.lr_stage1, "stage2": self.optim.lr_stage2,
              "regressor": self.optim.lr_regressor}[self.phase]
        opt = torch.optim.AdamW(self._phase_parameters(), lr=lr, weight_decay=self.optim.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, self.phase_steps, self.optim))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: Any = None,
                                    gradient_clip_algorithm: Any = None) -> None:
        if self.optim.grad_clip > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.optim.grad_clip, gradient_clip_algorithm="norm")

    def losses(self, batch: MotionBatch) -> dict[str, torch.Tensor]:
        if self.phase == "stage1":
            return self.model.stage1_losses(batch)
        if self.phase == "stage2":
            return self.model.stage2_losses(batch)
        assert self.regressor is not None
        return self.regressor.losses(batch)

    def _log_all(self, prefix: str, out: dict[str, torch.Tensor], n: int, sync: bool) -> None:
        for k, v in out.items():
            self.log(f"{prefix}/{k}", v.detach().float(), batch_size=n, sync_dist=sync,
                     prog_bar=k == "loss" and prefix == self.phase)

    def training_step(self, batch: MotionBatch, batch_idx: int) -> torch.Tensor:
        out = self.losses(batch)
        self._log_all(self.phase, out, len(batch), sync=False)
        self.log(f"{self.phase}/lr", self.optimizers().param_groups[0]["lr"], batch_size=len(batch))
        return out["loss"]

    def validation_step(self, batch: MotionBatch, batch_idx: int) -> None:
        self._log_all(f"val_{self.phase}", self.losses(batch), len(batch), sync=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["erlnet_motion"] = {"phase": self.phase, "phase_steps": self.phase_steps}


# ---------------------------------------------------------------- checkpoints and export
class MotionCheckpoint(Callback):
    """Saves PHASE/last.ckpt and exports the bundle every `every` steps, at the end of the phase and on
    Ctrl-C (Lightning's graceful shutdown calls `on_exception`)."""

    def __init__(self, ckpt: Path, every: int, export: Any) -> None:
        self.ckpt, self.every, self.export = ckpt, every, export
        self._saved = -1

    def save(self, trainer: L.Trainer) -> None:
        if trainer.global_step == self._saved:
            return
        trainer.save_checkpoint(self.ckpt)
        if trainer.is_global_zero:
            self.export(int(trainer.global_step))
        self._saved = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.every > 0 and trainer.global_step > 0 and trainer.global_step % self.every == 0:
            self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.save(trainer)
            log.warning("interrupted at step %d: saved %s and the bundle", trainer.global_step, self.ckpt)


# Validation metric a phase keeps its best weights by (the first one logged). Both measure the decoded
# expression the same way (normalised expression MSE + blink MSE + 0.5 * velocity MSE, with the default
# weights), so ADF and the regressor are selected alike.
SELECT_METRICS: dict[Phase, tuple[str, ...]] = {"stage2": ("expression_feature", "loss"), "regressor": ("loss",)}
BEST = "best.pt"


class BestWeights(Callback):
    """Keeps the weights of the validation with the lowest selection metric in PHASE/best.pt
    ({"step", "metric", "value", "state_dict"}); a resumed phase continues from the stored best."""

    def __init__(self, path: Path, phase: Phase) -> None:
        self.path, self.names = path, tuple(f"val_{phase}/{m}" for m in SELECT_METRICS[phase])
        self.best = math.inf
        if path.exists():
            self.best = float(torch.load(path, map_location="cpu", weights_only=True)["value"])

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        name = next((n for n in self.names if n in trainer.callback_metrics), None)
        if name is None:
            return
        value = float(trainer.callback_metrics[name])
        if not value < self.best:
            return
        self.best = value
        if trainer.is_global_zero:
            state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
            tmp = self.path.with_suffix(".tmp")
            torch.save({"step": int(trainer.global_step), "metric": name, "value": value, "state_dict": state}, tmp)
            tmp.replace(self.path)


def _phase_weights(out: Path, phase: Phase, select: bool) -> Path:
    """The checkpoint holding a finished phase's final weights: its best.pt when selecting, else last.ckpt."""
    best = out / phase / BEST
    return best if select and best.exists() else out / phase / LAST


@dataclass
class MotionTrainResult:
    """What `train_motion` did."""

    model_dir: Path
    stages: dict[str, int]  # steps done per phase
    seconds: dict[str, float]  # wall time per phase run now (skipped phases absent)
    metrics: dict[str, float]  # last logged values
    selected: dict[str, dict[str, Any]] = field(default_factory=dict)  # phase -> step, metric, value kept


def _ckpt_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def _load_weights(system: MotionSystem, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    system.load_state_dict(state)


def _record(cfg: MotionTrainConfig, corpus: Corpus) -> dict[str, Any]:
    d = asdict(cfg)
    d["model"], d["regressor"] = cfg.model.to_dict(), cfg.regressor.to_dict()
    d["corpus"] = {"path": str(corpus.root.resolve()), "clips": len(corpus.clips),
                   "heldout": len(corpus.doc["heldout"])}
    return d


def _launched_rank() -> int:
    """Global rank of this process in a multi-process (DDP) launch, 0 otherwise."""
    return max(int(os.environ.get(k, "0") or 0) for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def _check_run_dir(out: Path, resume: bool, record: dict[str, Any]) -> None:
    has_run = any((out / p / LAST).exists() for p in PHASES)
    if resume:
        if not has_run:
            raise InputError(f"{out}: nothing to resume (no checkpoint); drop --resume to start")
        old = out / RUN_CONFIG
        if old.exists():
            prev = json.loads(old.read_text())
            for key in ("model", "regressor"):
                if prev.get(key) != json.loads(json.dumps(record[key])):
                    raise InputError(f"{out}: --resume with other {key} settings than the checkpoint; "
                                     "use the same settings")
        return
    if has_run:
        raise InputError(f"{out}: holds a training run already; pass --resume to continue it or choose another "
                         "directory")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out}: exists and is not a motion-model run; choose an empty or new directory")


def train_motion(
    corpus_dir: str | Path, out_dir: str | Path, config: MotionTrainConfig | None = None, resume: bool = False,
    progress: bool = True, callbacks: Sequence[Callback] = (),
) -> MotionTrainResult:
    """Train stage 1, stage 2 and the baseline on the corpus' training clips into `out_dir`.

    Statistics (normalisation, PCA) come from the training clips; held-out clips give the validation
    losses. Ctrl-C saves a checkpoint and exports the bundle, then re-raises `KeyboardInterrupt`.
    """
    cfg = config or MotionTrainConfig()
    with cpu_threads(cfg.cpu_threads):
        return _train(corpus_dir, Path(out_dir), cfg, resume, progress, callbacks)


def _train(corpus_dir: str | Path, out: Path, cfg: MotionTrainConfig, resume: bool, progress: bool,
           callbacks: Sequence[Callback]) -> MotionTrainResult:
    import time

    corpus = Corpus(corpus_dir)
    record = _record(cfg, corpus)
    if _launched_rank() == 0:  # DDP copies of this command start after rank 0 has written here
        _check_run_dir(out, resume, record)
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    data = MotionData(corpus, cfg.data, cfg.model.window, cfg.model.min_style_frames)
    for phase in PHASES:
        if cfg.steps(phase) > 0:
            data.check_phase(phase)
    if cfg.stage2_steps > 0 and cfg.stage1_steps <= 0 and not resume:
        raise InputError("stage 2 needs trained VQ-VAEs: set --stage1-steps > 0")
    model, regressor, stats = build_models(data, cfg)
    system = MotionSystem(model, regressor, cfg.optim)
    out.mkdir(parents=True, exist_ok=True)
    if _launched_rank() == 0:
        (out / RUN_CONFIG).write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    stages = {p: 0 for p in PHASES}
    seconds: dict[str, float] = {}
    metrics: dict[str, float] = {}
    selected: dict[str, dict[str, Any]] = {}
    select = cfg.select_best and data.selects
    if cfg.select_best and not data.selects:
        log.info("no validation clips among the training clips (val_fraction %.2f): keeping the last weights",
                 cfg.data.val_fraction)

    def keep_best(phase: Phase) -> None:
        """Load the phase's best validated weights into the system and note them."""
        path = out / phase / BEST
        if not (select and phase in SELECT_METRICS and path.exists()):
            return
        best = torch.load(path, map_location="cpu", weights_only=True)
        system.load_state_dict(best["state_dict"])
        selected[phase] = {"step": int(best["step"]), "metric": best["metric"], "value": float(best["value"])}
        log.info("%s: keeping the weights of step %d (%s %.4f)", phase, best["step"], best["metric"], best["value"])

    def export(step: int, phase: Phase) -> None:
        stages[phase] = step
        meta = {"stages": dict(stages), "corpus": record["corpus"], "train_config": RUN_CONFIG,
                "expression_dim": corpus.expression_dim, "audio_dim": corpus.audio_dim,
                "pca_dim": cfg.model.pca_dim, "expression_scale": float(stats.expression_scale),
                "reference": cfg.data.reference, "selected": dict(selected),
                "val_clips": [c.info.id for c in data.val_clips] if data.selects else []}
        save_motion_model(out, system.model, system.regressor, corpus.audio_config, corpus.representation_config,
                          meta)

    for phase in PHASES:
        steps = cfg.steps(phase)
        ckpt = out / phase / LAST
        done = _ckpt_step(ckpt) if ckpt.exists() else 0
        if steps <= 0:
            continue
        if done >= steps:  # finished earlier: take its weights and move on
            _load_weights(system, ckpt)
            keep_best(phase)
            stages[phase] = done
            log.info("%s: done (%d steps), skipped", phase, done)
            continue
        if not ckpt.exists():
            previous = [p for p in PHASES[:PHASES.index(phase)] if (out / p / LAST).exists()]
            if previous:
                _load_weights(system, _phase_weights(out, previous[-1], select))
        system.set_phase(phase, steps)
        data.phase = phase
        saver = MotionCheckpoint(ckpt, cfg.trainer.checkpoint_every, lambda s, p=phase: export(s, p))
        has_val = data.dataset("val", phase) is not None
        tcfg = replace(cfg.trainer, max_steps=steps, val_every=cfg.trainer.val_every if has_val else 0,
                       preview_every=0)
        extra: list[Callback] = [BestWeights(out / phase / BEST, phase)] if select and phase in SELECT_METRICS else []
        trainer = build_trainer(tcfg, out / phase, [saver, *extra, *callbacks], progress=progress)
        handler = signal.getsignal(signal.SIGINT)
        t0 = time.perf_counter()
        try:
            with quiet_lightning():  # stage 2 keeps the frozen VQ-VAEs in eval mode on purpose
                trainer.fit(system, datamodule=data, ckpt_path=ckpt if ckpt.exists() else None)
        except SystemExit:
            if trainer.interrupted:
                raise KeyboardInterrupt from None
            raise
        finally:
            signal.signal(signal.SIGINT, handler)
        seconds[phase] = time.perf_counter() - t0
        metrics |= {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if extra:
            keep_best(phase)
            if _launched_rank() == 0:
                export(stages[phase], phase)
    if not any(stages.values()):
        raise InputError("nothing to train: all phase step counts are 0")
    if _launched_rank() == 0:
        export(stages["regressor"], "regressor")  # final bundle with every phase's step count
    return MotionTrainResult(out, stages, seconds, metrics, selected)
