"""Static background plate of a talking-head video.

Frames stream in once; a bounded, evenly spread subsample is kept. The plate is the per-pixel
median over the samples in which the pixel was background (with the person region dilated, so
hair and shoulder halos do not leak in). Pixels never seen as background are holes, filled with a
harmonic (membrane) interpolation of their surroundings: smooth, no seams, no black holes.
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from erlnet.errors import InputError

log = logging.getLogger(__name__)

_INVALID = np.uint16(256)  # sorts after every uint8 value, so valid samples come first


class BackgroundPlate:
    """Streaming accumulator of a static background plate with bounded memory.

    Keeps at most `max_samples` frames (H, W, 3) uint8 and their background masks (H, W) bool.
    With `n_frames_expected` known, every `ceil(n / max_samples)`-th frame is kept; otherwise (or if
    more frames arrive than expected) the kept set is halved to every other sample whenever it is
    full and the stride doubles, so the samples stay evenly spread over the whole video.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        n_frames_expected: int | None = None,
        max_samples: int = 64,
        dilate_px: int = 5,
    ) -> None:
        if len(shape) != 2 or min(shape) <= 0:
            raise InputError(f"background plate shape must be (H, W) with positive sides, got {shape}")
        if max_samples < 2:
            raise InputError(f"max_samples must be >= 2, got {max_samples}")
        if n_frames_expected is not None and n_frames_expected <= 0:
            raise InputError(f"n_frames_expected must be positive, got {n_frames_expected}")
        if dilate_px < 0:
            raise InputError(f"dilate_px must be >= 0, got {dilate_px}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.max_samples = int(max_samples)
        self.dilate_px = int(dilate_px)
        self._stride = max(1, math.ceil(n_frames_expected / max_samples)) if n_frames_expected else 1
        self._frames = np.zeros((max_samples, *self.shape, 3), np.uint8)
        self._valid = np.zeros((max_samples, *self.shape), bool)
        self._indices: list[int] = []  # video frame index of each kept sample
        self._n_seen = 0
        self.hole_fraction: float | None = (
            None  # fraction of pixels never seen as background, set by result()
        )
        k = 2 * self.dilate_px + 1
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)) if self.dilate_px else None

    @property
    def n_samples(self) -> int:
        """Number of frames currently kept."""
        return len(self._indices)

    @property
    def n_frames_seen(self) -> int:
        return self._n_seen

    @property
    def sample_indices(self) -> list[int]:
        """Video frame indices of the kept samples, ascending."""
        return list(self._indices)

    def add(self, frame: np.ndarray, labels: np.ndarray) -> None:
        """Offer the next frame. frame: (H, W, 3) uint8 RGB; labels: (H, W) uint8 (0 = background)."""
        if frame.shape != (*self.shape, 3) or frame.dtype != np.uint8:
            raise InputError(f"expected a {(*self.shape, 3)} uint8 frame, got {frame.dtype} {frame.shape}")
        if labels.shape != self.shape:
            raise InputError(f"expected {self.shape} labels, got shape {labels.shape}")
        index = self._n_seen
        self._n_seen += 1
        if index % self._stride:
            return
        if self.n_samples == self.max_samples:
            self._decimate()
            if index % self._stride:
                return
        slot = self.n_samples
        self._frames[slot] = frame
        self._valid[slot] = self._background(labels)
        self._indices.append(index)

    def _decimate(self) -> None:
        """Keep every other sample (those on the doubled stride) and compact them to the front."""
        self._stride *= 2
        keep = [i for i, idx in enumerate(self._indices) if idx % self._stride == 0]
        for dst, src in enumerate(keep):
            if dst != src:
                self._frames[dst] = self._frames[src]
                self._valid[dst] = self._valid[src]
        self._indices = [self._indices[i] for i in keep]

    def _background(self, labels: np.ndarray) -> np.ndarray:
        """Background pixels of one frame, away from the person by `dilate_px`. (H, W) bool."""
        person = (labels != 0).astype(np.uint8)
        if self._kernel is not None:
            person = cv2.dilate(person, self._kernel)
        return person == 0

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Background plate (H, W, 3) uint8 and hole mask (H, W) bool (never seen as background; inpainted)."""
        n = self.n_samples
        if n == 0:
            raise InputError("no frame was added to the background plate")
        plate, count = _masked_median(self._frames[:n], self._valid[:n])
        hole = count == 0
        self.hole_fraction = float(hole.mean())
        log.info(
            "background plate: %d samples of %d frames, hole fraction %.3f",
            n,
            self._n_seen,
            self.hole_fraction,
        )
        if hole.all():
            # Nothing was ever background (the person fills the frame): no information to fill from.
            return np.full((*self.shape, 3), 127, np.uint8), hole
        filled = harmonic_fill(plate, hole)
        return np.clip(np.round(filled), 0, 255).astype(np.uint8), hole


def _masked_median(
    frames: np.ndarray, valid: np.ndarray, rows_per_chunk: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel median over the valid samples.

    frames: (N, H, W, 3) uint8; valid: (N, H, W) bool. Returns the median (H, W, 3) float32
    (mean of the two middle values for an even count; 0 where no sample is valid) and the count of
    valid samples (H, W) int.
    """
    n, h, w, _ = frames.shape
    median = np.zeros((h, w, 3), np.float32)
    count = valid.sum(axis=0)
    for y0 in range(0, h, rows_per_chunk):  # chunks bound the sort's temporary memory
        y1 = min(y0 + rows_per_chunk, h)
        vals = frames[:, y0:y1].astype(np.uint16)
        vals[~valid[:, y0:y1]] = _INVALID
        # Sample axis last and contiguous, then sort: invalid samples (256) end up after valid ones.
        # kind="stable" is a radix sort for 16-bit integers: several times faster than quicksort here.
        vals = np.sort(np.moveaxis(vals, 0, -1), axis=-1, kind="stable")  # (rows, W, 3, N)
        c = count[y0:y1, :, None, None]
        lo = np.take_along_axis(vals, np.maximum(c - 1, 0) // 2, axis=-1)[..., 0]
        hi = np.take_along_axis(vals, c // 2, axis=-1)[..., 0]  # c <= N, so c // 2 < N
        med = 0.5 * (lo.astype(np.float32) + hi.astype(np.float32))
        med[c[..., 0, 0] == 0] = 0.0
        median[y0:y1] = med
    return median, count


def harmonic_fill(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Fill holes with the harmonic interpolation of their border (discrete Laplace equation).

    image: (H, W, C) or (H, W) float; hole: (H, W) bool with at least one known pixel. Returns a float64
    copy with the hole pixels replaced; known pixels are unchanged. Image borders are reflecting.
    """
    hole = np.asarray(hole, bool)
    img = np.asarray(image, np.float64)
    squeeze = img.ndim == 2
    if squeeze:
        img = img[..., None]
    h, w, c = img.shape
    if hole.shape != (h, w):
        raise InputError(f"hole mask shape {hole.shape} does not match image shape {(h, w)}")
    out = img.copy()
    n = int(hole.sum())
    if n == 0:
        return out[..., 0] if squeeze else out
    if n == h * w:
        raise InputError("cannot fill an image that is all hole")
    index = np.full((h, w), -1, np.int64)
    index[hole] = np.arange(n)
    ys, xs = np.nonzero(hole)
    degree = np.zeros(n)
    rhs = np.zeros((n, c))
    rows, cols = [], []
    # 5-point Laplacian over in-image neighbours: degree * u_p - sum(hole neighbours) = sum(known neighbours).
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        y2, x2 = ys + dy, xs + dx
        inside = (y2 >= 0) & (y2 < h) & (x2 >= 0) & (x2 < w)
        degree += inside
        p = np.flatnonzero(inside)
        q = index[y2[inside], x2[inside]]
        unknown = q >= 0
        rows.append(p[unknown])
        cols.append(q[unknown])
        known = ~unknown
        np.add.at(rhs, p[known], img[y2[inside][known], x2[inside][known]])
    r, q = np.concatenate(rows), np.concatenate(cols)
    diag = np.arange(n)
    a = sp.csc_matrix(
        (np.concatenate([degree, -np.ones(len(r))]), (np.concatenate([diag, r]), np.concatenate([diag, q]))),
        shape=(n, n),
    )
    # Every hole component touches a known pixel (the hole is not the whole image), so A is SPD.
    solution = spla.splu(a).solve(rhs)
    out[ys, xs] = solution
    return out[..., 0] if squeeze else out
