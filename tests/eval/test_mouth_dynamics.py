"""Mouth dynamics of `erlnet evaluate` (issue 12): the opening correlation / amplitude ratio helper on
synthetic curves, the mouth-box PSNR/SSIM on hand-made images, and `evaluate_subject` on a synthetic
talking subject with stand-in avatars that copy the real frames or never move."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from erlnet.errors import InputError
from erlnet.eval.avatar import (
    EvaluateConfig,
    evaluate_subject,
    format_table,
    held_out_frames,
    training_frames,
)
from erlnet.eval.metrics import mouth_box, mouth_box_scores, opening_dynamics, psnr
from erlnet.face import topology as tp
from erlnet.io.subject import Subject
from standin_avatars import FixedAvatar, TruthAvatar


def _talking_curve(n: int = 120, seed: int = 0) -> np.ndarray:
    """A mouth-opening-like curve: syllables of 0..0.25 on a closed mouth, with tracker noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 25
    return 0.02 + 0.12 * (1 + np.sin(2 * np.pi * 3.1 * t + rng.uniform(0, 1))) + 0.003 * rng.standard_normal(n)


# ---------------------------------------------------------------- the helper


def test_a_perfect_copy_and_a_half_amplitude_copy() -> None:
    truth = _talking_curve()
    d = opening_dynamics(truth.copy(), truth)
    assert d.corr == pytest.approx(1.0) and d.ratio == pytest.approx(1.0) and d.frames == 120 and d.reason == ""
    half = opening_dynamics(0.01 + 0.5 * (truth - truth.min()), truth)  # a mouth that opens half as far
    assert half.corr == pytest.approx(1.0) and half.ratio == pytest.approx(0.5)
    shut = opening_dynamics(truth.max() + truth.min() - truth, truth)  # opens when the real one closes
    assert shut.corr == pytest.approx(-1.0) and shut.ratio == pytest.approx(1.0)


def test_a_constant_rendering_has_no_correlation_and_ratio_zero() -> None:
    truth = _talking_curve()
    d = opening_dynamics(np.full_like(truth, 0.015), truth)
    assert math.isnan(d.corr) and d.ratio == 0.0 and "rendered curve is constant" in d.reason
    real_still = opening_dynamics(truth, np.full_like(truth, 0.02))
    assert math.isnan(real_still.corr) and math.isnan(real_still.ratio) and "real curve is constant" in real_still.reason


def test_only_frames_tracked_in_both_count_and_glitches_barely_move_the_ratio() -> None:
    truth = _talking_curve()
    gen = 0.5 * truth
    gen[::10] = np.nan  # no face found in the rendered frame
    truth_gaps = truth.copy()
    truth_gaps[5::10] = np.nan
    d = opening_dynamics(gen, truth_gaps)
    assert d.frames == 96 and d.corr == pytest.approx(1.0) and d.ratio == pytest.approx(0.5)
    glitch = truth.copy()
    glitch[40] = 3.0  # one wild tracking error in 120 frames: outside the 5-95 percentile range
    assert opening_dynamics(glitch, truth).ratio == pytest.approx(1.0, abs=0.05)
    few = opening_dynamics(np.array([0.1, np.nan, 0.2, 0.3]), np.array([0.1, 0.2, np.nan, 0.3]))
    assert few.frames == 2 and math.isnan(few.corr) and math.isnan(few.ratio) and "need 3" in few.reason
    with pytest.raises(InputError):
        opening_dynamics(truth, truth[:-1])


# ---------------------------------------------------------------- the mouth box


def _lips(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """(478, 3) landmarks whose outer-lip points span the box [x0, x1] x [y0, y1] (others far away)."""
    lms = np.full((tp.N_LANDMARKS, 3), 1000.0, np.float32)
    k = len(tp.LIPS_OUTER)
    u = np.linspace(0, 1, k)
    lms[tp.LIPS_OUTER, 0] = x0 + (x1 - x0) * u
    lms[tp.LIPS_OUTER, 1] = np.where(np.arange(k) % 2 == 0, y0, y1)
    return lms


def test_the_mouth_box_is_the_outer_lips_grown_by_a_quarter_of_the_mouth_width() -> None:
    lms = _lips(40, 60, 80, 80)  # mouth 40 px wide in the 128 px crop
    rows, cols = mouth_box(lms, scale=0.5, size=64)  # at half the size: 20 px wide, grown 5 px a side
    assert (rows.start, rows.stop, cols.start, cols.stop) == (25, 45, 15, 45)
    rows, cols = mouth_box(_lips(0, 100, 40, 126), scale=1.0, size=128)  # clipped to the image
    assert (rows.start, rows.stop, cols.start, cols.stop) == (90, 128, 0, 50)
    nan = lms.copy()
    nan[tp.LIPS_OUTER[3]] = np.nan
    assert mouth_box(nan, 1.0, 128) is None


def test_mouth_box_scores_see_only_the_mouth() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    lms = _lips(40, 60, 80, 80)  # box rows 25..45, cols 15..45 at scale 0.5: 20 x 30 pixels
    outside = truth.copy()
    outside[:20] = 0  # error above the mouth box only
    assert mouth_box_scores(outside, truth, lms, 0.5)[0] == float("inf") and psnr(outside, truth) < 20
    inside = truth.astype(np.int16)
    inside[30:40, 20:40] += 10  # 10 x 20 of the 20 x 30 box pixels off by 10 (no uint8 clipping below)
    inside = np.clip(inside, 0, 255).astype(np.uint8)
    changed = (inside != truth).any(axis=2)
    err = (inside.astype(float) - truth)[25:45, 15:45]
    expect = 10 * np.log10(255.0**2 / np.mean(err**2))
    mp, ms = mouth_box_scores(inside, truth, lms, 0.5)
    assert changed[30:40, 20:40].mean() > 0.9 and mp == pytest.approx(expect)
    assert mp < psnr(inside, truth) - 6  # the same error is a larger part of the box than of the frame
    assert 0 < ms < 1 and mouth_box_scores(truth, truth, lms, 0.5)[1] == pytest.approx(1.0)
    p_small, s_small = mouth_box_scores(inside, truth, _lips(60, 60, 66, 62), 0.5)  # a 5 x 3 pixel box
    assert math.isfinite(p_small) and math.isnan(s_small)  # SSIM needs 7 pixels a side


# ---------------------------------------------------------------- evaluate_subject


@pytest.fixture(scope="module")
def talking(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 s synthetic 'expressive' subject at 128 px (60 train, 15 held-out frames) whose mouth opens."""
    from erlnet.preprocess.pipeline import PreprocessConfig, run_preprocess
    from erlnet.synth import SynthConfig, generate

    base = tmp_path_factory.mktemp("talking")
    clip = generate(SynthConfig(seconds=3.0, size=128, seed=1, style="expressive"), base / "clip", progress=False)
    run_preprocess(clip.video, base / "subject", PreprocessConfig(size=128), show_progress=False)
    return base / "subject"


def test_a_renderer_that_copies_the_real_frames_follows_the_mouth(talking: Path, one_thread: None) -> None:
    cfg = EvaluateConfig(train_frames=12, cpbd_every=0, video=False)
    ev = evaluate_subject(TruthAvatar(talking), talking, config=cfg)
    m = ev.metrics
    truth = ev.series["mouth_open_truth"]
    assert np.nanmax(truth) - np.nanmin(truth) > 0.1  # the real mouth opens and closes in these frames
    assert m["mouth_open_frames"] == len(ev.frames) == 15
    assert m["mouth_open_corr"] == pytest.approx(1.0, abs=1e-6) and m["mouth_open_ratio"] == pytest.approx(1.0)
    assert m["mouth_psnr"] == float("inf") and m["mouth_ssim"] == pytest.approx(1.0)
    assert m["train_frames"] == 12 and ev.train_frames[0] == 0 and ev.train_frames[-1] == 59
    assert m["train_mouth_open_corr"] == pytest.approx(1.0, abs=1e-6) and m["train_mouth_open_ratio"] == pytest.approx(1.0)
    assert m["train_psnr"] == m["train_mouth_psnr"] == float("inf")
    table = format_table(ev)
    assert "mouth opening correlation" in table and "15 held-out frames (+ 12 training frames)" in table


def test_a_renderer_whose_mouth_never_opens_scores_ratio_zero(talking: Path, one_thread: None) -> None:
    cfg = EvaluateConfig(train_frames=12, cpbd_every=0, video=False)
    subject = Subject(talking)
    opening = tp.mouth_opening(subject.tracking()["landmarks"])
    scored = set(held_out_frames(subject).tolist()) | set(training_frames(subject, 12).tolist())
    closed = min(set(range(len(subject))) - scored, key=lambda i: opening[i])  # a shut mouth, not scored itself
    assert opening[closed] < 0.03
    ev = evaluate_subject(FixedAvatar(talking, closed), talking, config=cfg)
    m = ev.metrics
    assert m["mouth_open_ratio"] < 0.1 and m["train_mouth_open_ratio"] < 0.1
    for key in ("mouth_open_corr", "train_mouth_open_corr"):  # no correlation to speak of, or none at all
        assert isinstance(m[key], str) or abs(m[key]) < 0.6, (key, m[key])
    assert m["mouth_psnr"] < 30 and m["train_mouth_psnr"] < 30  # the real mouth opened, the rendered did not
    assert m["mouth_psnr"] < m["psnr"] and m["train_mouth_psnr"] < m["train_psnr"]  # the error is at the mouth


def test_static_tracking_reads_a_frozen_mouth_as_still(talking: Path, one_thread: None) -> None:
    """A frozen half-open mouth: video-mode tracking (each frame starts from the previous face region)
    reads small openings and closings; tracked frame by frame it is exactly still."""
    subject = Subject(talking)
    opening = tp.mouth_opening(subject.tracking()["landmarks"])
    scored = set(held_out_frames(subject).tolist()) | set(training_frames(subject, 12).tolist())
    half = min(set(range(len(subject))) - scored, key=lambda i: abs(opening[i] - 0.08))
    cfg = EvaluateConfig(train_frames=12, cpbd_every=0, video=False, track_static=True)
    ev = evaluate_subject(FixedAvatar(talking, half), talking, config=cfg)
    m = ev.metrics
    assert np.ptp(ev.series["mouth_open_generated"]) == 0.0 and np.ptp(ev.series["mouth_open_truth"]) > 0.1
    assert m["mouth_open_ratio"] == 0.0 and m["train_mouth_open_ratio"] == 0.0
    assert m["mouth_open_corr"] == m["train_mouth_open_corr"] == "not computed (the rendered curve is constant)"
