from __future__ import annotations

import numpy as np
import pytest

from erlnet.errors import InputError
from erlnet.face import topology as tp
from erlnet.face.blink import blink_signal, detect_blinks, eye_aspect_ratio


def synthetic_ear(T: int, blinks: list[tuple[int, int]], open_ear: float, seed: int = 0) -> np.ndarray:
    """(T,) EAR: open level with noise, dropping to ~0.15 of it in each [start, end) blink."""
    rng = np.random.default_rng(seed)
    ear = open_ear * (1.0 + 0.03 * rng.normal(size=T))
    for a, b in blinks:
        ear[a:b] = open_ear * 0.15
        ear[a - 1] = ear[b] = open_ear * 0.7  # partly closed on the transition frames
    return ear


def test_blink_signal_is_subject_relative_and_finds_blinks() -> None:
    truth = [(20, 23), (60, 64), (130, 132)]
    for open_ear in (0.22, 0.35):  # two subjects with different eye shapes give the same signal
        sig = blink_signal(synthetic_ear(200, truth, open_ear))
        assert sig.shape == (200,) and sig.min() >= 0.0 and sig.max() <= 1.0
        assert np.all(sig[[21, 61, 130]] > 0.9)
        assert np.percentile(sig, 50) < 0.05
        assert detect_blinks(sig, threshold=0.5) == truth


def test_two_eyes_are_averaged_and_wink_is_half() -> None:
    left = synthetic_ear(100, [(40, 43)], 0.3, seed=1)
    right = synthetic_ear(100, [], 0.3, seed=2)
    sig = blink_signal(np.stack([left, right], axis=1))
    assert 0.4 < sig[41] < 0.6
    assert detect_blinks(sig, threshold=0.7) == []


def test_detect_blinks_merges_and_filters() -> None:
    s = np.zeros(50)
    s[10:12] = 1.0
    s[13:15] = 1.0  # a one-frame dip inside a blink
    s[30:45] = 1.0  # eyes closed for 15 frames: not a blink
    assert detect_blinks(s, merge_gap=1) == [(10, 15), (30, 45)]
    assert detect_blinks(s, merge_gap=0) == [(10, 12), (13, 15), (30, 45)]
    assert detect_blinks(s, max_frames=10) == [(10, 15)]
    assert detect_blinks(np.ones(3)) == [(0, 3)]


def test_eye_aspect_ratio_geometry() -> None:
    lms = np.zeros((478, 3))
    for idx, cx in ((tp.LEFT_EYE, 60.0), (tp.RIGHT_EYE, 0.0)):
        p1, p2, p3, p4, p5, p6 = idx
        lms[p1], lms[p4] = (cx - 15, 0, 0), (cx + 15, 0, 0)  # 30 px wide
        lms[p2], lms[p6] = (cx - 5, -4, 0), (cx - 5, 5, 0)  # 9 px
        lms[p3], lms[p5] = (cx + 5, -4, 0), (cx + 5, 2, 0)  # 6 px
    ear = eye_aspect_ratio(lms)
    assert ear.shape == (1, 2)
    assert np.allclose(ear, (9 + 6) / (2 * 30))
    with pytest.raises(InputError, match="landmarks"):
        eye_aspect_ratio(np.zeros((5, 10, 3)))
