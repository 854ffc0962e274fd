"""Ctrl-C during training leaves a usable checkpoint and avatar; --resume continues the step count."""

from __future__ import annotations

import csv
import signal
from pathlib import Path

import lightning as L
import pytest
import torch

from erlnet.errors import InputError
from erlnet.render.avatar import load_avatar
from erlnet.train.fit_avatar import train_avatar


class CtrlCAt(L.Callback):
    """Simulates Ctrl-C: raises KeyboardInterrupt once training has reached `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def test_ctrl_c_saves_checkpoint_and_avatar_then_resume_continues(tiny_subject: Path, tiny_config, tmp_path: Path) -> None:
    run = tmp_path / "avatar"
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train_avatar(tiny_subject, run, tiny_config(max_steps=10), progress=False, callbacks=[CtrlCAt(3)])
    assert signal.getsignal(signal.SIGINT) is handler  # Lightning's SIG_IGN was undone
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3
    assert load_avatar(run, device="cpu").meta.train_steps == 3  # the exported avatar is usable

    with pytest.raises(InputError, match="pass --resume"):
        train_avatar(tiny_subject, run, tiny_config(max_steps=5), progress=False)
    result = train_avatar(tiny_subject, run, tiny_config(max_steps=5), resume=True, progress=False)
    assert result.start_step == 3 and result.steps == 5
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 5
    with open(run / "logs" / "version_1" / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert steps == [3, 4]  # the resumed run logged only the two remaining steps
    with pytest.raises(InputError, match="already trained for 5 steps"):
        train_avatar(tiny_subject, run, tiny_config(max_steps=5), resume=True, progress=False)


def test_resume_refuses_what_cannot_be_resumed(tiny_subject: Path, tiny_config, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothing to resume"):
        train_avatar(tiny_subject, tmp_path / "new", tiny_config(), resume=True, progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="not an avatar run"):
        train_avatar(tiny_subject, tmp_path / "mine", tiny_config(), progress=False)
    run = tmp_path / "a"
    train_avatar(tiny_subject, run, tiny_config(max_steps=1), progress=False)
    other = tiny_config(max_steps=2)
    other.data.image_size = 32
    with pytest.raises(InputError, match=r"other settings than the checkpoint \(data.image_size\)"):
        train_avatar(tiny_subject, run, other, resume=True, progress=False)
