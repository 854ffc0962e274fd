"""Head motion and blinks of the synthetic subject."""

from __future__ import annotations

import numpy as np

from erlnet.synth.motion import blink_profile, frame_times, sample_blinks, sample_head_motion
from erlnet.synth.styles import STYLES


def test_blinks_close_fully_for_the_right_time_at_the_right_rate():
    fps = 25
    closure, onsets = sample_blinks(25 * 120, fps, STYLES["neutral"], np.random.default_rng(3))
    gaps = np.diff(onsets)
    assert len(onsets) >= 120 / 6.25 and gaps.min() >= 2.15 and gaps.max() <= 6.25
    assert 0.0 <= closure.min() and closure.max() <= 1.0
    t = frame_times(len(closure), fps)
    for start in onsets[:-1]:
        inside = closure[(t >= start) & (t < start + 0.25)]
        assert inside.max() == 1.0  # every blink has a frame with both lids shut
        assert 3 <= np.count_nonzero(inside > 0) <= 7  # ~0.15-0.25 s at 25 frames/s
    assert (closure == 0).mean() > 0.9  # eyes are open most of the time


def test_blink_profile_holds_one_frame_closed_at_any_phase():
    for phase in np.linspace(0, 0.04, 9):
        dt = np.arange(-0.02, 0.3, 0.04) + phase
        assert blink_profile(dt, 0.15, 25.0).max() == 1.0


def test_head_motion_has_the_style_amplitudes_and_is_smooth():
    n, fps = 25 * 600, 25
    loud = np.zeros(n)
    for name in ("neutral", "nodding", "still"):
        style = STYLES[name]
        m = sample_head_motion(n, fps, style, loud, np.random.default_rng(0))
        rms = np.sqrt((m.euler_deg**2).mean(axis=0))
        np.testing.assert_allclose(rms, style.head_amplitude_deg, rtol=0.2)
        t_rms = np.sqrt((m.translation_m**2).mean(axis=0))
        np.testing.assert_allclose(t_rms, style.translation_m, rtol=0.25)
        # smooth: the per-frame change is small compared with the range
        step = np.abs(np.diff(m.euler_deg, axis=0)).max(axis=0)
        assert (step < 0.1 * np.ptp(m.euler_deg, axis=0)).all()
    fast = sample_head_motion(n, fps, STYLES["nodding"], loud, np.random.default_rng(0)).euler_deg
    slow = sample_head_motion(n, fps, STYLES["neutral"], loud, np.random.default_rng(0)).euler_deg
    # nodding: larger and faster pitch (mean absolute velocity)
    assert np.abs(np.diff(fast[:, 0])).mean() > 3 * np.abs(np.diff(slow[:, 0])).mean()


def test_head_motion_dips_with_loud_speech_and_is_seeded():
    n, fps = 25 * 20, 25
    loud = np.zeros(n)
    loud[200:300] = 1.0
    style = STYLES["nodding"]
    quiet = sample_head_motion(n, fps, style, np.zeros(n), np.random.default_rng(4)).euler_deg
    talking = sample_head_motion(n, fps, style, loud, np.random.default_rng(4)).euler_deg
    dip = talking[:, 0] - quiet[:, 0]
    assert dip[230:270].mean() < dip[:150].mean() - 0.8 * style.nod_with_speech_deg
    np.testing.assert_array_equal(talking[:, 1:], quiet[:, 1:])
    other = sample_head_motion(n, fps, style, loud, np.random.default_rng(5)).euler_deg
    assert not np.allclose(other, talking)
