"""Training runs end to end: files of a run, the exported avatar renders like the trained renderer,
and the CLI commands chain (train-avatar -> export-motion -> render)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import cv2
import torch

from erlnet.cli import main
from erlnet.inference.render_video import motion_from_subject
from erlnet.io.subject import Subject
from erlnet.io.video import count_streams
from erlnet.render.avatar import load_avatar
from erlnet.train.fit_avatar import train_avatar


def _metrics(run: Path, key: str) -> list[float]:
    rows = []
    for path in sorted((run / "logs").glob("version_*/metrics.csv")):
        with open(path) as f:
            rows += [float(r[key]) for r in csv.DictReader(f) if r.get(key)]
    return rows


def test_short_run_writes_bundle_checkpoint_previews_and_metrics(tiny_subject: Path, tiny_config, tmp_path: Path) -> None:
    run = tmp_path / "avatar"
    cfg = tiny_config(max_steps=3, preview_every=3, val_every=3, checkpoint_every=2)
    result = train_avatar(tiny_subject, run, cfg, progress=False)
    assert result.start_step == 0 and result.steps == 3
    assert (run / "checkpoints" / "last.ckpt").exists() and (run / "train_config.json").exists()
    assert len(_metrics(run, "train/loss")) == 3 and len(_metrics(run, "val/psnr")) == 1
    grid = cv2.imread(str(run / "previews" / "train_0000003.png"))
    assert grid.shape == (64, 5 * 64, 3)  # prediction | truth | error | head alpha | torso alpha
    assert (run / "previews" / "val_0000003.png").exists()
    # the exported avatar renders exactly like the trained weights of the final checkpoint
    avatar = load_avatar(run, device="cpu")
    assert avatar.meta.train_steps == 3 and avatar.image_size == 64
    assert avatar.meta.expression_dim == Subject(tiny_subject).tracking()["expression"].shape[1]
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    renderer = cfg.renderer.setup(avatar.meta.expression_dim, 64)
    renderer.load_state_dict({k.removeprefix("renderer."): v for k, v in state.items()})
    renderer.eval()
    motion = motion_from_subject(Subject(tiny_subject), "test")
    with torch.no_grad():
        ours = renderer(avatar.condition(motion.expression, motion.blink, motion.rotation, motion.translation)).rgb
    assert torch.equal(avatar.render(motion).rgb, ours)
    assert not torch.equal(ours[0], ours[1]) or len(motion) == 1


def test_cli_train_export_motion_and_render(tiny_subject: Path, tiny_dbf: dict, tmp_path: Path) -> None:
    run = tmp_path / "avatar"
    flags = [f"--renderer.{k.replace('_', '-')}={v}" for k, v in tiny_dbf.items()]
    args = ["train-avatar", str(tiny_subject), "-o", str(run), "--max-steps", "2", "--accelerator", "cpu",
            "--devices", "1", "--val-every", "0", "--data.image-size", "64", *flags, "-q"]
    # A real process, so Lightning's own logging set-up is what a user gets: -q leaves no INFO chatter.
    proc = subprocess.run([sys.executable, "-m", "erlnet.cli", *args], capture_output=True, text=True,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "GPU available" not in proc.stderr and "Tip" not in proc.stderr, proc.stderr
    assert load_avatar(run, device="cpu").meta.train_steps == 2
    motion = tmp_path / "held_out.npz"
    assert main(["export-motion", str(tiny_subject), "-o", str(motion), "--split", "test", "-q"]) == 0
    out = tmp_path / "out.mp4"
    audio = tiny_subject / "audio.wav"
    assert main(["render", str(run), "--motion", str(motion), "--audio", str(audio), "-o", str(out), "-q"]) == 0
    counts = count_streams(out)
    n_test = len(Subject(tiny_subject).split_indices("test"))
    assert counts.video_frames == n_test and (counts.width, counts.height) == (64, 64) and counts.audio_seconds > 0
