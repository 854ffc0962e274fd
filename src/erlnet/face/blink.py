"""Eye aspect ratio, a normalised per-subject blink signal and blink events.

Measured on real MediaPipe tracks (sadtalker / retalking clips): open eyes give EAR ~0.25-0.35,
closed lids ~0.05-0.08, i.e. about 0.2 of the subject's open level.
"""

from __future__ import annotations

import numpy as np

from erlnet.errors import InputError
from erlnet.face import topology as tp


def _ear_one(lms: np.ndarray, idx: np.ndarray) -> np.ndarray:
    p = lms[:, idx]
    vertical = np.linalg.norm(p[:, 1] - p[:, 5], axis=-1) + np.linalg.norm(p[:, 2] - p[:, 4], axis=-1)
    return vertical / np.maximum(2.0 * np.linalg.norm(p[:, 0] - p[:, 3], axis=-1), 1e-9)


def eye_aspect_ratio(lms: np.ndarray, use_z: bool = True) -> np.ndarray:
    """EAR (Soukupova & Cech 2016) of both eyes. lms (T, 478, 3) or (478, 3) -> (T, 2) float32,
    columns (left, right) in the subject's sense (MediaPipe naming). use_z: 3D distances, which
    keep the ratio steadier under head yaw."""
    lms = np.asarray(lms, dtype=np.float64)
    if lms.ndim == 2:
        lms = lms[None]
    if lms.ndim != 3 or lms.shape[1] < tp.N_MESH or lms.shape[2] not in (2, 3):
        raise InputError(f"expected landmarks (T, 478, 3), got shape {lms.shape}")
    if not use_z:
        lms = lms[..., :2]
    return np.stack([_ear_one(lms, tp.LEFT_EYE), _ear_one(lms, tp.RIGHT_EYE)], axis=1).astype(np.float32)


def blink_signal(ear: np.ndarray, open_percentile: float = 75.0, closed_ratio: float = 0.2) -> np.ndarray:
    """Eye closure in [0, 1] (0 open, 1 closed) relative to the subject's own open-eye EAR.

    ear (T,) or (T, E) (e.g. both eyes) -> (T,) float32, the mean over eyes. Per eye, "open" is the
    open_percentile of its EAR over the clip (eyes are open most of the time, so this ignores blinks
    and squints) and "closed" is closed_ratio times that.
    """
    ear = np.asarray(ear, dtype=np.float64)
    if ear.ndim == 1:
        ear = ear[:, None]
    if ear.ndim != 2 or len(ear) == 0:
        raise InputError(f"expected EAR of shape (T,) or (T, eyes) with T > 0, got {ear.shape}")
    finite = np.where(np.isfinite(ear), ear, np.nan)
    open_level = np.nanpercentile(finite, open_percentile, axis=0)
    closed_level = closed_ratio * open_level
    closure = (open_level - finite) / np.maximum(open_level - closed_level, 1e-9)
    closure = np.clip(closure, 0.0, 1.0)
    return np.nan_to_num(np.nanmean(closure, axis=1), nan=0.0).astype(np.float32)


def detect_blinks(
    signal: np.ndarray, threshold: float = 0.5, merge_gap: int = 1, max_frames: int | None = None
) -> list[tuple[int, int]]:
    """Blink events as half-open frame ranges [start, end) where signal >= threshold.

    Runs separated by at most merge_gap frames below threshold are merged (noise mid-blink);
    runs longer than max_frames (deliberately closed eyes, looking down) are dropped.
    """
    s = np.asarray(signal, dtype=np.float64).ravel()
    above = np.concatenate([[False], s >= threshold, [False]])
    edges = np.flatnonzero(np.diff(above.astype(np.int8)))
    runs = list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))
    merged: list[tuple[int, int]] = []
    for start, end in runs:
        if merged and start - merged[-1][1] <= merge_gap:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    if max_frames is not None:
        merged = [(a, b) for a, b in merged if b - a <= max_frames]
    return merged
