"""Per-frame head / torso+neck / background label maps.

A person segmenter (MediaPipe selfie segmentation) gives the person probability; face landmarks
split the person into the head (face, hair, ears) and the torso+neck. The head region is built
from face geometry in a head-aligned frame, so it follows the head's roll: the face oval is
enlarged sideways (ears, side hair), stretched upward (hair) and cut below by a neck line through
the chin, perpendicular to the head's up axis. Labels follow docs/conventions.md:
0 = background, 1 = torso and neck, 2 = head.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from erlnet.errors import InputError
from erlnet.face.topology import CHIN, EYE_OUTER_CORNERS, FACE_OVAL

_EYE_OUTER_RIGHT, _EYE_OUTER_LEFT = (int(i) for i in EYE_OUTER_CORNERS)  # 33 on the image left, 263 right

BACKGROUND, TORSO, HEAD = 0, 1, 2

_SEGMENTATION_MODELS = {"general": 0, "landscape": 1}


@dataclass
class MaskConfig:
    """Settings of the person segmentation and of the head / torso split."""

    segmentation_model: str = "general"  # "general" (256x256 input, cleaner) or "landscape" (144x256, faster)
    person_threshold: float = 0.5  # person probability at or above which a pixel is person
    min_component_fraction: float = 0.002  # drop person islands smaller than this fraction of the frame
    hair_extent: float = 0.6  # head region reaches this far above the face oval top, in face heights
    side_extent: float = 0.25  # head region reaches this far beside the face oval (ears, hair), face widths
    jaw_extent: float = 0.08  # head region reaches this far below the jaw outline, in face heights
    neck_offset: float = 0.02  # neck line (lower edge of the head) lies this far below the chin, face heights
    feather_px: float = 3.0  # Gaussian sigma (pixels) of the head/torso transition in soft_masks

    def __post_init__(self) -> None:
        if self.segmentation_model not in _SEGMENTATION_MODELS:
            raise InputError(
                f"unknown segmentation_model {self.segmentation_model!r}; use one of {sorted(_SEGMENTATION_MODELS)}"
            )
        if not 0.0 < self.person_threshold < 1.0:
            raise InputError(f"person_threshold must be in (0, 1), got {self.person_threshold}")
        extents = (
            self.hair_extent,
            self.side_extent,
            self.jaw_extent,
            self.feather_px,
            self.min_component_fraction,
        )
        if min(extents) < 0:
            raise InputError(
                "hair_extent, side_extent, jaw_extent, feather_px and min_component_fraction must be >= 0"
            )


class PersonSegmenter:
    """MediaPipe selfie segmentation, used as a context manager (it owns a native graph)."""

    def __init__(self, config: MaskConfig | None = None) -> None:
        self.config = config or MaskConfig()
        self._seg: Any = None

    def __enter__(self) -> PersonSegmenter:
        # Imported lazily: mediapipe start-up is slow and not every caller needs it.
        from mediapipe.python.solutions.selfie_segmentation import SelfieSegmentation

        self._seg = SelfieSegmentation(model_selection=_SEGMENTATION_MODELS[self.config.segmentation_model])
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._seg is not None:
            self._seg.close()
            self._seg = None

    def person_probability(self, frame_rgb: np.ndarray) -> np.ndarray:
        """Person probability of a frame.

        frame_rgb: (H, W, 3) uint8 RGB. Returns (H, W) float32 in [0, 1].
        """
        if self._seg is None:
            raise RuntimeError("PersonSegmenter must be used inside a `with` block")
        _check_frame(frame_rgb)
        result = self._seg.process(np.ascontiguousarray(frame_rgb))
        prob = result.segmentation_mask
        if prob is None:  # mediapipe returns None only on an internal failure
            return np.zeros(frame_rgb.shape[:2], np.float32)
        return np.clip(prob, 0.0, 1.0).astype(np.float32, copy=False)


def _check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise InputError(f"expected an (H, W, 3) uint8 RGB frame, got {got}")


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks)
    if lm.ndim != 2 or lm.shape[0] < 468 or lm.shape[1] not in (2, 3):
        raise InputError(f"expected (478, 3) face landmarks in pixels, got shape {lm.shape}")
    xy = lm[:, :2].astype(np.float64)
    used = [*FACE_OVAL, CHIN, _EYE_OUTER_RIGHT, _EYE_OUTER_LEFT]
    if not np.isfinite(xy[used]).all():
        raise InputError("face landmarks contain NaN or infinite values")
    return xy


def head_polygon(landmarks: np.ndarray, config: MaskConfig | None = None) -> np.ndarray:
    """Outline of the head region in pixels, from face geometry.

    landmarks: (478, 3) or (478, 2) pixels (x right, y down). Returns (N, 2) float64 polygon (x, y).
    """
    cfg = config or MaskConfig()
    xy = _check_landmarks(landmarks)
    # Head-aligned axes: `right` along the outer eye corners, `up` perpendicular to it, so that the
    # region (and the neck line) rolls with the head.
    eyes = xy[_EYE_OUTER_LEFT] - xy[_EYE_OUTER_RIGHT]
    norm = float(np.linalg.norm(eyes))
    if norm < 1e-6:
        raise InputError("degenerate face landmarks: the outer eye corners coincide")
    right = eyes / norm
    up = np.array([right[1], -right[0]])  # image y points down: rotate `right` by -90 degrees

    oval = xy[FACE_OVAL]
    centre = oval.mean(axis=0)
    a = (oval - centre) @ right  # sideways coordinate, positive to the image right
    b = (oval - centre) @ up  # vertical coordinate, positive upward
    b_top, b_min, a_min, a_max = b.max(), b.min(), a.min(), a.max()
    b_chin = float((xy[CHIN] - centre) @ up)
    face_h = max(b_top - b_chin, 1e-6)
    face_w = max(a_max - a_min, 1e-6)

    # Piecewise scaling about the centre keeps the outline continuous and smooth: each side of the
    # oval is pushed out by a fixed amount in face units at its extreme point.
    sx_pos = 1.0 + cfg.side_extent * face_w / max(a_max, 1e-6)
    sx_neg = 1.0 + cfg.side_extent * face_w / max(-a_min, 1e-6)
    sy_up = 1.0 + cfg.hair_extent * face_h / max(b_top, 1e-6)
    sy_down = 1.0 + cfg.jaw_extent * face_h / max(-b_min, 1e-6)
    a2 = np.where(a > 0, a * sx_pos, a * sx_neg)
    b2 = np.where(b > 0, b * sy_up, b * sy_down)
    local = np.stack([a2, b2], axis=1)

    # The jaw margin (the landmark oval runs slightly inside the jaw silhouette) would reach into the
    # neck under the chin: a straight neck line perpendicular to the head's up axis cuts it off.
    local = _clip_below(local, b_chin - cfg.neck_offset * face_h)
    return centre + local[:, :1] * right + local[:, 1:] * up


def _clip_below(poly: np.ndarray, b_cut: float) -> np.ndarray:
    """Keep the part of a closed polygon (N, 2) in local (a, b) coordinates with b >= b_cut."""
    out: list[np.ndarray] = []
    n = len(poly)
    for i in range(n):  # Sutherland-Hodgman against one half-plane; ~36 vertices, so a loop is fine
        p, q = poly[i], poly[(i + 1) % n]
        p_in, q_in = p[1] >= b_cut, q[1] >= b_cut
        if p_in:
            out.append(p)
        if p_in != q_in:
            t = (b_cut - p[1]) / (q[1] - p[1])
            out.append(p + t * (q - p))
    return np.array(out).reshape(-1, 2)


def head_region(
    landmarks: np.ndarray, shape: tuple[int, int], config: MaskConfig | None = None
) -> np.ndarray:
    """Rasterised head region (not yet intersected with the person). Returns (H, W) bool."""
    return _rasterise(head_polygon(landmarks, config), shape, np.uint8).view(bool)


def _rasterise(poly: np.ndarray, shape: tuple[int, int], dtype: type) -> np.ndarray:
    mask = np.zeros(shape, dtype)
    if len(poly) >= 3:
        shift = 4  # sub-pixel vertex precision
        pts = np.round(poly * (1 << shift)).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=shift)
    return mask


def person_mask(person_prob: np.ndarray, config: MaskConfig | None = None) -> np.ndarray:
    """Thresholded person probability without small islands. (H, W) float -> (H, W) bool."""
    cfg = config or MaskConfig()
    prob = np.asarray(person_prob)
    if prob.ndim != 2:
        raise InputError(f"expected an (H, W) person probability, got shape {prob.shape}")
    person = (prob >= cfg.person_threshold).astype(np.uint8)
    min_area = cfg.min_component_fraction * prob.size
    if min_area >= 1:
        n, comp, stats, _ = cv2.connectedComponentsWithStats(person, connectivity=8)
        # Erase the (few, small) dropped islands inside their bounding boxes: much cheaper than a
        # full-frame lookup through the component image. Component 0 is the non-person area.
        for i in np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] < min_area) + 1:
            x, y, w, h = stats[i, :4]
            box = person[y : y + h, x : x + w]
            box[comp[y : y + h, x : x + w] == i] = 0
    return person.view(bool)


def label_map(person_prob: np.ndarray, landmarks: np.ndarray, config: MaskConfig | None = None) -> np.ndarray:
    """Label map of one frame.

    person_prob: (H, W) float in [0, 1]; landmarks: (478, 3) pixels of this frame.
    Returns (H, W) uint8: 0 background, 1 torso and neck, 2 head (face, hair, ears).
    """
    person = person_mask(person_prob, config)
    head = head_region(landmarks, person.shape, config)
    labels = person.view(np.uint8).copy()  # person -> TORSO (1)
    labels[person & head] = HEAD
    return labels


def soft_masks(
    person_prob: np.ndarray, landmarks: np.ndarray, config: MaskConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Soft head and torso alphas with a feathered head/torso transition.

    Returns (head_alpha, torso_alpha), each (H, W) float32 in [0, 1], summing to the person probability.
    """
    cfg = config or MaskConfig()
    prob = np.clip(np.asarray(person_prob, np.float32), 0.0, 1.0)
    poly = head_polygon(landmarks, cfg)
    head = _rasterise(poly, prob.shape, np.float32)
    if cfg.feather_px > 0 and len(poly):
        # Blur only around the head: the region is zero beyond a 4-sigma margin of its bounding box,
        # so reflected borders of the cut-out see zeros, as the full frame would.
        h, w = head.shape
        pad = int(np.ceil(4 * cfg.feather_px)) + 2
        (x0, y0), (x1, y1) = (
            np.floor(poly.min(axis=0)).astype(int) - pad,
            np.ceil(poly.max(axis=0)).astype(int) + pad,
        )
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 > x0 and y1 > y0:
            head[y0:y1, x0:x1] = cv2.GaussianBlur(head[y0:y1, x0:x1], (0, 0), cfg.feather_px)
    head_alpha = prob * head
    return head_alpha, prob - head_alpha
