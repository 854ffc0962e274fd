"""Static background plate of a talking-head video.

Frames stream in once; a bounded, evenly spread subsample is kept. The plate is the per-pixel
median over the samples in which the pixel was background (with the person region dilated, so
hair and shoulder halos do not leak in). Pixels never seen as background are holes, filled with a
harmonic (membrane) interpolation of their surroundings: smooth, no seams, no black holes.

Speed (result() is part of the >= 25 frames/s preprocessing budget): the median runs a sorting
network over whole uint8 sample planes in cache-sized blocks and skips hole columns; the fill is
solved by full multigrid (exact LU only on a small coarsest grid), not by one large sparse LU.
"""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from erlnet.errors import InputError

log = logging.getLogger(__name__)


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
        if int(hole.sum()) > _DIRECT_MAX_PIXELS:  # float32 all the way: skips harmonic_fill's float64 copies
            filled = _multigrid_fill(plate, hole, _DIRECT_MAX_PIXELS, _FILL_TOL, _FILL_MAX_ITERATIONS)
        else:
            filled = harmonic_fill(plate, hole)
        return np.clip(np.rint(filled), 0, 255).astype(np.uint8), hole


# ---------------------------------------------------------------- masked median

_CHUNK_PIXELS = 16384  # pixels per median block: its N sample planes stay cache-resident (fastest measured)
_MERGE_GAP = 32  # hole column runs narrower than this are not worth splitting a median block for


def _sorting_network(n: int) -> list[tuple[int, int]]:
    """Comparators (i, j), i < j, of Batcher's odd-even merge sort of n inputs; each puts the min at i."""
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < n:  # merge sorted runs of length p into runs of length 2p
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(j, j + min(k, n - j - k)):
                    if i // (2 * p) == (i + k) // (2 * p):  # both ends inside the same 2p-run
                        pairs.append((i, i + k))
            k //= 2
        p *= 2
    return pairs


def _prune_network(pairs: list[tuple[int, int]], outputs: range) -> list[tuple[int, int]]:
    """Drop the comparators that cannot change the values at the `outputs` positions."""
    needed = set(outputs)
    kept = []
    for i, j in reversed(pairs):
        if i in needed or j in needed:
            kept.append((i, j))
            needed.update((i, j))
    return kept[::-1]


def _column_runs(seen: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) runs of True in a 1-D bool array, bridging gaps shorter than _MERGE_GAP."""
    edges = np.flatnonzero(np.diff(np.concatenate([[False], seen, [False]]).astype(np.int8)))
    runs: list[tuple[int, int]] = []
    for a, b in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
        if runs and a - runs[-1][1] < _MERGE_GAP:
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((a, b))
    return runs


def _masked_median(
    frames: np.ndarray, valid: np.ndarray, rows_per_chunk: int | None = None, workers: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel median over the valid samples.

    frames: (N, H, W, C) uint8; valid: (N, H, W) bool. Returns the median (H, W, C) float32
    (mean of the two middle values for an even count; 0 where no sample is valid) and the count of
    valid samples (H, W) int. rows_per_chunk: image rows per block (default: ~_CHUNK_PIXELS pixels);
    workers: threads working on blocks (default: the CPU count, at most 4; numpy releases the GIL).
    """
    n, h, w, c = frames.shape
    count = _count_valid(valid)
    median = np.zeros((h, w, c), np.float32)
    # The c valid samples of a pixel become ranks 0..c-1 once the invalid ones are set to 255 (they
    # sort after, or tie with, every valid value), so only ranks 0..n//2 are ever read.
    network = _prune_network(_sorting_network(n), range(n // 2 + 1))
    rows = max(1, rows_per_chunk if rows_per_chunk else _CHUNK_PIXELS // w)
    blocks = []
    for y0 in range(0, h, rows):
        y1 = min(y0 + rows, h)
        # Columns that are hole in every row of the block (the person) are skipped: no work for holes.
        blocks += [(y0, y1, x0, x1) for x0, x1 in _column_runs(count[y0:y1].any(axis=0))]

    def run(block: tuple[int, int, int, int]) -> None:
        y0, y1, x0, x1 = block
        cnt = count[y0:y1, x0:x1]
        lo, hi = _block_median(frames[:, y0:y1, x0:x1], valid[:, y0:y1, x0:x1], cnt, network)
        med = median[y0:y1, x0:x1]  # blocks are disjoint: threads never write the same pixels
        np.add(lo, hi, out=med, dtype=np.float32)
        med *= 0.5
        med[cnt == 0] = 0.0

    workers = min(4, os.cpu_count() or 1) if workers is None else max(1, workers)
    if workers == 1 or len(blocks) < 2:
        for block in blocks:
            run(block)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, blocks))  # list() re-raises a worker's exception
    return median, count


def _count_valid(valid: np.ndarray) -> np.ndarray:
    """Valid samples per pixel, (N, H, W) bool -> (H, W) int64; a uint8/16 loop is ~6x faster than sum."""
    acc = np.zeros(valid.shape[1:], np.uint8 if len(valid) < 256 else np.uint16)
    for v in valid:
        acc += v
    return acc.astype(np.int64)


def _block_median(
    frames: np.ndarray, valid: np.ndarray, count: np.ndarray, network: list[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper middle valid value of one block. frames (N, h, w, C) uint8 -> 2 x (h, w, C) uint8."""
    n, h, w, c = frames.shape
    invalid = (~valid).view(np.uint8) * np.uint8(255)  # (N, h, w)
    if c == 3:  # the common case; cv2's channel expansion is ~15x faster than np.repeat
        invalid = cv2.cvtColor(invalid.reshape(n * h, w), cv2.COLOR_GRAY2RGB)
    else:
        invalid = np.repeat(invalid[..., None], c, axis=-1)
    vals = np.bitwise_or(frames, invalid.reshape(frames.shape))
    # Sorting network over the sample axis: whole planes per comparator, so numpy does all the work.
    planes = list(vals.reshape(n, -1))
    spare = np.empty_like(planes[0])
    for i, j in network:
        a, b = planes[i], planes[j]
        np.minimum(a, b, out=spare)
        np.maximum(a, b, out=b)
        planes[i], spare = spare, a
    ranked = np.stack(planes[: n // 2 + 1])  # (n//2 + 1, h * w * C)
    cnt = np.repeat(count.reshape(-1), c)[None]
    lo = np.take_along_axis(ranked, np.maximum(cnt - 1, 0) // 2, axis=0)
    hi = np.take_along_axis(ranked, cnt // 2, axis=0)  # cnt <= n, so cnt // 2 <= n // 2
    return lo.reshape(h, w, c), hi.reshape(h, w, c)


# ---------------------------------------------------------------- harmonic fill

# 3x3 stencils. cv2.BORDER_REPLICATE makes an outside neighbour equal the pixel itself, which is the
# same reflecting border as counting in-image neighbours only (the sparse system below).
_MEAN4 = np.array([[0, 0.25, 0], [0.25, 0, 0.25], [0, 0.25, 0]], np.float32)  # mean of the 4 neighbours
_LAPLACE = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)  # 5-point Laplacian
_SMOOTH_SWEEPS = (2, 2)  # red-black Gauss-Seidel sweeps before / after each coarse-grid correction
_FMG_CYCLES = 1  # V-cycles on each coarse grid while building the initial guess
_DIRECT_MAX_PIXELS = 4096  # holes up to this size are solved by one sparse LU (also the coarsest grid's size)
_FILL_TOL = 1.0  # estimated max error (gray levels) at which the iterative fill stops (measured: <= 0.6)
_FILL_MAX_ITERATIONS = 20


def harmonic_fill(
    image: np.ndarray,
    hole: np.ndarray,
    direct_max_pixels: int = _DIRECT_MAX_PIXELS,
    tol: float = _FILL_TOL,
    max_iterations: int = _FILL_MAX_ITERATIONS,
) -> np.ndarray:
    """Fill holes with the harmonic interpolation of their border (discrete Laplace equation).

    image: (H, W, C) or (H, W) float; hole: (H, W) bool with at least one known pixel. Returns a float64
    copy with the hole pixels replaced; known pixels are unchanged. Image borders are reflecting.
    Holes of at most `direct_max_pixels` pixels are solved exactly (sparse LU). Larger ones are solved
    in float32 by multigrid-preconditioned conjugate gradients, until the estimated error of every pixel
    is below `tol` (image units) or after `max_iterations`.
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
    if n == h * w:
        raise InputError("cannot fill an image that is all hole")
    if 0 < n <= direct_max_pixels:
        level = _Level.make(hole)
        level.factorise()
        out[hole] = level.solve(_residual(level, np.where(hole[..., None], 0.0, img)))
    elif n:
        filled = _multigrid_fill(img.astype(np.float32), hole, direct_max_pixels, tol, max_iterations)
        cv2.copyTo(filled.astype(np.float64), hole.view(np.uint8), out)
    return out[..., 0] if squeeze else out


@dataclass
class _Level:
    """One grid of the multigrid hierarchy: the pixels solved for and their bounding box."""

    unknown: np.ndarray  # (h, w) bool: solved for (hole pixels on the finest grid)
    box: tuple[slice, slice]  # bounding box of the unknowns plus a 1 px margin (all their neighbours)
    colours: tuple[np.ndarray, np.ndarray]  # red / black unknowns within box, uint8 masks for cv2
    lu: spla.SuperLU | None = None  # factorised system, on the coarsest grid only

    @classmethod
    def make(cls, unknown: np.ndarray) -> _Level:
        h, w = unknown.shape
        rows, cols = np.flatnonzero(unknown.any(axis=1)), np.flatnonzero(unknown.any(axis=0))
        box = (
            slice(max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, h)),
            slice(max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, w)),
        )
        inner = unknown[box]
        yy, xx = np.ogrid[box[0], box[1]]
        red = (yy + xx) % 2 == 0
        return cls(unknown, box, ((inner & red).view(np.uint8), (inner & ~red).view(np.uint8)))

    @property
    def mask(self) -> np.ndarray:
        """Unknowns within box as a uint8 mask for cv2."""
        return self.unknown[self.box].view(np.uint8)

    def factorise(self) -> None:
        self.lu = spla.splu(_laplace_matrix(self.unknown), permc_spec="MMD_AT_PLUS_A")

    def solve(self, f: np.ndarray) -> np.ndarray:
        """Exact solution on the unknowns of A e = f (A = minus the Laplacian, e = 0 on known pixels).

        f: (h, w, C) -> (n_unknown, C) float64."""
        assert self.lu is not None
        return self.lu.solve(np.asarray(f[self.unknown], np.float64))


def _laplace_matrix(unknown: np.ndarray) -> sp.csc_matrix:
    """Minus the 5-point Laplacian on the unknown pixels, (n, n), known neighbours eliminated.

    degree * u_p - sum(unknown neighbours) over in-image neighbours: SPD when every connected component
    of the unknowns touches a known pixel.
    """
    h, w = unknown.shape
    n = int(unknown.sum())
    index = np.full((h, w), -1, np.int64)
    index[unknown] = np.arange(n)
    ys, xs = np.nonzero(unknown)
    degree = np.zeros(n)
    rows, cols = [], []
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        y2, x2 = ys + dy, xs + dx
        inside = (y2 >= 0) & (y2 < h) & (x2 >= 0) & (x2 < w)
        degree += inside
        q = index[y2[inside], x2[inside]]
        rows.append(np.flatnonzero(inside)[q >= 0])
        cols.append(q[q >= 0])
    r, q = np.concatenate(rows), np.concatenate(cols)
    diag = np.arange(n)
    return sp.csc_matrix(
        (np.concatenate([degree, -np.ones(len(r))]), (np.concatenate([diag, r]), np.concatenate([diag, q]))),
        shape=(n, n),
    )


def _filter(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """3x3 correlation with a replicated border, keeping the (h, w, C) shape (cv2 drops C == 1)."""
    return cv2.filter2D(x, -1, kernel.astype(x.dtype), borderType=cv2.BORDER_REPLICATE).reshape(x.shape)


def _residual(level: _Level, x: np.ndarray, f: np.ndarray | None = None) -> np.ndarray:
    """f - A x on the unknowns (f = None: the Laplacian of x), zero elsewhere. x, f: (h, w, C)."""
    r = np.zeros_like(x)
    lap = _filter(x[level.box], _LAPLACE)
    if f is None:
        cv2.copyTo(lap, level.mask, r[level.box])
    else:
        cv2.add(lap, f[level.box], dst=r[level.box], mask=level.mask)
    return r


def _smooth(level: _Level, x: np.ndarray, g: np.ndarray, sweeps: int, skip_first: bool = False) -> None:
    """Red-black Gauss-Seidel sweeps of x_p <- mean of its 4 neighbours + g_p on the unknowns, in place.

    At image-border pixels the replicated neighbour is x_p's previous value: a damped update there,
    with the same fixed point.
    """
    xb, gb = x[level.box], g[level.box]
    for sweep in range(sweeps):
        for k, colour in enumerate(level.colours):
            if not (skip_first and sweep == 0 and k == 0):  # skip_first: the caller did that half-sweep
                cv2.add(_filter(xb, _MEAN4), gb, dst=xb, mask=colour)


def _block_sum(x: np.ndarray) -> np.ndarray:
    """Sum over 2x2 blocks, (h, w, C) -> (ceil(h/2), ceil(w/2), C); odd edges padded with zeros."""
    h, w, c = x.shape
    if h % 2 or w % 2:
        x = np.pad(x, ((0, h % 2), (0, w % 2), (0, 0)))
    if c <= 4:  # cv2's exact 2:1 area resize (the block mean) is ~2x faster than strided numpy adds
        mean = cv2.resize(x, (x.shape[1] // 2, x.shape[0] // 2), interpolation=cv2.INTER_AREA)
        return np.multiply(mean, 4.0, out=mean).reshape(x.shape[0] // 2, x.shape[1] // 2, c)
    s = x[0::2] + x[1::2]
    return s[:, 0::2] + s[:, 1::2]


def _coarsen(unknown: np.ndarray) -> np.ndarray:
    """Coarse unknowns: 2x2 blocks that are unknown throughout (odd edges padded by replication).

    A coarse grid inside the fine one keeps the coarse-grid corrections from overshooting at the hole
    border (a grid reaching past it diverges); the smoother handles the thin rim it misses.
    """
    h, w = unknown.shape
    u = np.pad(unknown, ((0, h % 2), (0, w % 2)), mode="edge")
    return u.reshape(u.shape[0] // 2, 2, u.shape[1] // 2, 2).all(axis=(1, 3))


def _downsample_known(x: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Mean of the known pixels of each 2x2 block (the coarse grid's boundary data). (h, w, C) -> coarse."""
    h, w = known.shape
    kept = np.zeros_like(x)
    cv2.copyTo(x, known.view(np.uint8), kept)  # x where known, else 0
    weight = known.astype(np.float32)[..., None]
    if h % 2 or w % 2:  # odd edge: replicate, as _coarsen does, so edge blocks keep their known pixels
        pad = ((0, h % 2), (0, w % 2), (0, 0))
        kept, weight = np.pad(kept, pad, mode="edge"), np.pad(weight, pad, mode="edge")
    return _block_sum(kept) / np.maximum(_block_sum(weight), 1.0)


def _prolong(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Bilinear upsampling by 2 of a coarse grid, cropped to the fine `shape` (h, w, C)."""
    hc, wc = coarse.shape[:2]
    up = cv2.resize(coarse, (2 * wc, 2 * hc), interpolation=cv2.INTER_LINEAR)
    return up.reshape(2 * hc, 2 * wc, -1)[: shape[0], : shape[1]]


def _vcycle(levels: list[_Level], f: np.ndarray) -> np.ndarray:
    """Approximate solution of A e = f on levels[0]'s unknowns (e = 0 elsewhere). f: (h, w, C) float32."""
    level = levels[0]
    e = np.zeros_like(f)
    if level.lu is not None:
        e[level.unknown] = level.solve(f)
        return e
    g = 0.25 * f
    pre, post = _SMOOTH_SWEEPS
    cv2.copyTo(g[level.box], level.colours[0], e[level.box])  # the first red update, from e = 0
    _smooth(level, e, g, pre, skip_first=True)
    # Residual block sums: the coarse 5-point operator has 4x the fine one's scale (spacing 2).
    correction = _vcycle(levels[1:], _block_sum(_residual(level, e, f)))
    box = level.box
    cv2.add(e[box], _prolong(correction, e.shape)[box], dst=e[box], mask=level.mask)
    _smooth(level, e, g, post)
    return e


def _multigrid_fill(
    img: np.ndarray, hole: np.ndarray, direct_max: int, tol: float, max_iterations: int
) -> np.ndarray:
    """Harmonic fill. img: (H, W, C) float32 -> filled (H, W, C) float32.

    Coarse grids halve the resolution until at most `direct_max` unknowns remain (solved exactly).
    Full multigrid gives the initial guess (each grid starts from the upsampled coarser solution), then
    conjugate gradients with a V-cycle preconditioner refine it: plain V-cycles converge slowly here
    (~0.4 per cycle) because the coarse grids miss a rim along the hole border; CG makes it ~0.2.
    """
    levels = [_Level.make(hole)]
    while int(levels[-1].unknown.sum()) > direct_max:
        coarse = _coarsen(levels[-1].unknown)
        if not coarse.any():  # thin holes only: few unknowns' worth of fill-in, the LU stays cheap
            break
        levels.append(_Level.make(coarse))
    levels[-1].factorise()
    data = [img]
    for level in levels[:-1]:
        data.append(_downsample_known(data[-1], ~level.unknown))
    x = data[-1]
    for depth in range(len(levels) - 1, -1, -1):
        level = levels[depth]
        fine = data[depth].copy()
        if depth == len(levels) - 1:
            fine[level.unknown] = 0.0
        else:
            cv2.copyTo(_prolong(x, fine.shape)[level.box], level.mask, fine[level.box])
        x = fine
        if level.lu is not None:  # coarsest grid: exact
            x += _vcycle(levels[depth:], _residual(level, x))
        elif depth:
            for _ in range(_FMG_CYCLES):
                x += _vcycle(levels[depth:], _residual(level, x))
    if len(levels) > 1:
        _conjugate_gradients(levels, x, tol, max_iterations)
    return x


def _conjugate_gradients(levels: list[_Level], x: np.ndarray, tol: float, max_iterations: int) -> None:
    """Refine x (H, W, C) float32 in place on levels[0]'s unknowns: CG preconditioned by one V-cycle.

    The preconditioned residual z (a V-cycle's answer to "how far off is x") estimates the error, so
    the loop stops once no pixel of z exceeds `tol`, adding z as a last correction. The flexible
    (Polak-Ribiere) step tolerates the V-cycle's slight asymmetry.
    """
    level = levels[0]
    r = _residual(level, x)
    z = _vcycle(levels, r)
    p = z
    rz = _dot(r, z)
    for _ in range(max_iterations):
        if max(float(z.max()), -float(z.min())) <= tol:
            x += z
            return
        q = _residual(level, p)  # -A p
        pq = -_dot(p, q)
        if rz <= 0.0 or pq <= 0.0:  # converged to round-off
            return
        alpha = rz / pq
        cv2.scaleAdd(p, alpha, x, dst=x)
        cv2.scaleAdd(q, alpha, r, dst=r)
        z_next = _vcycle(levels, r)
        rz_next = _dot(r, z_next)
        beta = (rz_next - _dot(r, z)) / rz
        p = cv2.scaleAdd(p, beta, z_next).reshape(x.shape)  # cv2 drops a single channel axis
        z, rz = z_next, rz_next


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.reshape(-1), b.reshape(-1)))
