"""`erlnet train-motion` on a tiny procedural corpus: windows, schedule, the three phases, the bundle,
resume, and refusals."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from erlnet.errors import InputError
from erlnet.inference.animate import load_motion_model
from erlnet.motion.adf import motion_batch
from erlnet.motion.config import ADFConfig, RegressorConfig
from erlnet.motion.corpus import Corpus, toy_corpus
from erlnet.train.motion import (
    MotionDataConfig,
    MotionOptimConfig,
    MotionTrainConfig,
    MotionWindows,
    lr_factor,
    train_motion,
)
from erlnet.train.trainer import TrainerConfig


def _cfg(steps: int = 2, **kw: int) -> MotionTrainConfig:
    phases = {"stage1_steps": steps, "stage2_steps": steps, "regressor_steps": steps} | kw
    return MotionTrainConfig(
        **phases, cpu_threads=1, model=ADFConfig.tiny(), regressor=RegressorConfig(d_model=16, n_blocks=2, emotion_dim=4),
        data=MotionDataConfig(batch_size=4, style_min_frames=25, style_max_frames=40),
        trainer=TrainerConfig(val_every=2, checkpoint_every=0, log_every=1, accelerator="cpu", devices="1"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("motion_corpus") / "c"
    toy_corpus(root, n_speech=4, n_style=1, seconds=2.0)
    return root


@pytest.fixture(scope="module")
def trained(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("motion_model") / "m"
    res = train_motion(corpus, out, _cfg(), progress=False)
    assert res.stages == {"stage1": 2, "stage2": 2, "regressor": 2}
    return out


def test_windows_pad_short_clips_and_pick_style_from_the_same_speaker(corpus: Path) -> None:
    c = Corpus(corpus)
    clips = [c.load(x) for x in c.select("train", audio=True)]
    ds = MotionWindows(clips, window=64, stride=4, audio=True, style=True, style_frames=(25, 40), deterministic=True)
    assert len(ds) == len(clips)  # 50-frame clips: one padded window each
    item = ds[0]
    assert item["expression"].shape == (64, c.expression_dim) and item["audio"].shape == (64, c.audio_dim)
    assert item["valid"][:50].all() and not item["valid"][50:].any()
    assert 25 <= len(item["style_expression"]) <= 40
    again = ds[0]
    assert np.array_equal(item["style_expression"], again["style_expression"])  # deterministic for validation
    batch = motion_batch([ds[i] for i in range(len(ds))])
    assert batch.style_valid is not None and batch.expression.shape == (len(ds), 64, c.expression_dim)
    short = MotionWindows(clips, window=16, stride=4)
    assert len(short) == len(clips) * 9  # starts 0, 4, ..., 32 in 50 frames


def test_lr_schedule_warms_up_then_decays() -> None:
    cfg = MotionOptimConfig(warmup_steps=10, final_lr_ratio=0.1)
    f = [lr_factor(s, 100, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False)) and f[-1] == pytest.approx(0.1, abs=0.01)


def test_three_phases_write_a_usable_bundle_and_logs(trained: Path) -> None:
    mm = load_motion_model(trained)
    assert mm.stages == {"stage1": 2, "stage2": 2, "regressor": 2} and mm.regressor is not None
    assert mm.fps == 25.0 and mm.meta["expression_dim"] == 478 * 3
    for phase in ("stage1", "stage2", "regressor"):
        assert (trained / phase / "last.ckpt").exists()
        (metrics,) = (trained / phase / "logs").glob("version_*/metrics.csv")
        header = metrics.read_text().splitlines()[0]
        assert f"{phase}/loss" in header and f"val_{phase}/loss" in header
    run = json.loads((trained / "train_config.json").read_text())
    assert run["stage1_steps"] == 2 and run["corpus"]["clips"] == 12
    # the VQ-VAEs were frozen in stage 2: stage-2 training changed no stage-1 weight
    import torch

    s1 = torch.load(trained / "stage1" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    s2 = torch.load(trained / "stage2" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    vq = [k for k in s1 if k.startswith("model.vq_expression.") and "weight" in k]
    assert vq and all(torch.equal(s1[k], s2[k]) for k in vq)
    dec = [k for k in s1 if k.startswith("model.decoder_expression.") and "weight" in k]
    assert any(not torch.equal(s1[k], s2[k]) for k in dec)


def test_resume_continues_only_the_unfinished_phase(trained: Path, corpus: Path) -> None:
    with pytest.raises(InputError, match="--resume"):
        train_motion(corpus, trained, _cfg(), progress=False)
    res = train_motion(corpus, trained, _cfg(stage2_steps=3), resume=True, progress=False)
    assert res.stages == {"stage1": 2, "stage2": 3, "regressor": 2}
    assert set(res.seconds) == {"stage2"}  # the finished phases were skipped
    assert load_motion_model(trained).stages["stage2"] == 3


def test_refusals(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothing to resume"):
        train_motion(corpus, tmp_path / "new", _cfg(), resume=True, progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("x")
    with pytest.raises(InputError, match="not a motion-model run"):
        train_motion(corpus, tmp_path / "busy", _cfg(), progress=False)
    with pytest.raises(InputError, match="stage 2 needs trained VQ-VAEs"):
        train_motion(corpus, tmp_path / "s2", _cfg(stage1_steps=0), progress=False)
    silent = tmp_path / "silent"
    toy_corpus(silent, n_speech=0, n_style=1, seconds=2.0)
    with pytest.raises(InputError, match="clips with speech"):
        train_motion(silent, tmp_path / "m", _cfg(), progress=False)


def test_validation_split_takes_whole_training_clips_from_large_sources_only(corpus: Path) -> None:
    from erlnet.train.motion import validation_split

    c = Corpus(corpus)
    train = [c.load(x) for x in c.select("train")]
    speech = [x.info.id for x in train if x.audio is not None]
    assert validation_split(train, 0.0) == []
    assert validation_split(train, 0.1) == []  # 3 speech clips: too few to give one up at 10 %
    val = validation_split(train, 0.34)
    assert len(val) == 1 and set(val) <= set(speech)
    assert validation_split(train, 0.34) == val  # reproducible
    assert not set(val) & set(c.doc["heldout"])  # never an evaluation clip


def test_style_clip_stays_off_the_window_and_augmentation_keeps_windows_consistent(corpus: Path) -> None:
    c = Corpus(corpus)
    clips = [c.load(x) for x in c.select("train", audio=True)]  # 50-frame clips of one speaker
    ds = MotionWindows(clips, window=16, stride=4, audio=True, style=True, style_frames=(12, 20),
                       same_clip_style=1.0, deterministic=True, style_disjoint=True)
    for i in range(len(ds)):
        k, s = ds.index[i]
        j, a, n = ds._style_segment(k, s, np.random.default_rng(i))
        assert 12 <= n <= 20 and a + n <= len(clips[j])
        assert j != k or a + n <= s or a >= s + 16  # never the window's own frames
    # no room beside a 64-frame window in a 50-frame clip: another clip of the speaker and style instead,
    # the overlapping segment only when there is none
    twin = replace(clips[0], info=replace(clips[0].info, id="twin"))
    wide = MotionWindows([*clips, twin], window=64, stride=4, audio=True, style=True, style_frames=(25, 40),
                         same_clip_style=1.0, deterministic=True, style_disjoint=True)
    picks = {k: wide._style_segment(k, 0, np.random.default_rng(0))[0] for k in range(len(clips) + 1)}
    assert picks[0] == len(clips) and picks[len(clips)] == 0  # the two with a partner use each other
    assert all(picks[k] == k for k in range(1, len(clips)))  # alone in their style: their own frames

    plain = MotionWindows(clips, window=16, stride=4, audio=True)
    warped = MotionWindows(clips, window=16, stride=4, audio=True, time_warp=0.3, audio_noise=0.5)
    import torch

    torch.manual_seed(0)
    a, b = plain[0], warped[0]
    assert a["expression"].shape == b["expression"].shape and b["audio"].shape == a["audio"].shape
    assert b["expression"][0] == pytest.approx(a["expression"][0], abs=1e-6)  # same start frame
    assert not np.allclose(a["audio"], b["audio"])  # noise (and a new rate) applied
    rot = b["rotation"].astype(np.float64)
    assert np.allclose(rot @ np.swapaxes(rot, -1, -2), np.eye(3), atol=1e-5)  # still rotations
    assert np.allclose(np.linalg.det(rot), 1.0, atol=1e-5)
    # validation windows are never augmented
    val = MotionWindows(clips, window=16, stride=4, audio=True, time_warp=0.3, audio_noise=0.5, deterministic=True)
    assert np.array_equal(val[0]["audio"], a["audio"]) and np.array_equal(val[0]["expression"], a["expression"])


def test_best_validated_weights_are_kept_and_recorded(corpus: Path, tmp_path: Path) -> None:
    import torch

    from erlnet.train.motion import MotionData

    cfg = _cfg(steps=4, stage1_steps=2)
    cfg.trainer.val_every = 1
    cfg.data.val_fraction = 0.34
    res = train_motion(corpus, tmp_path / "m", cfg, progress=False)
    assert set(res.selected) == {"stage2", "regressor"}
    assert res.selected["stage2"]["metric"] == "val_stage2/expression_feature"
    for phase in ("stage2", "regressor"):
        best = torch.load(tmp_path / "m" / phase / "best.pt", map_location="cpu", weights_only=False)
        (log_file,) = (tmp_path / "m" / phase / "logs").glob("version_*/metrics.csv")
        import csv

        rows = [r for r in csv.DictReader(log_file.open()) if r.get(best["metric"])]
        values = [float(r[best["metric"]]) for r in rows]
        assert len(values) == 4 and best["value"] == pytest.approx(min(values), rel=1e-5)
    mm = load_motion_model(tmp_path / "m")
    assert mm.meta["selected"]["regressor"]["step"] == res.selected["regressor"]["step"]
    best = torch.load(tmp_path / "m" / "regressor" / "best.pt", map_location="cpu", weights_only=False)
    w = best["state_dict"]["regressor.inp.weight"]
    assert mm.regressor is not None and torch.equal(mm.regressor.inp.weight.cpu(), w)  # the bundle holds the best
    data = MotionData(Corpus(corpus), cfg.data, 16, 25)
    assert mm.meta["val_clips"] == [x.info.id for x in data.val_clips]
    assert not {x.info.id for x in data.val_clips} & {x.info.id for x in data.train_clips}
