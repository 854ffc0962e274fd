"""The avatar's training loss falls within a few dozen steps on a tiny subject."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from erlnet.train.fit_avatar import train_avatar


def _metrics(run: Path, key: str) -> list[float]:
    with open(run / "logs" / "version_0" / "metrics.csv") as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)]


def test_loss_falls_within_a_few_dozen_steps(tiny_subject: Path, tiny_config, tmp_path: Path) -> None:
    run = tmp_path / "avatar"
    cfg = tiny_config(max_steps=30)  # warm-up phase throughout: the loss terms stay the same
    cfg.data.batch_size = 1
    train_avatar(tiny_subject, run, cfg, progress=False)
    loss, psnr = _metrics(run, "train/loss"), _metrics(run, "train/psnr")
    assert len(loss) == 30
    assert np.mean(loss[-5:]) < 0.8 * np.mean(loss[:5]), (loss[:5], loss[-5:])
    assert np.mean(psnr[-5:]) > np.mean(psnr[:5]) + 1.0
