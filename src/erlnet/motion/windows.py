"""Windows of any-length sequences, smooth cross-faded joins, and head-pose maths (torch).

Generation runs the motion model on fixed-length windows that overlap; `blend` joins them with
raised-cosine ramps so that every output frame is a convex combination of the windows covering it.
Head pose within a window is a delta from the window's first frame (`pose_deltas` / `apply_deltas`),
so each window can continue from the pose where the previous one was at that frame.
"""

from __future__ import annotations

import math

import torch

from erlnet.errors import InputError

# ----------------------------------------------------------------------------- rotations


def _skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrices."""
    z = torch.zeros_like(v[..., 0])
    x, y, w = v.unbind(-1)
    return torch.stack([z, -w, y, w, z, -x, -y, x, z], dim=-1).reshape(*v.shape, 3)


def rotvec_to_matrix(v: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) rad -> rotation matrices (..., 3, 3) (Rodrigues; exact near zero)."""
    theta2 = (v * v).sum(-1, keepdim=True)[..., None]
    theta = theta2.sqrt()
    small = theta < 1e-4
    safe = torch.where(small, torch.ones_like(theta), theta)
    a = torch.where(small, 1 - theta2 / 6, torch.sin(safe) / safe)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(safe)) / (safe * safe))
    k = _skew(v)
    eye = torch.eye(3, dtype=v.dtype, device=v.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def matrix_to_rotvec(r: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> axis-angle (..., 3) rad.

    Accurate for angles below ~170 degrees (head-pose deltas and offsets are far smaller); the axis
    becomes ill-defined as the angle approaches 180 degrees.
    """
    v = 0.5 * torch.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1)
    s = v.norm(dim=-1, keepdim=True)  # sin(theta)
    c = 0.5 * (r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2] - 1).unsqueeze(-1)  # cos(theta)
    theta = torch.atan2(s, c)
    factor = torch.where(s < 1e-6, torch.ones_like(s), theta / s.clamp_min(1e-12))
    return v * factor


def project_rotation(m: torch.Tensor) -> torch.Tensor:
    """Nearest rotation (..., 3, 3) to each matrix (SVD; used after averaging rotations)."""
    u, _, vt = torch.linalg.svd(m)
    d = torch.sign(torch.det(u @ vt))
    fix = torch.ones(*m.shape[:-2], 3, dtype=m.dtype, device=m.device)
    fix[..., 2] = d
    return u @ torch.diag_embed(fix) @ vt


def mean_pose(rotation: torch.Tensor, translation: torch.Tensor,
              mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean head pose over time: rotation (B, T, 3, 3), translation (B, T, 3), mask (B, T) bool of valid
    frames -> chordal mean rotation (B, 3, 3), mean translation (B, 3)."""
    w = torch.ones(rotation.shape[:2], dtype=rotation.dtype, device=rotation.device) if mask is None \
        else mask.to(rotation.dtype)
    n = w.sum(1).clamp_min(1.0)
    r = project_rotation((rotation * w[..., None, None]).sum(1))
    t = (translation * w[..., None]).sum(1) / n[:, None]
    return r, t


def relative_pose(rotation: torch.Tensor, translation: torch.Tensor, r_ref: torch.Tensor,
                  t_ref: torch.Tensor) -> torch.Tensor:
    """Pose relative to a reference: rotation (..., 3, 3), translation (..., 3) and r_ref (..., 3, 3),
    t_ref (..., 3) broadcastable -> (..., 6) = [axis-angle of r_ref^T R (rad), t - t_ref (m)]."""
    return torch.cat([matrix_to_rotvec(r_ref.transpose(-1, -2) @ rotation), translation - t_ref], dim=-1)


def pose_deltas(rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Deltas from each window's first frame: (B, W, 3, 3), (B, W, 3) -> (B, W, 6); frame 0 is zero.

    R_t = R_0 dR_t (so dR is in the head frame) and t_t = t_0 + dt_t (camera frame, metres).
    """
    return relative_pose(rotation, translation, rotation[:, :1], translation[:, :1])


def apply_deltas(deltas: torch.Tensor, r0: torch.Tensor, t0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `pose_deltas`: deltas (B, W, 6), start pose r0 (B, 3, 3), t0 (B, 3) ->
    rotation (B, W, 3, 3), translation (B, W, 3)."""
    return r0[:, None] @ rotvec_to_matrix(deltas[..., :3]), t0[:, None] + deltas[..., 3:]


# ----------------------------------------------------------------------------- windows


def window_starts(n_frames: int, window: int, overlap: int, align: int = 1) -> list[int]:
    """First frames of windows of `window` frames covering `n_frames` frames.

    Consecutive windows share at least `overlap` frames; starts are multiples of `align` (so windows
    share whole VQ tokens) spread evenly, the last window reaching the end (it may run up to align - 1
    frames past it; one window when n_frames <= window).
    """
    if n_frames < 1:
        raise InputError(f"need at least one frame, got {n_frames}")
    if align < 1 or window % align or not 0 <= overlap <= window - align:
        raise InputError(f"need overlap in [0, window - align] and window a multiple of align, got "
                         f"overlap={overlap}, window={window}, align={align}")
    if n_frames <= window:
        return [0]
    span = -(-(n_frames - window) // align)  # in units of align, rounded up so the end is covered
    stride = (window - overlap) // align  # largest step (units of align) that keeps `overlap` frames shared
    n = -(-span // stride) + 1
    return [align * round(i * span / (n - 1)) for i in range(n)]


def crossfade_weights(starts: list[int], window: int, n_frames: int) -> torch.Tensor:
    """(n_windows, window) blending weights: where consecutive windows overlap, the earlier one fades out
    and the later one fades in over the whole shared stretch (complementary raised-cosine ramps, so the
    hand-over is as gradual as the overlap allows); flat elsewhere, strictly positive everywhere."""
    w = torch.ones(len(starts), window, dtype=torch.float64)
    for k in range(len(starts) - 1):
        shared = min(starts[k] + window, n_frames) - starts[k + 1]
        if shared <= 0:
            continue
        # (i + 0.5) / shared keeps every weight above zero, so a frame covered once keeps its value.
        up = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(shared, dtype=torch.float64) + 0.5) / shared)
        w[k + 1, :shared] *= up
        end = min(starts[k] + window, n_frames) - starts[k]
        w[k, end - shared:end] *= up.flip(0)
    return w


def blend(chunks: torch.Tensor, starts: list[int], n_frames: int) -> torch.Tensor:
    """Overlap-add windows chunks (n, W, ...) starting at `starts` into (n_frames, ...), weighted by
    `crossfade_weights` and normalised, so every frame is a convex combination of the windows covering it.

    Where two windows disagree by d, the hand-over adds at most about pi/2 * d / overlap to the
    frame-to-frame change: no jump, and small when windows agree and overlap generously.
    """
    n, window = chunks.shape[:2]
    if n != len(starts):
        raise InputError(f"{n} chunks but {len(starts)} window starts")
    w = crossfade_weights(starts, window, n_frames).to(chunks.dtype)
    tail = chunks.shape[2:]
    out = chunks.new_zeros(max(n_frames, starts[-1] + window), *tail)
    total = chunks.new_zeros(out.shape[0])
    for k, s in enumerate(starts):
        wk = w[k].reshape(window, *([1] * len(tail)))
        out[s:s + window] += wk * chunks[k]
        total[s:s + window] += w[k]
    return out[:n_frames] / total[:n_frames].reshape(-1, *([1] * len(tail)))


def blend_rotations(chunks: torch.Tensor, starts: list[int], n_frames: int) -> torch.Tensor:
    """`blend` for rotation matrices (n, W, 3, 3): weighted mean of the matrices projected back onto SO(3)."""
    return project_rotation(blend(chunks, starts, n_frames))


def cut_windows(x: torch.Tensor, starts: list[int], window: int) -> torch.Tensor:
    """Windows (n, window, ...) of a sequence (T, ...); frames past the end repeat the last frame."""
    need = starts[-1] + window
    if need > len(x):
        x = torch.cat([x, x[-1:].expand(need - len(x), *x.shape[1:])], dim=0)
    return torch.stack([x[s:s + window] for s in starts])
