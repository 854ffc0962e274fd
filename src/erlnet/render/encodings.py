"""Input encodings of the DBF-NeRF fields: multi-resolution tri-planes, frequency encoding, pose
codes and the expression encoder. Pure torch, no custom kernels."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TriPlanes(nn.Module):
    """Multi-resolution tri-plane features (EG3D-style planes, K-planes-style resolution levels).

    Each level holds three planes (xy, xz, yz) of `channels` features at its resolution; a point's
    feature is the concatenation of its bilinear samples on all planes of all levels. (A product
    of the three samples, as in K-planes, localises features better in principle but trains far
    slower here: every gradient is scaled by the two other planes, and a silhouette the xy plane
    could learn directly stalls behind a collapsing density. Concatenation learns it at once.)
    Points are in [-1, 1]^3.
    """

    def __init__(self, resolution: int, levels: int, channels: int, init_scale: float = 0.1) -> None:
        super().__init__()
        self.resolutions = [max(4, resolution // 4**k) for k in range(levels)][::-1]
        self.planes = nn.ParameterList(
            [nn.Parameter(torch.empty(3, channels, r, r).uniform_(-init_scale, init_scale)) for r in self.resolutions]
        )
        self.out_dim = 3 * levels * channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 3) in [-1, 1] -> features (N, 3 * levels * channels), laid out (plane, level, channel)."""
        # grid_sample reads grid[..., 0] as the column (width) coordinate, grid[..., 1] as the row.
        grid = torch.stack([x[:, [0, 1]], x[:, [0, 2]], x[:, [1, 2]]])[:, None]  # (3, 1, N, 2)
        feats = [
            F.grid_sample(p, grid, mode="bilinear", padding_mode="border", align_corners=True)[:, :, 0]
            for p in self.planes
        ]  # each (3, C, N)
        return torch.cat(feats, 1).reshape(-1, x.shape[0]).t()


def frequency_encoding(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """NeRF positional encoding: x (N, D) -> (N, D + 2 D n_freqs) with sin/cos of pi 2^k x."""
    if n_freqs <= 0:
        return x
    freqs = math.pi * 2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype)
    xf = (x[..., None] * freqs).flatten(-2)
    return torch.cat([x, torch.sin(xf), torch.cos(xf)], -1)


def rotation_6d(R: torch.Tensor) -> torch.Tensor:
    """Continuous 6D rotation code (Zhou et al. 2019): the first two columns. (..., 3, 3) -> (..., 6)."""
    return torch.cat([R[..., :, 0], R[..., :, 1]], -1)


POSE_CODE_DIM = 9


def relative_pose_code(
    rotation: torch.Tensor,
    translation: torch.Tensor,
    ref_rotation: torch.Tensor,
    ref_translation: torch.Tensor,
    translation_scale: float = 10.0,
) -> torch.Tensor:
    """Head pose relative to the reference pose, zero at the reference.

    rotation (B, 3, 3), translation (B, 3) m, ref_rotation (3, 3), ref_translation (3,) m ->
    (B, 9): 6D code of R_ref^T R minus that of the identity, and R_ref^T (t - t_ref) * scale
    (scale 10: decimetres, so typical values are O(0.1-1) like the rotation part).
    """
    rel_R = ref_rotation.t() @ rotation
    rel_t = (translation - ref_translation) @ ref_rotation  # rows: R_ref^T (t - t_ref)
    eye = torch.eye(3, device=rotation.device, dtype=rotation.dtype)
    return torch.cat([rotation_6d(rel_R) - rotation_6d(eye), translation_scale * rel_t], -1)


class ExpressionEncoder(nn.Module):
    """Expression vector (+ blink) -> compact code.

    Inputs are standardised with buffers `mean`/`std` (set from training data by
    `set_stats`, saved with the weights) since landmark displacements are tiny (~0.02) and most of
    their dimensions are strongly correlated.
    """

    def __init__(self, expression_dim: int, code_dim: int, hidden: int = 128, default_std: float = 0.02) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(expression_dim))
        self.register_buffer("std", torch.full((expression_dim,), default_std))
        self.net = nn.Sequential(
            nn.Linear(expression_dim + 1, hidden), nn.LeakyReLU(0.1), nn.Linear(hidden, code_dim), nn.Tanh()
        )
        self.expression_dim = expression_dim

    @torch.no_grad()
    def set_stats(self, expressions: torch.Tensor) -> None:
        """expressions (T, D) of the training frames. Per-dimension std floored at a quarter of the
        median std so that near-constant dimensions do not amplify tracking noise."""
        e = expressions.to(self.mean).reshape(-1, self.expression_dim)
        std = e.std(0) if len(e) > 1 else torch.ones_like(self.std)
        floor = 0.25 * std.median().clamp_min(1e-6)
        self.mean.copy_(e.mean(0))
        self.std.copy_(std.clamp_min(floor))

    def forward(self, expression: torch.Tensor, blink: torch.Tensor) -> torch.Tensor:
        """expression (B, D), blink (B,) in [0, 1] -> code (B, code_dim) in (-1, 1)."""
        z = (expression - self.mean) / self.std
        return self.net(torch.cat([z, 2.0 * blink[:, None] - 1.0], -1))
