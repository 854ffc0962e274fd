"""Opening-loudness correlation (`erlnet.eval.talking`, issue 12): on built curves (a mouth that follows
the loudness, late or not; a shuffled one), and on a synthetic talking clip, tracked from its video and
read from its preprocessed subject."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from erlnet.errors import InputError
from erlnet.eval.talking import (
    FLOOR_DB,
    OpeningLoudness,
    loudness_envelope,
    opening_loudness,
    subject_opening_loudness,
    video_opening,
    video_opening_loudness,
)


def _speechy_loudness(n: int = 400, seed: int = 0) -> np.ndarray:
    """A loudness curve in dB: syllables of -30..-15 dB separated by pauses at the -60 dB floor."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 25
    syll = np.clip(np.sin(2 * np.pi * 3.3 * t + rng.uniform(0, 6)), 0, None) * rng.uniform(0.5, 1.0, n)
    talk = (np.sin(2 * np.pi * 0.3 * t) > -0.4).astype(float)  # phrases and pauses
    return np.where(talk * syll > 0.05, -32 + 18 * syll, -60.0) + 0.5 * rng.standard_normal(n)


def _mouth_of(loudness: np.ndarray, lag: int, seed: int = 1) -> np.ndarray:
    """An opening that follows the loudness `lag` frames late: 0 in pauses, up to ~0.3, tracker noise."""
    rng = np.random.default_rng(seed)
    follow = np.roll(np.clip((loudness + 45) / 30, 0, 1) * 0.3, lag)
    return follow + 0.005 * rng.standard_normal(loudness.size)


# ---------------------------------------------------------------- the curves
@pytest.mark.parametrize("lag", [0, 2, -1])
def test_a_mouth_that_follows_the_loudness_scores_near_one_at_its_lag(lag: int) -> None:
    env = _speechy_loudness()
    c = opening_loudness(_mouth_of(env, lag), env)
    assert c.best_lag == lag and c.best_r > 0.95 and c.frames == env.size and c.reason == ""
    assert 0.2 < c.span < 0.31  # 5-95 percentile range of a 0..0.3 mouth
    assert len(c.by_lag) == 7 and c.max_lag == 3 and c.by_lag[lag + 3] == c.best_r
    if lag == 0:
        assert c.r == c.best_r
    else:
        assert c.r < c.best_r - 0.05  # late by 80 ms: visibly worse at lag 0
    assert c.describe() == f"opening-loudness correlation {c.r:.2f} (best {c.best_r:.2f} at lag {lag:+d})"


def test_a_shuffled_mouth_scores_near_zero() -> None:
    env = _speechy_loudness(500)
    mouth = _mouth_of(env, 0)
    shuffled = mouth[np.random.default_rng(3).permutation(mouth.size)]
    c = opening_loudness(shuffled, env)
    assert abs(c.r) < 0.15 and abs(c.best_r) < 0.2
    assert opening_loudness(-mouth, env).r < -0.9  # a mouth that shuts on loud frames: negative


def test_frames_without_a_face_are_left_out_and_flat_curves_are_not_measured() -> None:
    env = _speechy_loudness(200)
    mouth = _mouth_of(env, 0)
    mouth[::3] = np.nan
    c = opening_loudness(mouth, env)
    assert c.frames == 200 - 67 and c.r > 0.95
    still = opening_loudness(np.full(200, 0.02), env)
    assert math.isnan(still.r) and math.isnan(still.best_r) and still.best_lag == 0
    assert "the mouth is still" in still.reason and "not computed" in still.describe()
    assert still.span == 0.0 and still.frames == 200
    small = opening_loudness(0.02 + 0.001 * _mouth_of(env, 0), env)  # follows, but moves by 0.0003
    assert math.isnan(small.r) and opening_loudness(0.02 + 0.001 * _mouth_of(env, 0), env, min_span=0).r > 0.95
    faceless = opening_loudness(np.full(200, np.nan), env)
    assert math.isnan(faceless.best_r) and faceless.frames == 0 and faceless.reason == "no face found in any frame"
    few = opening_loudness(mouth[:8], env[:8])
    assert math.isnan(few.r) and "need" in few.reason
    with pytest.raises(InputError):
        opening_loudness(mouth, env[:-1])


def test_the_dict_round_trip_is_json_safe() -> None:
    import json

    env = _speechy_loudness(200)
    for c in (opening_loudness(_mouth_of(env, 1), env), opening_loudness(np.zeros(200), env)):
        d = json.loads(json.dumps(c.to_dict(), allow_nan=False))
        back = OpeningLoudness.from_dict(d)
        assert back.best_lag == c.best_lag and back.frames == c.frames and back.describe() == c.describe()


def test_silence_is_floored_below_the_speech_level() -> None:
    sr, fps = 16000, 25
    t = np.arange(sr) / sr
    wav = np.concatenate([0.1 * np.sin(2 * np.pi * 200 * t), np.zeros(sr)]).astype(np.float32)
    env = loudness_envelope(wav, 50, fps)
    assert env[:25] == pytest.approx(20 * np.log10(0.1 / np.sqrt(2)), abs=0.05)
    assert env[30:] == pytest.approx(env[0] - FLOOR_DB, abs=1e-6)  # digital silence, not -100 dB
    assert loudness_envelope(wav, 50, fps, floor_db=0)[30:].max() < -90


# ---------------------------------------------------------------- a synthetic talking clip
@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory):
    from erlnet.synth import SynthConfig, generate

    return generate(SynthConfig(seconds=2, size=128, style="expressive", speech="builtin"),
                    tmp_path_factory.mktemp("talking") / "clip", progress=False)


def test_the_real_mouth_of_a_synthetic_clip_follows_its_speech(clip, one_thread: None) -> None:
    own = video_opening_loudness(clip.video)  # the video's own audio track
    assert own.frames == 50 and own.best_r > 0.3 and own.r > 0.3 and abs(own.best_lag) <= 1
    from_wav = video_opening_loudness(clip.video, clip.video.parent / "audio.wav")
    assert from_wav.r == pytest.approx(own.r, abs=0.02)
    truth = np.load(clip.video.parent / "truth.npz")["mouth_open"]
    tracked = video_opening(clip.video)
    assert np.corrcoef(truth, tracked)[0, 1] > 0.8  # the tracked opening is the synthesised one


def test_a_frozen_mouth_reads_as_not_talking(clip, tmp_path: Path, one_thread: None) -> None:
    from erlnet.io.audio import load_audio
    from erlnet.io.video import VideoWriter, iter_frames

    first = next(iter(iter_frames(clip.video)))
    wav = load_audio(clip.video.parent / "audio.wav")
    frozen = tmp_path / "frozen.mp4"
    with VideoWriter(frozen, fps=25, audio=wav) as w:
        for _ in range(50):
            w.write(first)
    c = video_opening_loudness(frozen)
    # Static tracking reads the still mouth as still (the encoder's noise moves it by ~1e-5).
    assert c.span < 0.001 and math.isnan(c.r) and math.isnan(c.best_r) and "still" in c.reason


def test_a_subject_scores_its_own_mouth_without_tracking_again(clip, tmp_path: Path, one_thread: None) -> None:
    from erlnet.preprocess.pipeline import PreprocessConfig, run_preprocess

    subject = tmp_path / "subject"
    run_preprocess(clip.video, subject, PreprocessConfig(size=128), show_progress=False)
    c = subject_opening_loudness(subject)
    assert c.frames == 50 and c.best_r > 0.3 and abs(c.best_lag) <= 1
    late = subject_opening_loudness(subject, np.arange(10, 50))
    assert late.frames == 40 and late.best_r > 0.3
    with pytest.raises(InputError):
        subject_opening_loudness(subject, np.array([1, 3, 4]))
