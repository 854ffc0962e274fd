"""Offline (non-causal, zero-phase) smoothing of landmark tracks, gap filling and jitter measures.

Method: tracking jitter is removed without lagging or flattening fast expressions by splitting the
track into head motion and head-local deformation.
1. Per-frame similarity (robust fit on the rigid points) to the track's mean shape = head pose.
2. Pose (log-scale, rotation vector, translation) is smoothed with a Gaussian: heads move slowly.
3. Head-local landmarks are smoothed per region (mouth, each eye, brows, jaw, rigid, rest):
   a. fast-moving regions (mouth, jaw, eyes) are first projected onto their significant principal
      motions (those whose variance clears the noise floor): noise is spread over all 3n
      dimensions of a region, speech motion lives in a few, and the projection is instantaneous;
   b. a temporal *bilateral* filter: neighbouring frames are averaged with Gaussian time weights
      times a range weight that falls off when the region as a whole has moved much more than its
      noise level (estimated from the data). Noise is averaged away; blinks and mouth openings keep
      their depth.
Every step is symmetric in time or per frame, so nothing lags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

from erlnet.errors import InputError
from erlnet.face import pose as P
from erlnet.face import topology as tp


@dataclass
class SmoothingConfig:
    """Strengths of the landmark smoother; times are Gaussian standard deviations in seconds."""

    pose_sigma: float = 0.04  # head pose (1 frame at 25 fps); 0 disables
    rigid_sigma: float = 0.12  # head-local motion of rigid points (pure noise after pose removal)
    face_sigma: float = 0.08  # cheeks, forehead, remaining upper face
    jaw_sigma: float = 0.04  # points below the nose tip that are not lips (move with the jaw)
    brow_sigma: float = 0.06  # eyebrows
    mouth_sigma: float = 0.04  # lips
    eye_sigma: float = 0.06  # lids and irises, each eye separately (blinks, winks, saccades)
    # Range-kernel width in units of a region's frame-to-frame noise: motion well above this is
    # treated as real and not averaged across; larger values smooth more through fast motion.
    edge_threshold: float = 1.0
    lowrank: bool = True  # step 3a on the mouth, jaw and eye regions
    lowrank_margin: float = 1.5  # keep principal motions whose variance exceeds margin x noise bound
    decompose_pose: bool = True  # False: filter pixel coordinates directly (no head-pose split)


# ----------------------------------------------------------------------------------------------
# Gaps and measurements


def fill_gaps(lms: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linearly interpolate invalid frames in time, holding the first/last valid frame at the ends.

    lms (T, ...) (any trailing shape), valid (T,) bool -> same shape and dtype, all frames filled.
    """
    lms = np.asarray(lms)
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != (len(lms),):
        raise InputError(f"valid must be a ({len(lms)},) bool array, got shape {valid.shape}")
    good = np.flatnonzero(valid)
    if len(good) == 0:
        raise InputError("no frame with a tracked face: cannot fill the gaps")
    t = np.arange(len(lms))
    nxt = np.searchsorted(good, t).clip(max=len(good) - 1)  # first valid frame >= t (or the last)
    prv = np.clip(np.searchsorted(good, t, side="right") - 1, 0, None)  # last valid frame <= t
    t0, t1 = good[prv], good[nxt]
    a = np.where(t1 > t0, (t - t0) / np.maximum(t1 - t0, 1), 0.0)
    a = a.reshape((-1,) + (1,) * (lms.ndim - 1))
    out = (1.0 - a) * lms[t0].astype(np.float64) + a * lms[t1].astype(np.float64)
    out[valid] = lms[valid]
    return out.astype(lms.dtype)


def jitter(lms: np.ndarray, frames: slice = slice(None), points: np.ndarray | None = None) -> float:
    """RMS frame-to-frame displacement (lms units, e.g. pixels) over frames[frames] and points."""
    x = np.asarray(lms, dtype=np.float64)[frames]
    if points is not None:
        x = x[:, points]
    d = np.diff(x, axis=0)
    return float(np.sqrt((d**2).sum(axis=-1).mean()))


def lag_frames(raw_signal: np.ndarray, smoothed_signal: np.ndarray, max_lag: int = 10) -> int:
    """Delay of smoothed vs raw at the cross-correlation peak, frames (> 0: smoothed lags behind)."""
    a = np.asarray(raw_signal, np.float64).ravel()
    b = np.asarray(smoothed_signal, np.float64).ravel()
    if a.shape != b.shape or len(a) <= 2 * max_lag:
        raise ValueError(f"need two equal signals longer than 2*max_lag, got {a.shape}, {b.shape}")
    a, b = a - a.mean(), b - b.mean()
    n = len(a)
    lags = np.arange(-max_lag, max_lag + 1)
    # Normalised by overlap so larger |lag| is not penalised just for having fewer terms.
    corr = [np.dot(a[: n - k], b[k:]) / (n - k) if k >= 0 else np.dot(a[-k:], b[: n + k]) / (n + k) for k in lags]
    return int(lags[int(np.argmax(corr))])


# ----------------------------------------------------------------------------------------------
# Filters


def _frames(sigma_s: float, fps: float) -> float:
    return max(sigma_s, 0.0) * fps


def gaussian_smooth(x: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Zero-phase Gaussian along axis 0 (edges: nearest). x (T, ...) -> same shape, float64."""
    x = np.asarray(x, dtype=np.float64)
    if sigma_frames <= 0 or len(x) < 2:
        return x.copy()
    return gaussian_filter1d(x, sigma_frames, axis=0, mode="nearest")


def noise_sigma(x: np.ndarray) -> float:
    """Robust per-axis white-noise std of a track x (T, N, 3) from its second differences."""
    if len(x) < 3:
        return 0.0
    d2 = x[2:] - 2.0 * x[1:-1] + x[:-2]  # white noise e gives var 6 sigma^2; smooth motion ~0
    return float(np.median(np.abs(d2)) / 0.6745 / math.sqrt(6.0))


def lowrank_denoise(x: np.ndarray, sigma: float, margin: float = 1.5) -> np.ndarray:
    """Project a region's motion onto its principal components that rise above white noise.

    x (T, N, 3), sigma: per-axis noise std -> (T, N, 3) float64. A component is kept when its
    variance exceeds margin * sigma^2 (1 + sqrt(p / T))^2, the largest eigenvalue pure noise gives
    (Marchenko-Pastur) for p = 3N dimensions.
    """
    x = np.asarray(x, dtype=np.float64)
    n_t = len(x)
    flat = x.reshape(n_t, -1)
    p = flat.shape[1]
    if n_t < 3 or sigma <= 0:
        return x.copy()
    mean = flat.mean(axis=0)
    centred = flat - mean
    evals, evecs = np.linalg.eigh(centred.T @ centred / n_t)
    bound = margin * sigma**2 * (1.0 + math.sqrt(p / n_t)) ** 2
    keep = evecs[:, evals > bound]
    return (mean + (centred @ keep) @ keep.T).reshape(x.shape)


def bilateral_smooth(
    x: np.ndarray, sigma_frames: float, edge_threshold: float = 1.0, noise: float | None = None
) -> np.ndarray:
    """Temporal bilateral filter of one region. x (T, N, 3) -> (T, N, 3) float64.

    Frame t+o contributes exp(-o^2 / 2 sigma^2) * exp(-d^2 / 2 h^2), with d^2 the region-mean squared
    displacement between t and t+o and h^2 = edge_threshold^2 * (the d^2 that noise alone gives).
    noise: per-axis noise std (default: estimated from x).
    """
    x = np.asarray(x, dtype=np.float64)
    n_t = len(x)
    if sigma_frames <= 0 or n_t < 3:
        return x.copy()
    sig_n = noise_sigma(x) if noise is None else noise
    # Pure noise gives E|e1 - e2|^2 = 6 sigma^2 per point (3 axes, two frames).
    h2 = max(edge_threshold**2 * 6.0 * sig_n**2, 1e-30)
    radius = max(1, math.ceil(2.5 * sigma_frames))
    acc = x.copy()
    wsum = np.ones(n_t)
    for o in range(1, radius + 1):
        if o >= n_t:
            break
        # Pair (t, t+o): one weight serves both directions, which keeps the filter symmetric.
        d2 = ((x[o:] - x[:-o]) ** 2).sum(axis=-1).mean(axis=-1)
        w = math.exp(-0.5 * (o / sigma_frames) ** 2) * np.exp(-0.5 * d2 / h2)
        acc[:-o] += w[:, None, None] * x[o:]
        wsum[:-o] += w
        acc[o:] += w[:, None, None] * x[:-o]
        wsum[o:] += w
    return acc / wsum[:, None, None]


# ----------------------------------------------------------------------------------------------
# Landmark smoothing


def _regions(canon: np.ndarray, n_points: int) -> list[tuple[np.ndarray, str]]:
    """Partition the points into (indices, config field) regions; the jaw region is found from the
    canonical shape (below the nose tip)."""
    label = np.full(n_points, "face_sigma", dtype=object)
    y = canon[:, 1]
    label[(y > y[tp.NOSE_TIP]) & (np.arange(n_points) < tp.N_MESH)] = "jaw_sigma"
    label[tp.RIGID] = "rigid_sigma"
    label[tp.BROWS] = "brow_sigma"
    label[tp.MOUTH] = "mouth_sigma"
    out: list[tuple[np.ndarray, str]] = []
    for eye in (
        np.concatenate([tp.RIGHT_EYE_CONTOUR, tp.RIGHT_IRIS]),
        np.concatenate([tp.LEFT_EYE_CONTOUR, tp.LEFT_IRIS]),
    ):
        eye = eye[eye < n_points]
        label[eye] = ""  # handled as its own region below
        out.append((eye, "eye_sigma"))
    for name in ("face_sigma", "jaw_sigma", "rigid_sigma", "brow_sigma", "mouth_sigma"):
        idx = np.flatnonzero(label == name)
        if len(idx):
            out.append((idx, name))
    return out


_LOWRANK_REGIONS = ("mouth_sigma", "jaw_sigma", "eye_sigma")


def _smooth_local(local: np.ndarray, canon: np.ndarray, fps: float, cfg: SmoothingConfig) -> np.ndarray:
    out = np.empty_like(local)
    # Rigid points hold still in the head frame, so their second differences measure pure noise; fast
    # regions over-estimate theirs (speech has large accelerations), hence the cap.
    ref = noise_sigma(local[:, tp.RIGID])
    for idx, field in _regions(canon, local.shape[1]):
        x = local[:, idx]
        noise = min(noise_sigma(x), 1.5 * ref) if ref > 0 else noise_sigma(x)
        if cfg.lowrank and field in _LOWRANK_REGIONS:
            x = lowrank_denoise(x, noise, cfg.lowrank_margin)
            noise = noise_sigma(x)
        out[:, idx] = bilateral_smooth(x, _frames(getattr(cfg, field), fps), cfg.edge_threshold, noise)
    return out


def _smooth_similarities(
    s: np.ndarray, r: np.ndarray, t: np.ndarray, sigma_frames: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian-smooth per-frame similarities: log scale, translation, rotation vector about the mean."""
    if sigma_frames <= 0:
        return s, r, t
    rots = Rotation.from_matrix(r)
    mean = rots.mean()
    rel = (mean.inv() * rots).as_rotvec()  # small angles about the mean: safe to average linearly
    r_s = (mean * Rotation.from_rotvec(gaussian_smooth(rel, sigma_frames))).as_matrix()
    s_s = np.exp(gaussian_smooth(np.log(s), sigma_frames))
    return s_s, r_s, gaussian_smooth(t, sigma_frames)


def smooth_landmarks(
    lms: np.ndarray, valid: np.ndarray | None, fps: float, config: SmoothingConfig | None = None
) -> np.ndarray:
    """Zero-phase smoothing of a landmark track. lms (T, N, 3) pixels (MediaPipe topology), valid
    (T,) bool (None = all finite frames) -> (T, N, 3) float32, gaps filled by interpolation."""
    cfg = config or SmoothingConfig()
    lms = np.asarray(lms)
    if lms.ndim != 3 or lms.shape[2] != 3 or lms.shape[1] < tp.N_MESH:
        raise InputError(f"expected landmarks (T, 468 or 478, 3), got shape {lms.shape}")
    if fps <= 0:
        raise InputError(f"fps must be positive, got {fps}")
    ok = np.isfinite(lms).all(axis=(1, 2))
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    x = fill_gaps(lms, ok).astype(np.float64)
    if len(x) < 3:
        return x.astype(np.float32)
    if not cfg.decompose_pose:
        canon = x.mean(axis=0)
        return _smooth_local(x, canon, fps, cfg).astype(np.float32)

    canon = P.fit_canonical(x, max_frames=200).astype(np.float64)
    s, r, t = P.robust_similarity_batch(np.broadcast_to(canon[tp.RIGID], x[:, tp.RIGID].shape), x[:, tp.RIGID])
    # Head-local coordinates (metres, canonical frame): x = s R local + t.
    local = ((x - t[:, None]) @ r) / s[:, None, None]  # row vectors: (R^T v)^T = v^T R
    local = _smooth_local(local, canon, fps, cfg)
    s, r, t = _smooth_similarities(s, r, t, _frames(cfg.pose_sigma, fps))
    out = s[:, None, None] * (local @ np.swapaxes(r, 1, 2)) + t[:, None]
    return out.astype(np.float32)
