"""Rays, ray/box intersection, stratified sampling and volume rendering in pure torch.

Rays are written X(t) = o + t d with d = ((x - cx) / f, (y - cy) / f, 1) in camera space, so the ray
parameter t IS the camera depth z (metres). A rigid change of frame maps o and d but keeps t, which
is why samples of the head branch (head frame) and the torso branch (reference frame) can be
ordered against each other by t.
"""

from __future__ import annotations

import torch


def pixel_directions(K: torch.Tensor, h: int, w: int, scale: int) -> torch.Tensor:
    """Camera-space ray directions through the centres of an h x w grid of cells of `scale` x
    `scale` output pixels. K (3, 3) is at the output size (OpenCV: pixel centres at integers), so a
    cell (u, v) is centred at output pixel (scale u + (scale - 1) / 2, scale v + (scale - 1) / 2).
    -> (h * w, 3), z = 1, row-major (v, u)."""
    dev, dt = K.device, K.dtype
    off = (scale - 1) / 2.0
    xs = torch.arange(w, device=dev, dtype=dt) * scale + off
    ys = torch.arange(h, device=dev, dtype=dt) * scale + off
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    dx = (x - K[0, 2] - K[0, 1] * (y - K[1, 2]) / K[1, 1]) / K[0, 0]
    dy = (y - K[1, 2]) / K[1, 1]
    return torch.stack([dx, dy, torch.ones_like(dx)], -1).reshape(-1, 3)


def rays_in_frame(dirs: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera rays (origin 0, dirs (P, 3)) expressed in the frames of poses X_cam = R X + t.

    R (B, 3, 3), t (B, 3) -> origins (B, 3) = -R^T t and directions (B, P, 3) = R^T d.
    """
    origins = -(t[:, None, :] @ R)[:, 0]  # row vector t^T R = (R^T t)^T
    return origins, dirs[None] @ R


def intersect_box(
    origins: torch.Tensor, dirs: torch.Tensor, box_min: torch.Tensor, box_max: torch.Tensor, t_min: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab-method ray / axis-aligned box intersection.

    origins (..., 3), dirs (..., 3) (broadcast), box (3,) -> near, far (...) ray parameters and
    hit (...) bool (far > near). near is clamped at t_min (the box may contain the camera).
    """
    inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0 = (box_min - origins) * inv
    t1 = (box_max - origins) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp_min(t_min)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far, far > near


def stratified_samples(
    near: torch.Tensor, far: torch.Tensor, n: int, jitter: bool, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples per ray, one in each of n equal bins of [near, far]: uniformly jittered inside
    its bin in training, at the bin centre at eval. near, far (R,) -> t (R, n), delta (R, n), where
    delta is the bin length (each sample stands for its bin, so a constant density sigma gives the
    exact opacity 1 - exp(-sigma (far - near)))."""
    bins = (far - near)[:, None] / n
    u = torch.arange(n, device=near.device, dtype=near.dtype)[None]
    if jitter:
        u = u + torch.rand((near.shape[0], n), device=near.device, dtype=near.dtype, generator=generator)
    else:
        u = u + 0.5
    return near[:, None] + u * bins, bins.expand(-1, n)


def transmittance(tau: torch.Tensor) -> torch.Tensor:
    """Exclusive transmittance along the last axis: T_i = exp(-sum_{j<i} tau_j). tau (..., N) >= 0."""
    return torch.exp(-(torch.cumsum(tau, -1) - tau))


def composite(tau: torch.Tensor, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Front-to-back alpha compositing of one ray batch, samples sorted by t.

    tau (R, N) optical depths sigma * delta; feat (R, N, C) -> feature (R, C) = sum w_i f_i,
    opacity (R,) = 1 - exp(-sum tau), weights (R, N) = T_i (1 - exp(-tau_i)).
    """
    w = transmittance(tau) * -torch.expm1(-tau)
    return torch.einsum("rn,rnc->rc", w, feat), -torch.expm1(-tau.sum(-1)), w


def distortion(weights: torch.Tensor, t: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Mip-NeRF 360 distortion regulariser per ray in O(N): weights, t, delta (R, N) -> (R,).

    sum_ij w_i w_j |t_i - t_j| + 1/3 sum_i w_i^2 delta_i; t must be sorted along N. Low when the
    weight of a ray sits in one compact interval (a surface), high for floaters and haze.
    """
    wt = weights * t
    w_cum = torch.cumsum(weights, -1) - weights
    wt_cum = torch.cumsum(wt, -1) - wt
    inter = 2.0 * (wt * w_cum - weights * wt_cum).sum(-1)
    return inter + (weights.square() * delta).sum(-1) / 3.0


class OccupancyGrid(torch.nn.Module):
    """Which cells of a box may carry compositing weight, for empty-space (and hidden-space)
    skipping. Positions are box-normalised to [-1, 1]^3.

    Two sources of knowledge, both kept as buffers (saved with the model):
    - `hull` (G, G, G) bool: cells not carved away by silhouettes (`carve`): a cell seen in front of
      the background in some frame is certainly empty. A hard constraint, applied to every sample.
    - `weight` (G, G, G): a decaying maximum of the compositing weights training samples received in
      each cell. A cell whose weight stays below `threshold` is empty or always hidden behind a
      surface (for these cameras and poses); with a static camera this leaves a thin visible shell.
    `mask` = dilate(weight > threshold, `dilation` cells) AND hull is what skipping uses; a fresh
    grid allows every cell until its first update (the renderer only skips after a warm-up).
    """

    def __init__(self, resolution: int, decay: float = 0.97, threshold: float = 1e-2, dilation: int = 0) -> None:
        super().__init__()
        g = resolution
        self.register_buffer("weight", torch.zeros(g, g, g))
        self.register_buffer("hull", torch.ones(g, g, g, dtype=torch.bool))
        self.register_buffer("mask", torch.ones(g, g, g, dtype=torch.bool))
        self.register_buffer("strides", torch.tensor([g * g, g, 1]), persistent=False)
        self.decay, self.threshold, self.resolution, self.dilation = decay, threshold, g, dilation

    @torch.no_grad()
    def cell(self, x_norm: torch.Tensor) -> torch.Tensor:
        """(..., 3) in [-1, 1] -> flat cell index (...) long (points outside go to the border cell)."""
        g = self.resolution
        i = (x_norm + 1.0).mul_(0.5 * g).long().clamp_(0, g - 1)
        return (i * self.strides).sum(-1)

    @torch.no_grad()
    def query(self, x_norm: torch.Tensor, hull_only: bool = False) -> torch.Tensor:
        """(..., 3) -> (...) bool: may the sample carry weight? (hull_only: ignore the weights)"""
        grid = self.hull if hull_only else self.mask
        return grid.reshape(-1)[self.cell(x_norm)]

    def centres(self) -> torch.Tensor:
        """Box-normalised cell centres (G^3, 3), in flat cell order."""
        g = self.resolution
        u = (torch.arange(g, device=self.weight.device, dtype=self.weight.dtype) + 0.5) * (2.0 / g) - 1.0
        return torch.stack(torch.meshgrid(u, u, u, indexing="ij"), -1).reshape(-1, 3)

    @torch.no_grad()
    def carve(self, empty: torch.Tensor) -> None:
        """Remove cells known to be empty, (G^3,) or (G, G, G) bool, from the hull."""
        self.hull &= ~empty.reshape(self.hull.shape)
        self.mask &= self.hull

    @torch.no_grad()
    def update(self, x_norm: torch.Tensor, weights: torch.Tensor) -> None:
        """Fold the weights (M,) of samples at x_norm (M, 3) into the grid and refresh the mask."""
        new = torch.zeros_like(self.weight).reshape(-1)
        new.scatter_reduce_(0, self.cell(x_norm), weights.detach().to(new.dtype), reduce="amax")
        self.weight.copy_(torch.maximum(self.weight * self.decay, new.reshape(self.weight.shape)))
        occ = self.weight > self.threshold
        if self.dilation > 0:
            k = 2 * self.dilation + 1
            occ = torch.nn.functional.max_pool3d(occ.float()[None, None], k, stride=1, padding=self.dilation)[0, 0] > 0
        self.mask.copy_(occ & self.hull)

    def occupied_fraction(self) -> float:
        return float(self.mask.float().mean())
