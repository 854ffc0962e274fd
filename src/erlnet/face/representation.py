"""Swappable motion representations: expression vectors <-> landmarks in the canonical head frame.

The renderer and motion model only see ``MotionRepresentation``; a parametric model (e.g. FLAME) can
be added as another subclass without touching them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from erlnet.errors import InputError
from erlnet.face import topology as tp
from erlnet.face.blink import blink_signal, eye_aspect_ratio


class MotionRepresentation(ABC):
    """Maps per-frame head-frame landmarks to expression vectors and back."""

    name: ClassVar[str]

    @property
    @abstractmethod
    def dim(self) -> int:
        """Width of the expression vector."""

    @abstractmethod
    def encode(self, canon: np.ndarray, neutral: np.ndarray) -> np.ndarray:
        """canon (T, N, 3) landmarks in the canonical head frame (metres), neutral (N, 3) -> (T, dim)."""

    @abstractmethod
    def decode(self, expr: np.ndarray, neutral: np.ndarray) -> np.ndarray:
        """expr (T, dim), neutral (N, 3) -> (T, N, 3) canonical-frame landmarks (metres)."""


@dataclass
class LandmarkRepresentationConfig:
    """Landmark-displacement expression representation."""

    points: Literal["all", "expressive"] = "all"  # all 478 points, or topology.EXPRESSIVE (125 points)
    n_points: int = tp.N_LANDMARKS  # landmarks per frame (478 with iris, 468 without)

    def setup(self) -> LandmarkRepresentation:
        return LandmarkRepresentation(self)


class LandmarkRepresentation(MotionRepresentation):
    """Expression = 3D displacement from the subject's neutral face, divided by the neutral's outer
    eye-corner distance so the same vector means the same expression on another face.

    Layout: (T, 3 * K) with K selected points, point-major (x, y, z of point 0, then point 1, ...).
    Decoding leaves unselected points at the neutral position.
    """

    name: ClassVar[str] = "landmarks"

    def __init__(self, config: LandmarkRepresentationConfig | None = None) -> None:
        self.config = config or LandmarkRepresentationConfig()
        if self.config.points == "all":
            self.indices = np.arange(self.config.n_points)
        elif self.config.points == "expressive":
            self.indices = tp.EXPRESSIVE[tp.EXPRESSIVE < self.config.n_points]
        else:
            raise InputError(f"points must be 'all' or 'expressive', got {self.config.points!r}")

    @property
    def dim(self) -> int:
        return 3 * len(self.indices)

    def _neutral(self, neutral: np.ndarray) -> tuple[np.ndarray, float]:
        neutral = np.asarray(neutral, dtype=np.float64)
        if neutral.shape != (self.config.n_points, 3):
            raise InputError(f"expected a neutral face ({self.config.n_points}, 3), got {neutral.shape}")
        unit = float(np.linalg.norm(neutral[263] - neutral[33]))
        if not unit > 0:
            raise InputError("neutral face has coincident outer eye corners (33, 263)")
        return neutral, unit

    def encode(self, canon: np.ndarray, neutral: np.ndarray) -> np.ndarray:
        neutral, unit = self._neutral(neutral)
        canon = np.asarray(canon, dtype=np.float64)
        if canon.ndim != 3 or canon.shape[1:] != neutral.shape:
            raise InputError(f"expected canonical landmarks (T, {len(neutral)}, 3), got {canon.shape}")
        disp = (canon[:, self.indices] - neutral[self.indices]) / unit
        return disp.reshape(len(canon), -1).astype(np.float32)

    def decode(self, expr: np.ndarray, neutral: np.ndarray) -> np.ndarray:
        neutral, unit = self._neutral(neutral)
        expr = np.asarray(expr, dtype=np.float64)
        if expr.ndim != 2 or expr.shape[1] != self.dim:
            raise InputError(f"expected expressions (T, {self.dim}), got {expr.shape}")
        out = np.repeat(neutral[None], len(expr), axis=0)
        out[:, self.indices] += expr.reshape(len(expr), -1, 3) * unit
        return out.astype(np.float32)


def estimate_neutral(
    canon: np.ndarray, mouth_quantile: float = 0.25, max_closure: float = 0.3, min_frames: int = 5
) -> np.ndarray:
    """Subject's neutral face: per-point median of calm frames. canon (T, N, 3) -> (N, 3) float32.

    Calm = mouth opening in the lowest mouth_quantile of the clip and eyes open (blink signal below
    max_closure); the median ignores the odd frame with another expression. Falls back to all frames
    with open eyes (then all frames) when fewer than min_frames qualify.
    """
    canon = np.asarray(canon, dtype=np.float64)
    if canon.ndim != 3 or canon.shape[1] < tp.N_MESH or canon.shape[2] != 3 or len(canon) == 0:
        raise InputError(f"expected canonical landmarks (T, 478, 3) with T > 0, got {canon.shape}")
    ok = np.isfinite(canon).all(axis=(1, 2))
    if not ok.any():
        raise InputError("no finite frame to estimate the neutral face from")
    x = canon[ok]
    opening = tp.mouth_opening(x)
    eyes_open = blink_signal(eye_aspect_ratio(x)) < max_closure
    calm = eyes_open & (opening <= np.quantile(opening, mouth_quantile))
    for candidate in (calm, eyes_open):
        if candidate.sum() >= min_frames:
            return np.median(x[candidate], axis=0).astype(np.float32)
    return np.median(x, axis=0).astype(np.float32)
