"""The training system: phase and learning-rate schedules, parameter groups, NaN/Inf handling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from erlnet.errors import ErlnetError
from erlnet.render.dbf import DBFConfig
from erlnet.render.losses import RenderLoss
from erlnet.train.avatar import (
    OptimConfig,
    PhaseConfig,
    lr_factor,
    parameter_groups,
    phase_at,
    progress_at,
    with_mouth_boost,
    without_perceptual,
)
from erlnet.train.fit_avatar import train_avatar


def test_phase_schedule() -> None:
    cfg = PhaseConfig(warmup_fraction=0.1, lip_fraction=0.05)
    got = [phase_at(progress_at(s, 100), cfg) for s in (0, 9, 10, 94, 95, 99)]
    assert got == ["warmup", "warmup", "main", "main", "lip", "lip"]
    assert phase_at(0.99, PhaseConfig(warmup_fraction=0.1, lip_fraction=0.0)) == "main"


def test_phase_losses_keep_the_mouth_weight_and_the_lip_phase_raises_it() -> None:
    loss = RenderLoss(mouth_weight=3.0, perceptual=0.1)
    warm = without_perceptual(loss)
    assert warm.perceptual == 0.0 and warm.mouth_weight == 3.0  # the mouth counts from the first step
    assert with_mouth_boost(loss, 2.0).mouth_weight == pytest.approx(5.0)  # 1 + 2 (3 - 1)
    assert with_mouth_boost(RenderLoss(mouth_weight=1.0), 2.0).mouth_weight == 1.0  # no mouth weighting stays none
    assert loss.mouth_weight == 3.0  # copies, not edits


def test_progress_follows_the_time_budget_when_it_runs_out_first() -> None:
    assert progress_at(10, 100) == pytest.approx(0.1)
    assert progress_at(10, 100, elapsed_s=30.0, budget_s=60.0) == pytest.approx(0.5)  # time leads
    assert progress_at(80, 100, elapsed_s=30.0, budget_s=60.0) == pytest.approx(0.8)  # steps lead
    assert progress_at(10, 100, elapsed_s=90.0, budget_s=60.0) == 1.0
    assert progress_at(10, 100, elapsed_s=90.0, budget_s=0.0) == pytest.approx(0.1)  # no budget


def test_learning_rate_ramps_then_decays_to_the_final_ratio() -> None:
    cfg = OptimConfig(lr_warmup_steps=10, final_lr_ratio=0.1)
    assert lr_factor(0, 0.0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, 0.009, cfg) == pytest.approx(0.1 ** 0.009)
    assert lr_factor(1000, 1.0, cfg) == pytest.approx(0.1)
    f = [lr_factor(s, s / 1000, cfg) for s in range(10, 1000, 50)]
    assert all(a > b for a, b in zip(f, f[1:], strict=False))


def test_dbf_parameter_groups_split_cnn_from_fields() -> None:
    r = DBFConfig(feature_scale=4, plane_resolution=16, torso_plane_resolution=8).setup(12, 32)
    groups = parameter_groups(r)
    cnn = {id(p) for p in r.upsampler.parameters()}
    assert {id(p) for p in groups["cnn"]} == cnn
    assert all(id(p) not in cnn for p in groups["fields"])
    assert len(groups["cnn"]) + len(groups["fields"]) == len(list(r.parameters()))


class NaNAt:
    """Wraps a loss and makes it NaN on the given calls (counting training calls only)."""

    def __init__(self, loss, bad_calls: set[int] | None = None, always: bool = False) -> None:
        self.loss, self.bad_calls, self.always, self.calls = loss, bad_calls or set(), always, 0

    def __call__(self, out, target_rgb, masks, **kwargs):
        total, parts = self.loss(out, target_rgb, masks, **kwargs)
        bad = self.always or (out.rgb.requires_grad and self.calls in self.bad_calls)
        self.calls += out.rgb.requires_grad
        if bad:
            total = total * float("nan")
            parts = parts | {"photometric": total}
        return total, parts


def test_nan_steps_are_skipped_with_a_lower_learning_rate(tiny_subject: Path, tiny_config, tmp_path: Path) -> None:
    cfg = tiny_config(max_steps=5)
    cfg.loss = NaNAt(cfg.loss, bad_calls={1, 2})
    result = train_avatar(tiny_subject, tmp_path / "a", cfg, progress=False)
    assert result.steps == 5  # two skipped steps were redone; training reached max_steps
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["erlnet"]["lr_scale"] == pytest.approx(0.25) and ckpt["erlnet"]["bad_steps"] == 0
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_repeated_nan_stops_with_a_clear_error(tiny_subject: Path, tiny_config, tmp_path: Path) -> None:
    cfg = tiny_config(max_steps=20)
    cfg.loss = NaNAt(cfg.loss, always=True)
    cfg.optim.max_bad_steps = 3
    with pytest.raises(ErlnetError, match=r"diverged: .*NaN/Inf in 3 steps in a row .*lower the learning rates"):
        train_avatar(tiny_subject, tmp_path / "a", cfg, progress=False)


def test_trainer_flags_are_checked(tmp_path: Path) -> None:
    import importlib.util

    from erlnet.errors import InputError
    from erlnet.train.trainer import TrainerConfig, _devices, build_trainer

    assert _devices("auto") == "auto" and _devices("2") == 2 and _devices("0,1") == [0, 1]
    with pytest.raises(InputError, match="--devices"):
        _devices("two")
    trainer = build_trainer(TrainerConfig(max_steps=7, accelerator="cpu", devices="1", val_every=0), tmp_path,
                            progress=False)
    assert trainer.max_steps == 7 and trainer.limit_val_batches == 0
    if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
        with pytest.raises(InputError, match="needs the tensorboard package"):
            build_trainer(TrainerConfig(logger="tensorboard", accelerator="cpu"), tmp_path, progress=False)
