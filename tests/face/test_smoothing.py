from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from erlnet.errors import InputError
from erlnet.face import pose as P
from erlnet.face import topology as tp
from erlnet.face.smoothing import SmoothingConfig, fill_gaps, jitter, lag_frames, smooth_landmarks
from erlnet.face.tracking import FaceTracker, TrackerConfig

FPS = 25.0


@pytest.fixture(scope="module")
def template() -> np.ndarray:
    """Real MediaPipe landmarks of the astronaut photo, (478, 3) pixels."""
    with FaceTracker(TrackerConfig(static_image=True)) as tracker:
        lms = tracker.process(data.astronaut()).landmarks
    assert lms is not None
    return lms.astype(np.float64)


def _eye_pairs(contour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper-lid interior points and their lower-lid partners (both from outer to inner corner)."""
    return contour[1:8], contour[15:8:-1]


def animate(template: np.ndarray, opening: np.ndarray, blink: np.ndarray, seed: int = 0) -> np.ndarray:
    """Clean track (T, 478, 3): jaw drop by opening (0..1), both eyes closed by blink (0..1), slow
    head motion (a few degrees, a few pixels)."""
    T = len(opening)
    x = np.repeat(template[None], T, axis=0)
    mouth_y = template[[13, 14], 1].mean()
    below = template[:, 1] > mouth_y
    x[:, below, 1] += 14.0 * opening[:, None]  # ~0.23 eye-corner distances of jaw drop
    for contour in (tp.RIGHT_EYE_CONTOUR, tp.LEFT_EYE_CONTOUR):
        up, low = _eye_pairs(contour)
        x[:, up] += blink[:, None, None] * (template[low] - template[up])[None]
    t = np.arange(T) / FPS
    rng = np.random.default_rng(seed)
    ph = rng.uniform(0, 2 * np.pi, 6)
    angles = np.stack([np.radians(3) * np.sin(2 * np.pi * 0.2 * t + ph[k]) for k in range(3)], 1)
    R = P.matrix_from_euler(angles)
    centre = template[tp.RIGID].mean(axis=0)
    shift = np.stack([3 * np.sin(2 * np.pi * 0.15 * t + ph[3 + k]) for k in range(3)], 1)
    return np.einsum("tij,tnj->tni", R, x - centre) + centre + shift[:, None]


def speech_opening(T: int, seed: int = 0) -> np.ndarray:
    t = np.arange(T) / FPS
    rng = np.random.default_rng(seed)
    sig = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) for f in (2.3, 3.7, 5.1))
    return np.clip(sig / 3 + 0.3, 0.0, 1.0)


def rms_error(a: np.ndarray, b: np.ndarray, points: np.ndarray | None = None) -> float:
    d = a - b if points is None else a[:, points] - b[:, points]
    return float(np.sqrt((d**2).sum(-1).mean()))


def test_jitter_drops_3x_on_smooth_motion(template: np.ndarray) -> None:
    T = 150
    t = np.arange(T) / FPS
    clean = animate(template, 0.5 + 0.4 * np.sin(2 * np.pi * 0.4 * t), np.zeros(T))
    noisy = clean + np.random.default_rng(1).normal(scale=0.6, size=clean.shape)
    smooth = smooth_landmarks(noisy.astype(np.float32), None, FPS)
    assert smooth.shape == noisy.shape and smooth.dtype == np.float32
    assert jitter(noisy) / jitter(smooth) >= 3.0
    assert rms_error(smooth, clean) < 0.5 * rms_error(noisy, clean)


@pytest.mark.parametrize("lowrank", [True, False])
def test_fast_mouth_not_lagged_and_blink_kept(template: np.ndarray, lowrank: bool) -> None:
    T = 200
    opening = speech_opening(T)
    blink = np.zeros(T)
    blink[100:103] = [0.6, 1.0, 0.6]  # a 3-frame blink
    clean = animate(template, opening, blink)
    noisy = clean + np.random.default_rng(1).normal(scale=0.6, size=clean.shape)
    smooth = smooth_landmarks(noisy, None, FPS, SmoothingConfig(lowrank=lowrank))

    # The mouth follows the truth with no delay and nearly full amplitude.
    m_true, m_smooth = tp.mouth_opening(clean), tp.mouth_opening(smooth)
    assert lag_frames(m_true, m_smooth, max_lag=5) == 0
    assert np.std(m_smooth) > 0.85 * np.std(m_true)
    corr_noisy = np.corrcoef(m_true, tp.mouth_opening(noisy))[0, 1]
    assert np.corrcoef(m_true, m_smooth)[0, 1] >= corr_noisy - 0.005  # the bilateral alone does no harm
    if lowrank:  # the principal-motion projection removes most lip noise even during fast speech
        assert np.corrcoef(m_true, m_smooth)[0, 1] > 0.99
        assert rms_error(smooth, clean, tp.MOUTH) < 0.5 * rms_error(noisy, clean, tp.MOUTH)

    # The blink keeps >= 70% of its depth (upper-to-lower lid gap of the right eye).
    def lid_gap(x: np.ndarray) -> np.ndarray:
        up, low = _eye_pairs(tp.RIGHT_EYE_CONTOUR)
        return np.linalg.norm(x[:, up] - x[:, low], axis=-1).mean(-1)

    depth = lambda g: np.median(g[80:95]) - g[99:104].min()  # noqa: E731
    assert depth(lid_gap(smooth)) >= 0.7 * depth(lid_gap(clean))


def test_plain_gaussian_would_fail_the_blink(template: np.ndarray) -> None:
    """Sanity check of the test above: an equally strong linear filter flattens the blink."""
    from erlnet.face.smoothing import gaussian_smooth

    blink = np.zeros(60)
    blink[30:33] = [0.6, 1.0, 0.6]
    clean = animate(template, np.zeros(60), blink)
    g = gaussian_smooth(clean, 1.5)
    up, low = _eye_pairs(tp.RIGHT_EYE_CONTOUR)
    gap = lambda x: np.linalg.norm(x[:, up] - x[:, low], axis=-1).mean(-1)  # noqa: E731
    assert (gap(g)[10] - gap(g).min()) < 0.7 * (gap(clean)[10] - gap(clean).min())


def test_smoothing_fills_lost_frames(template: np.ndarray) -> None:
    T = 60
    clean = animate(template, speech_opening(T), np.zeros(T))
    noisy = clean + np.random.default_rng(2).normal(scale=0.5, size=clean.shape)
    valid = np.ones(T, bool)
    valid[20:24] = False
    noisy[20:24] = np.nan
    out = smooth_landmarks(noisy, valid, FPS)
    assert np.isfinite(out).all()
    assert np.sqrt(((out[20:24] - clean[20:24]) ** 2).sum(-1).mean()) < 3.0  # pixels


def test_fill_gaps_interpolates_and_holds_ends() -> None:
    x = np.arange(6, dtype=np.float32)[:, None] * [1.0, 2.0]
    valid = np.array([False, True, False, False, True, False])
    x_in = x.copy()
    x_in[~valid] = np.nan
    out = fill_gaps(x_in, valid)
    assert np.allclose(out[1:5], x[1:5]) and np.allclose(out[0], x[1]) and np.allclose(out[5], x[4])
    with pytest.raises(InputError, match="no frame"):
        fill_gaps(x_in, np.zeros(6, bool))


def test_lag_frames_and_jitter_measures() -> None:
    t = np.arange(300)
    sig = np.sin(t / 7.0) + 0.3 * np.sin(t / 2.3)
    assert lag_frames(sig, np.roll(sig, 3), max_lag=6) == 3
    assert lag_frames(sig, np.roll(sig, -2), max_lag=6) == -2
    steps = np.zeros((4, 2, 3))
    steps[:, :, 0] = np.arange(4)[:, None] * 2.0
    assert jitter(steps) == pytest.approx(2.0)


def test_region_strength_is_configurable(template: np.ndarray) -> None:
    T = 80
    noisy = animate(template, np.zeros(T), np.zeros(T)) + np.random.default_rng(3).normal(
        scale=0.5, size=(T, 478, 3)
    )
    off = SmoothingConfig(mouth_sigma=0.0, lowrank=False)
    on = smooth_landmarks(noisy, None, FPS, SmoothingConfig(lowrank=False))
    mouth_off = smooth_landmarks(noisy, None, FPS, off)
    assert jitter(mouth_off, points=tp.MOUTH) > 2 * jitter(on, points=tp.MOUTH)


def test_real_tracker_jitter_is_reduced() -> None:
    """MediaPipe's own jitter: the astronaut photo drifting slowly under sensor noise, truth known."""
    import cv2

    from erlnet.face.tracking import track_frames

    img = data.astronaut()
    rng = np.random.default_rng(0)
    T = 80
    t = np.arange(T) / FPS
    shift = np.stack([6 * np.sin(2 * np.pi * 0.3 * t), 4 * np.sin(2 * np.pi * 0.2 * t + 1), np.zeros(T)], 1)
    frames = []
    for dx, dy, _ in shift:
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        f = cv2.warpAffine(img, m, (512, 512), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        frames.append(np.clip(f + rng.normal(scale=4.0, size=f.shape), 0, 255).astype(np.uint8))
    lms, valid, _ = track_frames(frames)
    assert valid.all()
    # Truth: one static face (the mean after removing the known drift) moved by the drift.
    truth = (lms - shift[:, None]).mean(axis=0)[None] + shift[:, None]
    smooth = smooth_landmarks(lms, valid, FPS)
    assert rms_error(smooth, truth) < 0.8 * rms_error(lms, truth)
    excess = lambda x: np.sqrt(max(jitter(x) ** 2 - jitter(truth) ** 2, 0.0))  # noqa: E731
    assert excess(smooth) < 0.5 * excess(lms)
