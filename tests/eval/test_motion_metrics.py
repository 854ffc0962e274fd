"""Motion metrics on hand-made signals, and `erlnet eval-motion` on a procedural corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from erlnet.errors import InputError
from erlnet.eval.motion import (
    EvalConfig,
    NearestCentroid,
    _style_partners,
    av_sync,
    code_perplexity,
    evaluate_motion,
    format_report,
    lagged_correlation,
    landmark_distance,
    mean_rotation,
    pose_statistics,
    region_displacements,
    style_features,
    write_report,
)
from erlnet.face import topology as tp
from erlnet.face.pose import matrix_from_euler


def _smooth_noise(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.convolve(rng.normal(size=n + 8), np.ones(5) / 5, mode="valid")[:n]


@pytest.mark.parametrize("shift", [-3, 0, 2, 4])
def test_known_offset_is_recovered(shift: int) -> None:
    audio = _smooth_noise(200, 1)
    video = np.roll(audio, shift)  # video[t] = audio[t - shift]: the mouth follows by `shift` frames
    lags, corr = lagged_correlation(video, audio, max_lag=5)
    assert lags[np.argmax(corr)] == shift
    res = av_sync(video, audio, max_lag=5)
    assert res.best_offset == shift and res.best_corr > 0.95
    assert (res.corr_at_zero > 0.95) == (shift == 0)


def test_sync_of_a_constant_signal_is_undefined_not_an_error() -> None:
    res = av_sync(np.ones(50), _smooth_noise(50, 2), max_lag=3)
    assert np.isnan(res.corr_at_zero) and np.isnan(res.best_corr)


def test_lagged_correlation_rejects_bad_input() -> None:
    with pytest.raises(InputError, match="same length|one length"):
        lagged_correlation(np.zeros(10), np.zeros(11), 2)
    with pytest.raises(InputError, match="too short"):
        lagged_correlation(np.zeros(6), np.zeros(6), 5)


def test_lmd_zero_for_identical_and_exact_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    lms = rng.normal(size=(7, 478, 3))
    assert landmark_distance(lms, lms) == 0.0
    moved = lms.copy()
    moved[:, tp.MOUTH] += np.array([0.0, 2.0, 0.0])  # 2 units down, mouth only
    assert landmark_distance(moved, lms, tp.MOUTH) == pytest.approx(2.0)
    assert landmark_distance(moved, lms) == pytest.approx(2.0 * len(tp.MOUTH) / 478)
    with pytest.raises(InputError):
        landmark_distance(lms, lms[:, :10])


def test_pose_statistics_of_a_steady_turn() -> None:
    fps, n = 25.0, 101
    yaw = np.linspace(0.0, 40.0, n)  # 10 degrees per second
    R = matrix_from_euler(np.stack([np.zeros(n), yaw, np.zeros(n)], axis=1), degrees=True)
    t = np.zeros((n, 3))
    t[:, 0] = np.linspace(0, 0.004, n)  # 4 mm over 4 s: 1 mm/s
    s = pose_statistics(R, t, fps)
    assert s["angular_speed_deg_s"] == pytest.approx(10.0, rel=1e-3)
    assert s["rotation_range_deg"] == pytest.approx(0.9 * 40.0 / 3, rel=1e-2)  # 5-95 % of yaw, mean of 3 axes
    assert s["translation_speed_mm_s"] == pytest.approx(1.0, rel=1e-3)
    still = pose_statistics(np.repeat(np.eye(3)[None], 10, 0), np.zeros((10, 3)))
    assert still["angular_speed_deg_s"] == pytest.approx(0.0, abs=1e-6) and still["translation_range_mm"] == 0.0


def test_mean_rotation_of_symmetric_turns_is_the_middle() -> None:
    R = matrix_from_euler(np.array([[0, -5, 0], [0, 5, 0], [3, 0, 0], [-3, 0, 0]]), degrees=True)
    assert np.allclose(mean_rotation(R), np.eye(3), atol=1e-9)


def test_style_features_and_classifier_separate_a_smile_from_a_frown() -> None:
    rng = np.random.default_rng(0)
    idx = np.arange(478)

    def clip(kind: str) -> np.ndarray:
        d = rng.normal(0, 0.003, size=(40, 478, 3))
        if kind == "happy":
            d[:, [61, 78, 291, 308], 1] -= 0.05  # corners up
        else:
            d[:, tp.BROWS, 1] += 0.05  # brows down
        return d.reshape(40, -1)

    feats = region_displacements(clip("happy"), idx)
    assert feats.shape == (40, 3 * 10)
    x = np.stack([style_features(clip(k), idx) for k in ("happy", "angry") * 3])
    clf = NearestCentroid().fit(x, ["happy", "angry"] * 3)
    test = np.stack([style_features(clip(k), idx) for k in ("angry", "happy")])
    assert clf.predict(test) == ["angry", "happy"]


def test_code_perplexity_counts_codes_in_use() -> None:
    codes = np.stack([np.repeat(np.arange(4), 5), np.zeros(20, int)], axis=1)  # 4 codes evenly / 1 code
    assert code_perplexity(codes, 16) == pytest.approx([4.0, 1.0])


def _bundle(corpus_root: Path, out: Path) -> Path:
    """An untrained (statistics-only) motion-model bundle for the corpus, marked as trained."""
    from erlnet.inference.animate import save_motion_model
    from erlnet.motion.config import ADFConfig, RegressorConfig, compute_statistics
    from erlnet.motion.corpus import Corpus

    c = Corpus(corpus_root)
    clips = [c.load(x) for x in c.select("train")]
    stats = compute_statistics([x.expression for x in clips], [x.rotation for x in clips],
                               [x.translation for x in clips], [x.audio for x in clips], window=16)
    model = ADFConfig.tiny().setup(c.expression_dim, c.audio_dim, statistics=stats)
    reg = RegressorConfig(d_model=16, n_blocks=2, emotion_dim=4).setup(c.expression_dim, c.audio_dim, stats)
    return save_motion_model(out, model, reg, c.audio_config, c.representation_config,
                             {"stages": {"stage1": 1, "stage2": 1, "regressor": 1}, "reference": "speaker"})


def test_evaluate_motion_reports_every_method(tmp_path: Path) -> None:
    from erlnet.motion.corpus import toy_corpus

    toy_corpus(tmp_path / "corpus", n_speech=4, n_style=1, seconds=2.0)
    model = _bundle(tmp_path / "corpus", tmp_path / "model")
    res = evaluate_motion(model, tmp_path / "corpus")
    assert set(res["methods"]) == {"truth", "vq", "adf", "regressor", "mean"}
    truth = res["methods"]["truth"]
    # In the toy corpus the jaw follows the loudness: tracked truth is in sync at lag 0.
    assert truth["sync_corr"] > 0.8 and truth["sync_offset"] == 0
    assert res["methods"]["mean"]["lmd_mouth_mm"] > 0 and np.isnan(truth["lmd_mouth_mm"])
    assert res["methods"]["vq"]["lmd_mouth_mm"] > 0 and np.isnan(res["methods"]["vq"]["angular_speed_deg_s"])
    cb = res["codebooks"]
    assert 1 <= cb["expression_heldout_perplexity"] <= cb["codebook_size"]
    assert len(cb["expression_heldout_perplexity_per_slot"]) == cb["levels"] * cb["groups"]
    assert res["style"]["available"] and res["style"]["chance"] == pytest.approx(0.25)
    assert res["style"]["truth_accuracy"] >= 0.5  # toy styles differ by constant smile / brow offsets
    text = format_report(res)
    assert "adf" in text and "style accuracy" in text and "perplexity" in text
    path = write_report(res, tmp_path / "eval.json")
    assert json.loads(path.read_text())["methods"]["truth"]["lmd_mouth_mm"] is None  # NaN -> null

    from erlnet.cli import main

    out = tmp_path / "cli.json"
    assert main(["eval-motion", "--model", str(model), "--corpus", str(tmp_path / "corpus"), "-o", str(out), "-q"]) == 0
    assert set(json.loads(out.read_text())["methods"]) == {"truth", "vq", "adf", "regressor", "mean"}


def test_several_style_clips_average_the_adf_rows_only(tmp_path: Path) -> None:
    from erlnet.motion.corpus import Corpus, toy_corpus

    toy_corpus(tmp_path / "corpus", n_speech=12, n_style=1, seconds=2.0)  # 3 speech clips per style
    corpus = Corpus(tmp_path / "corpus")
    held = [c for c in corpus.select("heldout", audio=True)][0]
    two = _style_partners(corpus, held, 2)
    assert len(two) == 2 and all(p.id != held.id and p.speaker == held.speaker for p in two)
    assert two[0].id == _style_partners(corpus, held, 1)[0].id  # the one-clip protocol picks the first of them
    model = _bundle(tmp_path / "corpus", tmp_path / "model")
    one = evaluate_motion(model, tmp_path / "corpus", config=EvalConfig(style_clips=1))
    res = evaluate_motion(model, tmp_path / "corpus", config=EvalConfig(style_clips=2))
    for m in ("truth", "vq", "regressor", "mean"):  # rows without a style clip do not change
        assert res["methods"][m]["lmd_mouth_mm"] == pytest.approx(one["methods"][m]["lmd_mouth_mm"], nan_ok=True)
    assert res["methods"]["adf"]["lmd_mouth_mm"] != pytest.approx(one["methods"]["adf"]["lmd_mouth_mm"])


def test_evaluate_motion_refuses_a_corpus_of_other_audio_features(tmp_path: Path) -> None:
    from erlnet.audio.base import MelFormantConfig
    from erlnet.motion.corpus import CorpusConfig, toy_corpus

    toy_corpus(tmp_path / "a", n_speech=2, n_style=1, seconds=2.0)
    toy_corpus(tmp_path / "b", n_speech=2, n_style=1, seconds=2.0, config=CorpusConfig(audio=MelFormantConfig(n_mels=40)))
    model = _bundle(tmp_path / "a", tmp_path / "model")
    with pytest.raises(InputError, match="audio features"):
        evaluate_motion(model, tmp_path / "b")
