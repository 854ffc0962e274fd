"""The avatar training system: renderer + loss + optimiser + phase schedule, as ONE LightningModule.

Phases and the learning rate follow the training progress p in [0, 1]: the larger of
step / max_steps and, with a time budget (`--trainer.max-minutes`), training time / budget, so a
run limited by time decays its learning rate and reaches its lip phase within the budget. The
training time is kept in checkpoints, so a resumed run continues where it was.

    warmup   p < warmup_fraction                     no perceptual term: colour and geometry settle
    main                                             the full loss
    lip      p >= 1 - lip_fraction                   full loss, the mouth weight raised `lip_boost` times

Mouth pixels weigh the loss's `mouth_weight` in the photometric terms in every phase: the mouth is a
small part of the frame, and a field that learns the mean mouth first hardly unlearns it later.

Optimisation is manual (one Adam, two parameter groups: fields/encodings and CNN), so a step whose
loss or gradients are NaN/Inf can be skipped consistently on every device: the step is dropped, the
learning rate is reduced, and after `max_bad_steps` bad steps in a row training stops with an
`ErlnetError`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from erlnet.errors import ErlnetError
from erlnet.render.avatar import AvatarMeta
from erlnet.render.base import Renderer, RenderOutput
from erlnet.train.data import batch_condition

log = logging.getLogger(__name__)

Phase = Literal["warmup", "main", "lip"]


@dataclass
class OptimConfig:
    """Adam with separate learning rates for the neural fields and the CNN, exponential decay."""

    lr_fields: float = 2e-2  # learning rate of the fields and encodings (tri-planes, field MLPs, codes)
    lr_cnn: float = 1e-3  # learning rate of the CNN (upsampler / decoder)
    final_lr_ratio: float = 0.1  # the learning rate decays exponentially to this fraction at max_steps
    lr_warmup_steps: int = 100  # linear learning-rate ramp over the first steps
    betas: tuple[float, float] = (0.9, 0.99)  # Adam betas
    eps: float = 1e-10  # Adam epsilon (small: grid parameters see rare, tiny gradients)
    grad_clip: float = 1.0  # clip the gradient norm to this value (0 = off)
    nan_lr_factor: float = 0.5  # multiply the learning rate by this after a NaN/Inf step
    max_bad_steps: int = 5  # stop after this many NaN/Inf steps in a row


@dataclass
class PhaseConfig:
    """Training phases by progress (fractions of the run: of max_steps, or of the time budget)."""

    warmup_fraction: float = 0.1  # first part of the run without the perceptual loss
    lip_fraction: float = 0.2  # last part fine-tunes the lips with a raised mouth weight (0 = off)
    lip_boost: float = 2.0  # the lip phase multiplies the loss's mouth_weight by this


def progress_at(step: int, max_steps: int, elapsed_s: float = 0.0, budget_s: float = 0.0) -> float:
    """Training progress in [0, 1]: max(step / max_steps, elapsed_s / budget_s); budget 0 = none."""
    p = step / max(1, max_steps)
    if budget_s > 0:
        p = max(p, elapsed_s / budget_s)
    return min(1.0, p)


def phase_at(progress: float, cfg: PhaseConfig) -> Phase:
    """The training phase at `progress` in [0, 1]."""
    if cfg.lip_fraction > 0 and progress >= 1.0 - cfg.lip_fraction:
        return "lip"
    return "warmup" if progress < cfg.warmup_fraction else "main"


def lr_factor(step: int, progress: float, cfg: OptimConfig) -> float:
    """Multiplier of the base learning rates: a linear ramp over the first `lr_warmup_steps` steps,
    times an exponential decay reaching `final_lr_ratio` at progress 1."""
    ramp = min(1.0, (step + 1) / cfg.lr_warmup_steps) if cfg.lr_warmup_steps > 0 else 1.0
    return ramp * cfg.final_lr_ratio ** min(1.0, max(0.0, progress))


class LossFn(Protocol):
    """The renderer loss (`erlnet.render.losses.RenderLoss`): (out, target rgb (B, 3, H, W),
    labels (B, H, W), mouth (B, 1, H, W) or None) -> (total, named parts)."""

    def __call__(self, out: RenderOutput, target_rgb: torch.Tensor, masks: torch.Tensor,
                 mouth: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


def without_perceptual(loss: LossFn) -> LossFn:
    """The warm-up variant of a loss: its `perceptual` weight set to 0 (a dataclass copy); a loss
    without such a field is used as is."""
    if is_dataclass(loss) and "perceptual" in {f.name for f in fields(loss)}:
        return replace(loss, perceptual=0.0)
    return loss


def with_mouth_boost(loss: LossFn, boost: float) -> LossFn:
    """The lip-phase variant of a loss: its `mouth_weight` raised to 1 + boost (mouth_weight - 1)
    (a dataclass copy); a loss without such a field is used as is."""
    if is_dataclass(loss) and "mouth_weight" in {f.name for f in fields(loss)}:
        return replace(loss, mouth_weight=1.0 + boost * (loss.mouth_weight - 1.0))
    return loss


def parameter_groups(renderer: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """Trainable parameters split into "fields" and "cnn".

    Uses `renderer.parameter_groups()` when the renderer defines it; otherwise parameters of
    submodules named like a CNN (upsampler, decoder, cnn, refine) are "cnn", the rest "fields".
    """
    if hasattr(renderer, "parameter_groups"):
        groups = {k: [p for p in v if p.requires_grad] for k, v in renderer.parameter_groups().items()}
    else:
        groups = {"fields": [], "cnn": []}
        for name, p in renderer.named_parameters():
            if p.requires_grad:
                cnn = any(k in name.split(".")[0].lower() for k in ("upsampler", "decoder", "cnn", "refine"))
                groups["cnn" if cnn else "fields"].append(p)
    n_all = sum(1 for p in renderer.parameters() if p.requires_grad)
    if sum(len(v) for v in groups.values()) != n_all:
        raise ValueError("renderer.parameter_groups() must cover every trainable parameter exactly once")
    return {k: v for k, v in groups.items() if v}


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio (dB) of images in [0, 1], averaged over the batch. (B, C, H, W)."""
    mse = (pred.detach().float() - target.float()).square().flatten(1).mean(1).clamp_min(1e-10)
    return (-10.0 * torch.log10(mse)).mean()


def preview_grid(pred: torch.Tensor, truth: torch.Tensor, head_alpha: torch.Tensor,
                 torso_alpha: torch.Tensor) -> np.ndarray:
    """One sample as a (H, 5 W, 3) uint8 RGB strip: prediction | truth | mean |error| x 4 (grey) |
    head alpha | torso alpha. pred, truth (3, H, W) in [0, 1]; alphas (1, h, w) at any resolution."""
    h, w = pred.shape[-2:]

    def up(a: torch.Tensor) -> torch.Tensor:
        a = F.interpolate(a[None].float(), size=(h, w), mode="nearest")[0]
        return a.expand(3, -1, -1)

    err = ((pred - truth).abs().mean(0, keepdim=True) * 4.0).clamp(0, 1).expand(3, -1, -1)
    tiles = [pred, truth, err, up(head_alpha), up(torso_alpha)]
    grid = torch.cat([t.detach().float().cpu().clamp(0, 1) for t in tiles], dim=2)
    return (grid.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)


def write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise ErlnetError(f"{path}: could not write the preview image")


class AvatarSystem(L.LightningModule):
    """Trains one renderer on one subject. `meta` gives the background plate and reference pose."""

    def __init__(self, renderer: Renderer, loss: LossFn, meta: AvatarMeta, max_steps: int,
                 optim: OptimConfig | None = None, phases: PhaseConfig | None = None,
                 preview_dir: Path | None = None, preview_every: int = 0, budget_s: float = 0.0) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.renderer = renderer
        self.loss = loss
        self.warmup_loss = without_perceptual(loss)
        self.lip_loss = with_mouth_boost(loss, (phases or PhaseConfig()).lip_boost)
        self.meta = meta
        self.max_steps = max_steps
        self.optim = optim or OptimConfig()
        self.phases = phases or PhaseConfig()
        self.preview_dir = preview_dir
        self.preview_every = preview_every
        # Subject constants: not trained and not checkpointed (they come from the subject / bundle).
        self.register_buffer("background", meta.background_tensor(), persistent=False)
        self.register_buffer("ref_rotation", torch.from_numpy(meta.ref_rotation).float(), persistent=False)
        self.register_buffer("ref_translation", torch.from_numpy(meta.ref_translation).float(), persistent=False)
        self.lr_scale = 1.0  # lowered after NaN/Inf steps; saved in checkpoints
        self.bad_steps = 0  # NaN/Inf steps in a row
        self.budget_s = budget_s  # training-time budget (0 = none): the schedule spans it
        self.elapsed_s = 0.0  # training time of earlier (resumed) runs; saved in checkpoints
        self._started: float | None = None

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self) -> torch.optim.Optimizer:
        lrs = {"fields": self.optim.lr_fields, "cnn": self.optim.lr_cnn}
        groups = []
        for name, params in parameter_groups(self.renderer).items():
            lr = lrs.get(name, self.optim.lr_fields)
            groups.append({"params": params, "lr": lr, "base_lr": lr, "name": name})
        # fused: one kernel over all parameters (several times faster per step on a CPU, too)
        return torch.optim.Adam(groups, betas=self.optim.betas, eps=self.optim.eps, fused=True)

    def on_train_start(self) -> None:
        self._started = time.monotonic()

    def training_seconds(self) -> float:
        """Training time so far, including the runs this one resumed."""
        return self.elapsed_s + (time.monotonic() - self._started if self._started is not None else 0.0)

    def progress(self) -> float:
        """Training progress in [0, 1] (see the module docstring); identical on every device."""
        elapsed = self.training_seconds()
        if self.budget_s > 0 and self.trainer.world_size > 1:  # rank 0's clock decides
            elapsed = float(self.trainer.strategy.broadcast(elapsed, src=0))
        return progress_at(self.global_step, self.max_steps, elapsed, self.budget_s)

    def _set_lr(self, opt: Any, step: int, progress: float) -> None:
        f = lr_factor(step, progress, self.optim) * self.lr_scale
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * f

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["erlnet"] = {"lr_scale": self.lr_scale, "bad_steps": self.bad_steps,
                                "elapsed_s": self.training_seconds()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("erlnet", {})
        self.lr_scale = float(state.get("lr_scale", 1.0))
        self.bad_steps = int(state.get("bad_steps", 0))
        self.elapsed_s = float(state.get("elapsed_s", 0.0))

    # ------------------------------------------------------------------ steps
    def forward(self, batch: dict[str, torch.Tensor]) -> RenderOutput:
        return self.renderer(batch_condition(batch, self.background, self.ref_rotation, self.ref_translation))

    def _loss(self, out: RenderOutput, batch: dict[str, torch.Tensor], phase: Phase) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = {"warmup": self.warmup_loss, "lip": self.lip_loss}.get(phase, self.loss)
        return loss(out, batch["rgb"], batch["labels"], mouth=batch["mouth"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        opt = self.optimizers()
        step = self.global_step
        progress = self.progress()
        phase = phase_at(progress, self.phases)
        self._set_lr(opt, step, progress)
        out = self(batch)
        total, parts = self._loss(out, batch, phase)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(total)
        if self._skip_bad_step(total, parts, step):
            opt.zero_grad(set_to_none=True)
            return
        if self.optim.grad_clip > 0:
            self.clip_gradients(opt, gradient_clip_val=self.optim.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        bsz = batch["rgb"].shape[0]
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=bsz)
        self.log("train/psnr", psnr(out.rgb, batch["rgb"]), prog_bar=True, batch_size=bsz)
        for g in opt.param_groups:
            self.log(f"train/lr_{g['name']}", g["lr"], batch_size=bsz)
        self.log("train/phase", float(("warmup", "main", "lip").index(phase)), batch_size=bsz)
        for name, value in parts.items():
            self.log(f"train/{name}", value.detach(), batch_size=bsz)
        # global_step counts this step now; previews at steps N, 2N, ... of the run
        if self.preview_dir is not None and self.preview_every > 0 and self.global_step % self.preview_every == 0 \
                and self.trainer.is_global_zero:
            write_png(self.preview_dir / f"train_{self.global_step:07d}.png",
                      preview_grid(out.rgb[0], batch["rgb"][0], out.head_alpha[0], out.torso_alpha[0]))

    def _skip_bad_step(self, total: torch.Tensor, parts: dict[str, torch.Tensor], step: int) -> bool:
        """True (on every device alike) when this step's loss or gradients are not finite; lowers the LR
        and raises `ErlnetError` after too many bad steps in a row."""
        bad = not bool(torch.isfinite(total.detach()))
        grads = [p.grad for p in self.renderer.parameters() if p.grad is not None]
        if not bad and grads and not str(self.trainer.precision).startswith("16"):  # fp16: the scaler skips inf steps
            bad = not bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))  # one sync for all gradients
        bad = bool(self.trainer.strategy.reduce_boolean_decision(bad, all=False))
        if not bad:
            self.bad_steps = 0
            return False
        self.bad_steps += 1
        self.lr_scale *= self.optim.nan_lr_factor
        which = ", ".join(k for k, v in parts.items() if not bool(torch.isfinite(v.detach()).all())) or "gradients"
        log.warning("step %d: non-finite %s; step skipped, learning rate scaled to %.3g of schedule",
                    step, which, self.lr_scale)
        if self.bad_steps >= self.optim.max_bad_steps:
            raise ErlnetError(
                f"training diverged: loss or gradients were NaN/Inf in {self.bad_steps} steps in a row "
                f"(at step {step}, non-finite: {which}); lower the learning rates (--optim.lr-fields, "
                f"--optim.lr-cnn) or resume from the last checkpoint"
            )
        return True

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self(batch)
        total, _ = self._loss(out, batch, "main")
        bsz = batch["rgb"].shape[0]
        self.log("val/loss", total, sync_dist=True, batch_size=bsz)
        self.log("val/psnr", psnr(out.rgb, batch["rgb"]), prog_bar=True, sync_dist=True, batch_size=bsz)
        if batch_idx == 0 and self.preview_dir is not None and self.trainer.is_global_zero \
                and not self.trainer.sanity_checking:
            write_png(self.preview_dir / f"val_{self.global_step:07d}.png",
                      preview_grid(out.rgb[0], batch["rgb"][0], out.head_alpha[0], out.torso_alpha[0]))

