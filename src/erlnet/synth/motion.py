"""Head motion and blinks of the synthetic subject, sampled per video frame.

Frame i describes time (i + 0.5) / fps (docs/conventions.md). Angles follow erlnet.face.pose:
(pitch, yaw, roll) about the camera x, y, z axes, ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from erlnet.synth.styles import Style

_N_SINES = 5  # sinusoids per degree of freedom
_FREQ_RANGE_HZ = (0.07, 0.6)  # head motion of a seated speaker is slow


@dataclass(frozen=True)
class HeadMotion:
    """Per-frame head motion relative to the photo's head (which is the canonical pose)."""

    euler_deg: np.ndarray  # (T, 3) float64 (pitch, yaw, roll), degrees
    translation_m: np.ndarray  # (T, 3) float64 offset of the head pivot, camera axes, metres


def frame_times(n_frames: int, fps: float) -> np.ndarray:
    """(T,) centre time of each frame, seconds."""
    return (np.arange(n_frames) + 0.5) / fps


def smooth_noise(t: np.ndarray, rms: float, speed: float, rng: np.random.Generator) -> np.ndarray:
    """Sum of _N_SINES random low-frequency sinusoids scaled to the given RMS. t (T,) s -> (T,).

    Frequencies are log-uniform in _FREQ_RANGE_HZ times `speed`; amplitudes fall as 1/sqrt(f)
    (slower motion is larger), phases uniform. The RMS is exact over a long clip (analytic).
    """
    lo, hi = _FREQ_RANGE_HZ
    freqs = speed * np.exp(rng.uniform(np.log(lo), np.log(hi), _N_SINES))
    amps = rng.uniform(0.5, 1.0, _N_SINES) / np.sqrt(freqs)
    phases = rng.uniform(0.0, 2 * np.pi, _N_SINES)
    amps *= rms / np.sqrt(0.5 * np.sum(amps**2))
    return (amps[None, :] * np.sin(2 * np.pi * freqs[None, :] * t[:, None] + phases[None, :])).sum(axis=1)


def sample_head_motion(
    n_frames: int, fps: float, style: Style, loudness: np.ndarray, rng: np.random.Generator
) -> HeadMotion:
    """Smooth natural head motion: random sinusoids per axis plus a small speech-driven nod.

    loudness (T,) in [0, 1] (MouthDrive.loudness): speakers dip the head slightly on loud stretches;
    it is smoothed over ~0.3 s and zero-centred so the mean pose stays at the photo's pose.
    """
    t = frame_times(n_frames, fps)
    euler = np.stack(
        [smooth_noise(t, a, style.head_speed, rng) for a in style.head_amplitude_deg], axis=1
    )
    if n_frames and style.nod_with_speech_deg:
        nod = gaussian_filter1d(np.asarray(loudness, np.float64), sigma=0.3 * fps, mode="nearest")
        euler[:, 0] -= style.nod_with_speech_deg * (nod - nod.mean())  # pitch: negative = chin down
    trans = np.stack([smooth_noise(t, a, style.head_speed, rng) for a in style.translation_m], axis=1)
    return HeadMotion(euler_deg=euler, translation_m=trans)


def blink_profile(dt: np.ndarray, duration: float, fps: float) -> np.ndarray:
    """Lid closure (0 open, 1 closed) at times dt (s) after a blink starts -> same shape.

    The lid closes in 35% of the (open) time, stays fully closed for one frame period so that at
    least one frame shows it shut, and reopens more slowly.
    """
    hold = 1.0 / fps
    moving = max(duration - hold, 1e-3)
    t_close, t_open = 0.35 * moving, 0.65 * moving
    out = np.zeros_like(dt, dtype=np.float64)
    closing = (dt >= 0) & (dt < t_close)
    out[closing] = np.sin(0.5 * np.pi * dt[closing] / t_close) ** 2
    out[(dt >= t_close) & (dt <= t_close + hold)] = 1.0
    opening = (dt > t_close + hold) & (dt < duration)
    out[opening] = np.cos(0.5 * np.pi * (dt[opening] - t_close - hold) / t_open) ** 2
    return out


def sample_blinks(
    n_frames: int, fps: float, style: Style, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Blinks every style.blink_interval_s seconds (uniform), 0.15-0.25 s long.

    -> (closure (T,) float64 in [0, 1] with 1 = both lids fully closed, onsets (B,) seconds).
    """
    t = frame_times(n_frames, fps)
    closure = np.zeros(n_frames)
    onsets = []
    lo, hi = style.blink_interval_s
    start = rng.uniform(0.3, min(lo, 2.0))
    end = n_frames / fps
    while start < end:
        duration = rng.uniform(0.15, 0.25)
        a, b = np.searchsorted(t, [start, start + duration + 1.0 / fps])
        closure[a:b] = np.maximum(closure[a:b], blink_profile(t[a:b] - start, duration, fps))
        onsets.append(start)
        start += duration + rng.uniform(lo, hi)
    return closure, np.asarray(onsets)
