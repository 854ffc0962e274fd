"""Head pose from tracked landmarks: similarity fits, the canonical head shape, per-frame poses.

Frames follow docs/conventions.md: landmarks are pixels (x right, y down, z = relative depth in the
x unit); the canonical head frame is in metres (outer eye corners 0.095 m apart, centred on the rigid
points, x right / y down / z away from the camera for a frontal face); ``X_cam = R @ X_can + t``.
Weak perspective: a frame's landmarks are ``lms = s * (R @ X_can) + (cx + s*t_x, cy + s*t_y, z_offset)``
with ``s = f / t_z`` pixels per metre.

All batched functions are vectorised over the leading (frame) axis with numpy's batched SVD.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from erlnet.errors import InputError
from erlnet.face import topology as tp

EYE_DISTANCE_M = 0.095  # canonical distance between the outer eye corners 33 and 263, metres
_CHI3_MEDIAN = 1.5382  # median of the norm of a 3D standard normal: turns a median residual into sigma


@dataclass
class Similarity:
    """3D similarity ``dst ≈ s * R @ src + t`` (proper rotation, no reflection)."""

    s: float  # scale
    R: np.ndarray  # (3, 3) rotation
    t: np.ndarray  # (3,) translation

    def apply(self, x: np.ndarray) -> np.ndarray:
        """x (..., 3) -> (..., 3)."""
        return self.s * np.asarray(x) @ self.R.T + self.t

    def inverse(self) -> Similarity:
        return Similarity(s=1.0 / self.s, R=self.R.T, t=-(self.R.T @ self.t) / self.s)


@dataclass
class HeadPoses:
    """Per-frame head poses (float32). Frames whose landmarks were not finite hold NaN."""

    R: np.ndarray  # (T, 3, 3) rotation canonical -> camera
    t: np.ndarray  # (T, 3) translation, metres (t_z = f / scale)
    scale: np.ndarray  # (T,) weak-perspective scale, pixels per metre
    z_offset: np.ndarray  # (T,) landmark z (pixels) of the canonical origin; MediaPipe z is relative

    def __len__(self) -> int:
        return len(self.scale)

    def matrices(self) -> np.ndarray:
        """(T, 4, 4) canonical -> camera rigid transforms [R | t]."""
        m = np.zeros((len(self), 4, 4), dtype=np.float32)
        m[:, :3, :3] = self.R
        m[:, :3, 3] = self.t
        m[:, 3, 3] = 1.0
        return m


# ----------------------------------------------------------------------------------------------
# Similarity fits (batched core + single-pair wrappers)


def similarity_batch(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted Umeyama (1991) fit per batch item: dst ≈ s R src + t.

    src, dst (B, N, 3); weights (B, N) or (N,) >= 0 -> s (B,), R (B, 3, 3), t (B, 3) (float64).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    b, n = src.shape[:2]
    w = np.ones((b, n)) if weights is None else np.broadcast_to(np.asarray(weights, np.float64), (b, n))
    w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-300)
    mu_s = np.einsum("bn,bnk->bk", w, src)
    mu_d = np.einsum("bn,bnk->bk", w, dst)
    xs = src - mu_s[:, None]
    xd = dst - mu_d[:, None]
    wxd = xd * w[:, :, None]
    cov = np.swapaxes(wxd, 1, 2) @ xs  # (B, 3, 3) weighted dst-src cross covariance
    u, d, vt = np.linalg.svd(cov)
    # Flip the weakest axis when the best orthogonal map would be a reflection.
    sign = np.sign(np.linalg.det(u) * np.linalg.det(vt))
    sign[sign == 0] = 1.0
    u[:, :, 2] *= sign[:, None]
    d[:, 2] *= sign
    r = u @ vt
    var_s = (w * (xs * xs).sum(axis=2)).sum(axis=1)
    s = d.sum(axis=1) / np.maximum(var_s, 1e-300)
    t = mu_d - s[:, None] * (r @ mu_s[:, :, None])[:, :, 0]
    return s, r, t


def _apply_batch(s: np.ndarray, r: np.ndarray, t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """s (B,), r (B, 3, 3), t (B, 3), x (B, N, 3) -> s r x + t (B, N, 3)."""
    return s[:, None, None] * (x @ np.swapaxes(r, 1, 2)) + t[:, None]


def robust_similarity_batch(
    src: np.ndarray,
    dst: np.ndarray,
    weights: np.ndarray | None = None,
    n_iter: int = 8,
    c: float = 2.385,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IRLS similarity fit with the Cauchy loss, per batch item. Shapes as similarity_batch.

    The residual scale is re-estimated each iteration from the median residual, so ``c`` (in units of
    that sigma; 2.385 gives 95% efficiency on Gaussian noise) is unit free.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    b, n = src.shape[:2]
    w0 = np.ones((b, n)) if weights is None else np.broadcast_to(np.asarray(weights, np.float64), (b, n))
    s, r, t = similarity_batch(src, dst, w0)
    # Floor sigma relative to the data extent so exact data (zero residuals) does not divide by zero.
    extent = np.sqrt(((dst - dst.mean(axis=1, keepdims=True)) ** 2).sum(axis=2)).mean(axis=1)
    w_prev = w0
    for _ in range(n_iter):
        res = np.sqrt(((dst - _apply_batch(s, r, t, src)) ** 2).sum(axis=2))
        sigma = np.maximum(np.median(res, axis=1) / _CHI3_MEDIAN, 1e-9 * extent + 1e-300)
        w = w0 / (1.0 + (res / (c * sigma[:, None])) ** 2)
        if np.abs(w - w_prev).max() < 1e-4:  # weights settled: the fit would not change
            break
        s, r, t = similarity_batch(src, dst, w)
        w_prev = w
    return s, r, t


def _check_pair(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape or len(src) < 3:
        raise ValueError(f"expected two (N>=3, 3) point sets, got {src.shape} and {dst.shape}")
    return src, dst


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> Similarity:
    """Least-squares similarity dst ≈ s R src + t. src, dst (N, 3); weights (N,) optional."""
    src, dst = _check_pair(src, dst)
    s, r, t = similarity_batch(src[None], dst[None], None if weights is None else np.asarray(weights)[None])
    return Similarity(s=float(s[0]), R=r[0], t=t[0])


def robust_similarity(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None, n_iter: int = 8, c: float = 2.385
) -> Similarity:
    """Outlier-resistant similarity (IRLS, Cauchy loss). src, dst (N, 3); weights (N,) optional."""
    src, dst = _check_pair(src, dst)
    w = None if weights is None else np.asarray(weights)[None]
    s, r, t = robust_similarity_batch(src[None], dst[None], w, n_iter=n_iter, c=c)
    return Similarity(s=float(s[0]), R=r[0], t=t[0])


# ----------------------------------------------------------------------------------------------
# Canonical shape


def _check_lms(lms: np.ndarray) -> np.ndarray:
    lms = np.asarray(lms)
    if lms.ndim != 3 or lms.shape[2] != 3 or lms.shape[1] <= int(tp.CHIN):
        raise InputError(f"expected landmarks (T, N, 3) with MediaPipe topology, got shape {lms.shape}")
    return lms


def canonical_axes(shape: np.ndarray) -> np.ndarray:
    """Rows x, y, z of the canonical frame for a (N, 3) shape in camera-like axes -> (3, 3).

    x: outer eye corner 33 -> 263 (image right); y: forehead top 10 -> chin 152, made orthogonal to
    x (down); z = x cross y (away from the camera). A frontal face gets ~identity.
    """
    x = shape[263] - shape[33]
    x = x / np.linalg.norm(x)
    y = shape[tp.CHIN] - shape[tp.FOREHEAD_TOP]
    y = y - (y @ x) * x
    y = y / np.linalg.norm(y)
    return np.stack([x, y, np.cross(x, y)])


def normalise_canonical(shape: np.ndarray, idx: np.ndarray = tp.RIGID) -> np.ndarray:
    """Put a (N, 3) shape into the canonical frame: centred on shape[idx], eye corners 0.095 m, axes
    from canonical_axes. -> (N, 3) float64 metres."""
    shape = np.asarray(shape, dtype=np.float64)
    centred = shape - shape[idx].mean(axis=0)
    rotated = centred @ canonical_axes(shape).T
    return rotated * (EYE_DISTANCE_M / np.linalg.norm(shape[263] - shape[33]))


def fit_canonical(
    lms: np.ndarray,
    idx: np.ndarray = tp.RIGID,
    valid: np.ndarray | None = None,
    max_frames: int = 400,
    n_iter: int = 10,
) -> np.ndarray:
    """Generalised Procrustes mean shape of a track, in the canonical head frame.

    lms (T, N, 3) pixels (any consistent unit); idx: rigid points used for the alignment; valid (T,)
    bool (default: frames with finite landmarks); at most max_frames evenly spaced frames are used.
    -> (N, 3) float32 metres.
    """
    lms = _check_lms(lms)
    ok = np.isfinite(lms).all(axis=(1, 2))
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    frames = np.flatnonzero(ok)
    if len(frames) == 0:
        raise InputError("no frame with a tracked face to fit the canonical head shape")
    if len(frames) > max_frames:
        frames = frames[np.linspace(0, len(frames) - 1, max_frames).round().astype(int)]
    x = lms[frames].astype(np.float64)
    mean = normalise_canonical(x[len(x) // 2], idx)
    for _ in range(n_iter):
        s, r, t = robust_similarity_batch(x[:, idx], np.broadcast_to(mean[idx], x[:, idx].shape), n_iter=4)
        aligned = _apply_batch(s, r, t, x)
        new = normalise_canonical(aligned.mean(axis=0), idx)
        change = np.abs(new - mean).max()
        mean = new
        if change < 1e-7:
            break
    return mean.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Per-frame poses


def _check_k(k: np.ndarray) -> tuple[float, float, float]:
    k = np.asarray(k, dtype=np.float64)
    if k.shape != (3, 3):
        raise InputError(f"expected intrinsics K of shape (3, 3), got {k.shape}")
    return float(k[0, 0]), float(k[0, 2]), float(k[1, 2])


def solve_poses(
    lms: np.ndarray,
    canonical: np.ndarray,
    K: np.ndarray,
    idx: np.ndarray = tp.RIGID,
    robust: bool = True,
    n_iter: int = 5,
) -> HeadPoses:
    """Per-frame head pose. lms (T, N, 3) pixels, canonical (N, 3) metres, K (3, 3) -> HeadPoses.

    idx: the rigid points fitted; robust: IRLS with n_iter reweightings (else plain least squares).
    Frames with non-finite landmarks get NaN poses (fill gaps first to avoid them).
    """
    lms = _check_lms(lms)
    f, cx, cy = _check_k(K)
    can = np.asarray(canonical, dtype=np.float64)
    n_frames = len(lms)
    rot = np.full((n_frames, 3, 3), np.nan)
    trans = np.full((n_frames, 3), np.nan)
    scale = np.full(n_frames, np.nan)
    z_off = np.full(n_frames, np.nan)
    ok = np.isfinite(lms[:, idx]).all(axis=(1, 2))
    if ok.any():  # frames are independent: one batched fit for all of them
        dst = lms[:, idx][ok].astype(np.float64)
        src = np.broadcast_to(can[idx], dst.shape)
        if robust:
            s, r, t_px = robust_similarity_batch(src, dst, n_iter=n_iter)
        else:
            s, r, t_px = similarity_batch(src, dst)
        rot[ok], scale[ok], z_off[ok] = r, s, t_px[:, 2]
        # The canonical origin projects to t_px[:2]; back-project it at depth f / s.
        trans[ok] = np.stack([(t_px[:, 0] - cx) / s, (t_px[:, 1] - cy) / s, f / s], axis=1)
    return HeadPoses(
        R=rot.astype(np.float32),
        t=trans.astype(np.float32),
        scale=scale.astype(np.float32),
        z_offset=z_off.astype(np.float32),
    )


def _pixel_offset(poses: HeadPoses, K: np.ndarray) -> np.ndarray:
    """(T, 3) landmark-space position of the canonical origin."""
    _, cx, cy = _check_k(K)
    s = poses.scale.astype(np.float64)
    t = poses.t.astype(np.float64)
    return np.stack([cx + s * t[:, 0], cy + s * t[:, 1], poses.z_offset.astype(np.float64)], axis=1)


def project(X_canon: np.ndarray, poses: HeadPoses, K: np.ndarray, perspective: bool = False) -> np.ndarray:
    """Canonical points into landmark pixels. X_canon (N, 3) or (T, N, 3) metres -> (T, N, 3) float32.

    Weak perspective by default (inverse of to_canonical); ``perspective=True`` divides x, y by each
    point's own depth instead (z stays in the weak-perspective landmark convention).
    """
    x = np.asarray(X_canon, dtype=np.float64)
    x = np.broadcast_to(x, (len(poses),) + x.shape[-2:])
    r = poses.R.astype(np.float64)
    s = poses.scale.astype(np.float64)[:, None, None]
    rx = x @ np.swapaxes(r, 1, 2)  # (T, N, 3) rotated row vectors
    out = s * rx + _pixel_offset(poses, K)[:, None]
    if perspective:
        f, cx, cy = _check_k(K)
        cam = rx + poses.t.astype(np.float64)[:, None]
        out[..., 0] = f * cam[..., 0] / cam[..., 2] + cx
        out[..., 1] = f * cam[..., 1] / cam[..., 2] + cy
    return out.astype(np.float32)


def to_canonical(lms: np.ndarray, poses: HeadPoses, K: np.ndarray) -> np.ndarray:
    """Landmarks into the canonical head frame. lms (T, N, 3) pixels -> (T, N, 3) float32 metres."""
    lms = _check_lms(lms).astype(np.float64)
    if len(lms) != len(poses):
        raise InputError(f"{len(lms)} landmark frames but {len(poses)} poses")
    local = (lms - _pixel_offset(poses, K)[:, None]) / poses.scale.astype(np.float64)[:, None, None]
    return (local @ poses.R.astype(np.float64)).astype(np.float32)  # R^T applied to row vectors


def default_intrinsics(size: int) -> np.ndarray:
    """K (3, 3) of docs/conventions.md for a square working crop of `size` pixels: f = 2 size."""
    return np.array([[2.0 * size, 0.0, size / 2], [0.0, 2.0 * size, size / 2], [0.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------------------------
# Rotation helpers (all accept a leading batch shape)


def rotation_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    """Angle of the relative rotation Ra^T Rb, degrees. (..., 3, 3) x2 -> (...)."""
    rel = np.swapaxes(np.asarray(Ra, np.float64), -1, -2) @ np.asarray(Rb, np.float64)
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def euler_from_matrix(R: np.ndarray, degrees: bool = False) -> np.ndarray:
    """(..., 3, 3) -> (..., 3) angles (pitch, yaw, roll) about the camera x, y, z axes, with
    ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (pitch applied first; scipy's extrinsic "xyz")."""
    r = np.asarray(R, np.float64)
    flat = Rotation.from_matrix(r.reshape(-1, 3, 3)).as_euler("xyz", degrees=degrees)
    return flat.reshape(r.shape[:-2] + (3,))


def matrix_from_euler(angles: np.ndarray, degrees: bool = False) -> np.ndarray:
    """(..., 3) (pitch, yaw, roll) -> (..., 3, 3); inverse of euler_from_matrix."""
    a = np.asarray(angles, np.float64)
    flat = Rotation.from_euler("xyz", a.reshape(-1, 3), degrees=degrees).as_matrix()
    return flat.reshape(a.shape[:-1] + (3, 3))


def axis_angle_from_matrix(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 3) rotation vectors (axis * angle in radians)."""
    r = np.asarray(R, np.float64)
    return Rotation.from_matrix(r.reshape(-1, 3, 3)).as_rotvec().reshape(r.shape[:-2] + (3,))


def matrix_from_axis_angle(rotvec: np.ndarray) -> np.ndarray:
    """(..., 3) rotation vectors (radians) -> (..., 3, 3)."""
    v = np.asarray(rotvec, np.float64)
    return Rotation.from_rotvec(v.reshape(-1, 3)).as_matrix().reshape(v.shape[:-1] + (3, 3))
