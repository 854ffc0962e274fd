"""Image metrics of rendered frames (numpy / OpenCV / scikit-image, no torch), as small pure functions.

    psnr         peak signal-to-noise ratio of two images, dB
    ssim         structural similarity (scikit-image, Gaussian-free 7x7 windows, colour channels averaged)
    to_gray      RGB -> 8-bit luma (ITU-R 601, the same integers as PIL's "L" mode)
    cpbd         cumulative probability of blur detection (Narvekar & Karam 2011), a no-reference
                 sharpness score in [0, 1] (higher = sharper)
    neck_band    the strip around the chin/neck seam where head and torso meet
    band_error   mean absolute and squared error inside a mask
    mouth_lmd    mean 2D distance of the tracked mouth landmarks of two clips, pixels
    mouth_box    the box around the outer lips (grown by a share of the mouth width) of one frame
    mouth_box_scores  PSNR and SSIM inside that box
    opening_dynamics  correlation and amplitude ratio of a rendered vs a real mouth-opening curve

Images are `(H, W, 3)` uint8 RGB or `(H, W)` uint8 gray (docs/conventions.md).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from erlnet.errors import InputError
from erlnet.face import topology as tp

# ---------------------------------------------------------------- full-reference metrics


def _pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(pred), np.asarray(truth)
    if a.shape != b.shape or a.ndim not in (2, 3):
        raise InputError(f"expected two images of one shape (H, W[, 3]), got {a.shape} and {b.shape}")
    return a.astype(np.float64), b.astype(np.float64)


def psnr(pred: np.ndarray, truth: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR in dB of two images of one shape; identical images give +inf."""
    a, b = _pair(pred, truth)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))


def ssim(pred: np.ndarray, truth: np.ndarray, data_range: float = 255.0) -> float:
    """SSIM of two images of one shape (scikit-image defaults: 7x7 uniform windows; colour
    channels are scored separately and averaged). Images need at least 7 pixels a side."""
    from skimage.metrics import structural_similarity

    a, b = _pair(pred, truth)
    if min(a.shape[:2]) < 7:
        raise InputError(f"SSIM needs images of at least 7x7 pixels, got {a.shape[1]}x{a.shape[0]}")
    return float(structural_similarity(a, b, data_range=data_range, channel_axis=2 if a.ndim == 3 else None))


def band_error(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(mean |error|, mean squared error) over the pixels where `mask` (H, W) is true, in image units
    (0..255 for uint8); (nan, nan) for an empty mask."""
    a, b = _pair(pred, truth)
    m = np.asarray(mask, bool)
    if m.shape != a.shape[:2]:
        raise InputError(f"mask {m.shape} does not match the images {a.shape[:2]}")
    if not m.any():
        return float("nan"), float("nan")
    err = (a - b)[m]
    return float(np.abs(err).mean()), float((err**2).mean())


# ---------------------------------------------------------------- CPBD

CPBD_BLOCK = 64  # block side, pixels (only whole blocks are scored)
CPBD_EDGE_FRACTION = 0.002  # a block is an edge block when more of its pixels are Canny edges
CPBD_BETA = 3.6  # slope of the probability-of-blur-detection curve
CPBD_MAX_STEPS = 100  # an edge side is followed at most this many pixels
CPBD_HIST_BINS = 64  # P(blur) rounded to percent: bins 0..63 count as "blur not detected" (<= 63 %)


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 luma 0.299 R + 0.587 G + 0.114 B, rounded as PIL does
    (fixed-point weights 19595, 38470, 7471 / 2^16); a gray (H, W) image is returned as is."""
    img = np.asarray(image)
    if img.ndim == 2:
        return img
    if img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"expected an (H, W, 3) RGB or (H, W) gray image, got {img.shape}")
    x = img.astype(np.uint32)
    return ((x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def _sobel_x_edges(gray: np.ndarray) -> np.ndarray:
    """Vertical edges (H, W) bool: the squared horizontal Sobel response above twice the root of its
    mean, thinned to local maxima across rows or columns (the simple rule of Octave's `edge`)."""
    from scipy.ndimage import convolve

    kernel = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 8.0  # |weights| sum to 1
    s = convolve(gray, kernel, mode="reflect") ** 2
    s[s <= 2.0 * np.sqrt(s.mean())] = 0.0
    pad = np.pad(s, 1)  # zeros outside the image
    core = pad[1:-1, 1:-1]
    across_cols = (core > pad[1:-1, :-2]) & (core > pad[1:-1, 2:])
    across_rows = (core > pad[:-2, 1:-1]) & (core > pad[2:, 1:-1])
    return across_cols | across_rows


def _run_ending(b: np.ndarray) -> np.ndarray:
    """(H, N) bool -> (H, N) int: how many consecutive True end at each column (0 where False)."""
    idx = np.arange(b.shape[1])
    last_false = np.maximum.accumulate(np.where(b, -1, idx), axis=1)
    return idx - last_false


def _run_starting(b: np.ndarray) -> np.ndarray:
    """(H, N) bool -> (H, N) int: how many consecutive True start at each column (0 where False)."""
    return _run_ending(b[:, ::-1])[:, ::-1]


def _edge_widths(gray: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Marziliano edge widths (H, W) float (0 off edges): at each edge pixel whose gradient points
    left or right (angle within 22.5 deg of 0 or 180), the pixels to the left and to the right over
    which the intensity keeps rising/falling, plus one on each side. Border pixels are not measured."""
    h, w = gray.shape
    gy, gx = np.gradient(gray)
    # A zero horizontal gradient counts as angle 0 (so does the reference implementation).
    angle = np.where(gx != 0, np.degrees(np.arctan2(gy, gx)), 0.0)
    out = np.zeros((h, w))
    if not angle.any() or w < 3 or h < 3:
        return out
    q = 45.0 * np.round(angle / 45.0)
    rising, falling = q == 0, np.abs(q) == 180  # intensity grows to the right / to the left
    d = np.diff(gray, axis=1)  # d[:, k] = I[:, k + 1] - I[:, k], (H, W - 1)
    zero = np.zeros((h, 2), np.int64)
    # Runs seen from column c: leftwards from d[c - 2], rightwards from d[c + 1].
    def left(b: np.ndarray) -> np.ndarray:
        return np.concatenate([zero, _run_ending(b)[:, : w - 2]], axis=1)

    def right(b: np.ndarray) -> np.ndarray:
        return np.concatenate([_run_starting(b)[:, 1:], zero], axis=1)

    up, down = d > 0, d < 0
    cap = CPBD_MAX_STEPS
    w_rise = np.minimum(left(up), cap) + np.minimum(right(up), cap) + 2
    w_fall = np.minimum(left(down), cap) + np.minimum(right(down), cap) + 2
    inner = np.zeros((h, w), bool)
    inner[1:-1, 1:-1] = True
    e = edges & inner
    out[e & rising] = w_rise[e & rising]
    out[e & falling] = w_fall[e & falling]
    return out


def cpbd(image: np.ndarray) -> float:
    """CPBD sharpness in [0, 1] of an (H, W, 3) RGB or (H, W) gray uint8 image (Narvekar & Karam,
    "A no-reference image blur metric based on the cumulative probability of blur detection", 2011).

    The image is cut into 64 x 64 blocks; a block with more than 0.2 % Canny edge pixels is scored:
    at each of its (vertical, Sobel) edge pixels the edge width w is measured along the row, and
    P(blur) = 1 - exp(-(w / w_JNB) ^ 3.6) with the just-noticeable width w_JNB = 5 pixels for a block
    contrast (max - min) <= 50 and 3 above. CPBD = the share of measured edges with P(blur) <= 63 %
    (rounded to whole percent). 0.0 when no block is an edge block, or the image is smaller than
    one block. Agrees with the reference `cpbd` package (tests/eval/test_image_metrics.py).
    """
    from skimage.feature import canny

    gray = to_gray(image).astype(np.float64)
    h, w = gray.shape
    nby, nbx = h // CPBD_BLOCK, w // CPBD_BLOCK
    if nby == 0 or nbx == 0:
        return 0.0
    canny_edges = canny(gray)
    widths = _edge_widths(gray, _sobel_x_edges(gray))
    b = CPBD_BLOCK
    crop = (slice(0, nby * b), slice(0, nbx * b))

    def blocks(x: np.ndarray) -> np.ndarray:  # (nby * b, nbx * b) -> (nby, nbx, b * b)
        return x[crop].reshape(nby, b, nbx, b).swapaxes(1, 2).reshape(nby, nbx, b * b)

    n_edges = blocks(canny_edges).sum(axis=2)
    g = blocks(gray)
    contrast = np.floor(g.max(axis=2) - g.min(axis=2))
    jnb = np.where(contrast <= 50, 5.0, 3.0)
    scored = n_edges > CPBD_EDGE_FRACTION * b * b
    bw = blocks(widths)
    sel = scored[..., None] & (bw > 0)
    if not sel.any():
        return 0.0
    ratio = bw / jnb[..., None]
    p_blur = 1.0 - np.exp(-(ratio[sel] ** CPBD_BETA))
    percent = np.rint(p_blur * 100.0)  # half to even, like Python's round()
    return float(np.mean(percent < CPBD_HIST_BINS))


# ---------------------------------------------------------------- regions and landmarks


def neck_band(labels: np.ndarray, landmarks: np.ndarray, scale: float, width: float = 0.06) -> np.ndarray:
    """(S, S) bool strip, `width` x S wide, around the chin/neck line: where the head label meets the
    torso label below the mouth corners (the seam a dual-branch renderer must get right). labels
    (S, S) at the evaluation size; landmarks (478, 3) subject-crop pixels, x `scale` -> evaluation
    pixels. Without a visible seam (no torso) the strip follows the JAW landmarks instead."""
    import cv2

    size = labels.shape[0]
    r = max(1, int(round(width * size / 2)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    head = (labels == 2).astype(np.uint8)
    seam = cv2.dilate(head, np.ones((3, 3), np.uint8)).astype(bool) & (labels == 1)
    mouth_y = float(landmarks[tp.MOUTH_CORNERS, 1].mean() * scale)
    seam[: int(np.ceil(mouth_y))] = False
    if not seam.any():
        pts = np.round(landmarks[tp.JAW, :2] * scale).astype(np.int32)
        line = np.zeros(labels.shape, np.uint8)
        cv2.polylines(line, [pts], isClosed=False, color=1, thickness=1)
        seam = line.astype(bool)
    return cv2.dilate(seam.astype(np.uint8), kernel).astype(bool)


def mouth_lmd(pred: np.ndarray, truth: np.ndarray) -> tuple[float, int]:
    """Mouth landmark distance of two tracked clips: mean 2D (x, y) distance of the `topology.MOUTH`
    points over the frames where both have a face. pred, truth (T, 478, 3) pixels, NaN where no face
    was found -> (LMD in pixels, frames used); (nan, 0) when no frame has both."""
    a, b = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    if a.shape != b.shape or a.ndim != 3 or a.shape[1] < tp.N_MESH:
        raise InputError(f"mouth_lmd needs two (T, 478, 3) landmark tracks of one shape, got {a.shape} and {b.shape}")
    a, b = a[:, tp.MOUTH, :2], b[:, tp.MOUTH, :2]
    ok = np.isfinite(a).all(axis=(1, 2)) & np.isfinite(b).all(axis=(1, 2))
    if not ok.any():
        return float("nan"), 0
    return float(np.linalg.norm(a[ok] - b[ok], axis=-1).mean()), int(ok.sum())


MOUTH_BOX_GROW = 0.25  # the mouth box extends this share of the mouth width beyond the outer lips


def mouth_box(landmarks: np.ndarray, scale: float, size: int, grow: float = MOUTH_BOX_GROW,
              ) -> tuple[slice, slice] | None:
    """(rows, cols) slices of the box around the `topology.LIPS_OUTER` points of one frame, grown on
    every side by `grow` x the mouth width (the x extent of those points) and clipped to the (size,
    size) image. landmarks (478, 3) subject-crop pixels, x `scale` -> image pixels. None when the
    points are not finite or the box is empty."""
    pts = np.asarray(landmarks, np.float64)[tp.LIPS_OUTER, :2] * scale
    if not np.isfinite(pts).all():
        return None
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    pad = grow * (x1 - x0)
    c0, r0 = max(0, int(np.floor(x0 - pad))), max(0, int(np.floor(y0 - pad)))
    c1, r1 = min(size, int(np.ceil(x1 + pad))), min(size, int(np.ceil(y1 + pad)))
    if c1 <= c0 or r1 <= r0:
        return None
    return slice(r0, r1), slice(c0, c1)



def mouth_box_scores(pred: np.ndarray, truth: np.ndarray, landmarks: np.ndarray, scale: float,
                     grow: float = MOUTH_BOX_GROW) -> tuple[float, float]:
    """(PSNR dB, SSIM) of two (S, S, 3) images inside the `mouth_box` of the real frame's tracked
    landmarks (478, 3) (subject-crop pixels, x `scale` -> image pixels): the renderer's error where the
    mouth moves, which whole-frame PSNR/SSIM dilute. (nan, nan) without a box; SSIM is NaN for a box
    under 7 pixels a side."""
    a, b = np.asarray(pred), np.asarray(truth)
    if a.shape != b.shape or a.ndim != 3 or a.shape[0] != a.shape[1]:
        raise InputError(f"expected two square (S, S, 3) images of one shape, got {a.shape} and {b.shape}")
    box = mouth_box(landmarks, scale, a.shape[0], grow)
    if box is None:
        return float("nan"), float("nan")
    a, b = a[box], b[box]
    return psnr(a, b), ssim(a, b) if min(a.shape[:2]) >= 7 else float("nan")

class OpeningDynamics(NamedTuple):
    """How a rendered mouth-opening curve follows the real one (`opening_dynamics`)."""

    corr: float  # Pearson correlation, rendered vs real; NaN when not measurable (see `reason`)
    ratio: float  # amplitude ratio (p95 - p5 rendered) / (p95 - p5 real); NaN when not measurable
    frames: int  # frames where both curves are finite
    reason: str  # why a value is NaN; "" when both are numbers


MIN_DYNAMICS_FRAMES = 3
FLAT = 1e-9  # a curve whose 0-100 percentile range is at most this is constant (mouth openings are ~0.01..0.5)


def opening_dynamics(generated: np.ndarray, truth: np.ndarray, low: float = 5.0, high: float = 95.0,
                     ) -> OpeningDynamics:
    """Correlation and amplitude ratio of a rendered (`generated`) and a real (`truth`) per-frame curve
    (T,), e.g. `topology.mouth_opening` of both tracks, over the frames where both are finite.

    The amplitude ratio compares the `low`-`high` percentile ranges (robust to a few tracking
    glitches): 1 = the rendered mouth opens as far as the real one, 0 = it does not move. A perfect copy
    gives (1, 1); a copy at half the amplitude (1, 0.5); a constant rendering (NaN, 0). Both are NaN
    with fewer than 3 such frames, the ratio also when the real curve is constant, the correlation when
    either is."""
    a, b = np.asarray(generated, np.float64), np.asarray(truth, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise InputError(f"opening_dynamics needs two (T,) curves of one length, got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    n = int(ok.sum())
    nan = float("nan")
    if n < MIN_DYNAMICS_FRAMES:
        return OpeningDynamics(nan, nan, n, f"{n} frame{'s' if n != 1 else ''} with both mouths tracked, "
                                            f"need {MIN_DYNAMICS_FRAMES}")
    a, b = a[ok], b[ok]
    flat_a, flat_b = bool(np.ptp(a) <= FLAT), bool(np.ptp(b) <= FLAT)
    span_a = 0.0 if flat_a else float(np.percentile(a, high) - np.percentile(a, low))
    span_b = 0.0 if flat_b else float(np.percentile(b, high) - np.percentile(b, low))
    ratio = span_a / span_b if span_b > 0 else nan
    if flat_a or flat_b:
        which = "both curves are" if flat_a and flat_b else "the real curve is" if flat_b else "the rendered curve is"
        return OpeningDynamics(nan, ratio, n, f"{which} constant")
    corr = float(np.corrcoef(a, b)[0, 1])
    return OpeningDynamics(corr, ratio, n, "" if span_b > 0 else f"the real curve's {low:g}-{high:g} percentile range is 0")
