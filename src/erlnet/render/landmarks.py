"""Landmark conditioning of the head field: a Gaussian landmark code and a landmark warp.

A global expression code (one FiLM vector per frame) has to tell a whole tri-plane field where the
lips went; in practice the field learns the mean mouth and the rendered mouth barely opens. Here the
driving landmarks (`face.topology.DRIVING`: lips, jaw, chin, lids, brows) act where they are:

- **Warp.** A head-field sample x (canonical head frame) is moved back by the displacement of the
  landmarks around it, x' = x - sum_k g_k(x) d_k / (floor + sum_k g_k(x)), with isotropic Gaussians
  g_k of radius `warp_sigma` centred on the frame's landmark positions q_k = p_k + d_k (p_k neutral,
  d_k displacement). A point on the frame's lower lip lands on the neutral lower lip, so the lip's
  texture and the chin follow the motion by construction and the tri-planes keep one sharp neutral
  face; far from every landmark x' = x. The warp has no parameters (it is the motion, not a guess).
- **Gaussian landmark code** (after Ma, Cao, Zhang, CVM 2025, section 3): each landmark owns a
  learnable anisotropic Gaussian and a learnable linear embedding of its (standardised)
  displacement; a sample's code is sum_k g_k(x) e_k. It is local: what the opened lips do to the
  points between them (dark mouth interior, teeth) is a function of the nearby landmarks only.

Both work in the head box's normalised coordinates ([-1, 1]^3; Gaussians are converted per axis).
The squared Mahalanobis distances of M samples to L landmarks are one (M, 7) x (7, L) product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from erlnet.face import topology

_CHUNK = 1 << 16  # samples per block in the warp (bounded memory: block x L floats)


def expression_points(expression_dim: int) -> np.ndarray | None:
    """The landmark indices (into the 478 points) an expression vector of this width holds, in its
    order (`face.representation.LandmarkRepresentation`: all points or `topology.EXPRESSIVE`), or
    None for another layout."""
    for points in (np.arange(topology.N_LANDMARKS), np.arange(topology.N_MESH), topology.EXPRESSIVE):
        if expression_dim == 3 * len(points):
            return points
    return None


def driving_columns(expression_dim: int) -> torch.Tensor | None:
    """(L, 3) long: the expression columns of the x, y, z displacement of each driving landmark
    (`topology.DRIVING`, L = 113), or None when the layout is unknown or lacks one of them."""
    points = expression_points(expression_dim)
    if points is None:
        return None
    where = {int(p): i for i, p in enumerate(points)}
    if not all(int(p) in where for p in topology.DRIVING):
        return None
    rows = [where[int(p)] for p in topology.DRIVING]
    return torch.tensor(rows, dtype=torch.long)[:, None] * 3 + torch.arange(3)


@dataclass
class FrameLandmarks:
    """Per-frame landmark state in box-normalised units. q (B, L, 3) positions, d (B, L, 3)
    displacements, e (B, L, C) embedded displacements."""

    q: torch.Tensor
    d: torch.Tensor
    e: torch.Tensor


def _quadratic_weights(x: torch.Tensor, q: torch.Tensor, inv_var: torch.Tensor) -> torch.Tensor:
    """Gaussian weights exp(-0.5 sum_a (x_a - q_ka)^2 inv_var_ka): x (M, 3), q (L, 3), inv_var (L, 3)
    -> (M, L). Expanded to [x^2, x, 1] @ [inv_var; -2 q inv_var; sum q^2 inv_var]: one product."""
    feats = torch.cat([x * x, x, torch.ones_like(x[:, :1])], 1)  # (M, 7)
    coef = torch.cat([inv_var, -2.0 * q * inv_var, (q * q * inv_var).sum(1, keepdim=True)], 1)  # (L, 7)
    return torch.exp(-0.5 * (feats @ coef.t()).clamp_min(0.0))


class LandmarkCoding(nn.Module):
    """Warp + Gaussian landmark code of the head field (see the module docstring).

    columns (L, 3): expression columns of the driving landmarks (`driving_columns`); box_min/max:
    the head box (metres); channels C of the code; sigma: initial Gaussian radius of the code (m);
    warp_sigma: radius of the warp's Gaussians (m, 0 = no warp); warp_floor: the weight of "stay"
    in the warp's normalisation.
    """

    def __init__(self, columns: torch.Tensor, box_min: tuple[float, float, float],
                 box_max: tuple[float, float, float], channels: int, sigma: float, warp_sigma: float,
                 warp_floor: float = 0.5) -> None:
        super().__init__()
        n = int(columns.shape[0])
        self.register_buffer("columns", columns.clone())
        scale = 2.0 / (torch.tensor(box_max, dtype=torch.float32) - torch.tensor(box_min, dtype=torch.float32))
        self.register_buffer("box_min", torch.tensor(box_min, dtype=torch.float32), persistent=False)
        self.register_buffer("scale", scale, persistent=False)  # metres -> normalised units, per axis
        # Set from the subject (`set_face`, `set_stats`) and saved with the weights.
        self.register_buffer("neutral", torch.zeros(n, 3))  # neutral positions, canonical frame, metres
        self.register_buffer("unit", torch.tensor(1.0))  # expression unit: the neutral's eye-corner distance (m)
        self.register_buffer("d_std", torch.full((n, 3), 0.01))  # displacement std in training (m)
        self.log_sigma = nn.Parameter(torch.full((n, 3), math.log(sigma)))
        self.weight = nn.Parameter(torch.randn(n, 3, channels) / math.sqrt(3.0))
        self.bias = nn.Parameter(torch.randn(n, channels) * 0.1)
        self.channels = channels
        self.warp_sigma = warp_sigma
        self.warp_floor = warp_floor

    @torch.no_grad()
    def set_face(self, neutral: torch.Tensor) -> None:
        """neutral (478 or 468, 3): the subject's neutral face in the canonical head frame (metres)."""
        neutral = torch.as_tensor(neutral, dtype=torch.float32).to(self.neutral.device)
        idx = torch.from_numpy(topology.DRIVING).to(self.columns.device)
        self.neutral.copy_(neutral[idx])
        self.unit.copy_((neutral[263] - neutral[33]).norm().clamp_min(1e-6))

    @torch.no_grad()
    def set_stats(self, expressions: torch.Tensor) -> None:
        """expressions (T, D) of the training frames: the displacement std of each landmark and axis
        (floored at a tenth of the median, so a still point does not amplify tracking noise)."""
        d = self.displacements(torch.as_tensor(expressions, dtype=torch.float32).to(self.neutral.device))
        std = d.std(0) if len(d) > 1 else torch.full_like(self.d_std, 0.01)
        self.d_std.copy_(std.clamp_min(0.1 * float(std.median().clamp_min(1e-6))))

    def displacements(self, expression: torch.Tensor) -> torch.Tensor:
        """expression (B, D) -> driving-landmark displacements (B, L, 3), metres."""
        return expression[:, self.columns] * self.unit

    def frame_state(self, expression: torch.Tensor) -> FrameLandmarks:
        """expression (B, D) -> the frames' landmark positions, displacements and embeddings."""
        d_m = self.displacements(expression)
        q = ((self.neutral + d_m) - self.box_min) * self.scale - 1.0
        e = torch.einsum("blj,ljc->blc", d_m / self.d_std, self.weight) + self.bias
        return FrameLandmarks(q=q, d=d_m * self.scale, e=e)

    @staticmethod
    def _near(x: torch.Tensor, q: torch.Tensor, reach: torch.Tensor) -> torch.Tensor:
        """Indices of the samples x (M, 3) inside the landmarks' q (L, 3) bounding box grown by
        `reach` (3,): beyond it every Gaussian is below exp(-4.5) and the terms are left out, which
        spares most samples (hair, neck, the back of the head) the (samples x landmarks) work."""
        lo, hi = q.min(0).values - reach, q.max(0).values + reach
        return ((x >= lo) & (x <= hi)).all(1).nonzero()[:, 0]

    @torch.no_grad()
    def warp(self, x: torch.Tensor, counts: list[int], state: FrameLandmarks) -> torch.Tensor:
        """x (M, 3) normalised samples grouped by frame (`counts`) -> warped samples (M, 3)."""
        if self.warp_sigma <= 0 or not len(x):
            return x
        sigma_n = self.warp_sigma * self.scale
        inv_var = (1.0 / sigma_n**2).expand_as(self.neutral)
        out = []
        for f, xf in enumerate(x.split(counts)):
            idx = self._near(xf, state.q[f], 3.0 * sigma_n)
            moved = xf.clone()
            for ic in idx.split(_CHUNK):
                xc = xf[ic]
                g = _quadratic_weights(xc, state.q[f], inv_var)
                moved[ic] = xc - (g @ state.d[f]) / (g.sum(1, keepdim=True) + self.warp_floor)
            out.append(moved)
        return torch.cat(out) if out else x

    def code(self, x: torch.Tensor, counts: list[int], state: FrameLandmarks) -> torch.Tensor:
        """x (M, 3) normalised samples (before the warp) grouped by frame -> local codes (M, C)."""
        sigma_n = torch.exp(self.log_sigma) * self.scale  # (L, 3)
        inv_var = 1.0 / sigma_n**2
        reach = 3.0 * sigma_n.detach().max(0).values
        parts = []
        for f, xf in enumerate(x.split(counts)):
            idx = self._near(xf, state.q[f].detach(), reach)
            val = _quadratic_weights(xf[idx], state.q[f], inv_var) @ state.e[f]
            parts.append(xf.new_zeros(len(xf), self.channels).index_copy(0, idx, val))
        return torch.cat(parts) if parts else x.new_zeros(0, self.channels)

    @torch.no_grad()
    def region(self, centres: torch.Tensor, margin: float, points: np.ndarray) -> torch.Tensor:
        """Which of the normalised points `centres` (N, 3) lie within `margin` metres of the
        neutral positions' bounding box of the driving landmarks `points` (478-indices) -> (N,) bool."""
        keep = np.isin(topology.DRIVING, points)
        p = (self.neutral[torch.from_numpy(keep).to(self.neutral.device)] - self.box_min) * self.scale - 1.0
        if not len(p):
            return torch.zeros(len(centres), dtype=torch.bool, device=centres.device)
        pad = margin * self.scale
        lo, hi = p.min(0).values - pad, p.max(0).values + pad
        return ((centres >= lo) & (centres <= hi)).all(1)
