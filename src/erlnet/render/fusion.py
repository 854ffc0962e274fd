"""Fusion of the head and torso branches: in feature space along the rays (DBF-NeRF) or as RGBA
images (the pixel-compositing ablation used by earlier NeRF talking heads).

Feature fusion (``fuse_rays``), per ray r with head samples i and torso samples j
-------------------------------------------------------------------------------
Each branch gives samples at depths t (the ray parameter is the camera depth, shared by both
frames), optical depths tau = sigma * delta and feature vectors f. All samples of the ray are
merged and ordered by depth, and composited as ONE volume:

    T(s)  = exp( - sum_{k : t_k < t_s} tau_k )          (k runs over head AND torso samples)
    w_s   = T(s) (1 - exp(-tau_s))
    F     = sum_{i in head} w_i f_i + sum_{j in torso} w_j f_j
    A     = sum_s w_s = 1 - exp(-sum_s tau_s) = 1 - (1 - A_h)(1 - A_t)
    V_h   = sum_{i in head} w_i,   V_t = sum_{j in torso} w_j   (V_h + V_t = A)

with A_h = 1 - exp(-sum_i tau_i), A_t likewise, the branches' own accumulated opacities. F is the
premultiplied fused feature fed (with A) to one upsampler, V_h and V_t are the *visible* head and
torso coverage, which is what the segmentation masks label.

Why per sample and not a per-pixel blend such as A (A_h F_h + A_t F_t) / (A_h + A_t): where both
branches are opaque (the chin over the neck, hair over a shoulder), a per-pixel blend averages the
two features whatever their depth order, so the decoder sees a half-chin-half-neck feature that
flips as the head moves. Depth-ordered compositing resolves the occlusion exactly (the front
surface wins), keeps A identical to the per-pixel formula, and costs only a binary search per
sample in the other branch's depths (features are never gathered or sorted). On equal depths the
head sample counts as in front. Examples: an opaque head sample in front gives F = f_h; no head
density gives the torso's own composite; a head sample of opacity a_h in front of a torso sample
of opacity a_t gives F = a_h f_h + (1 - a_h) a_t f_t, A = 1 - (1 - a_h)(1 - a_t).

Pixel fusion (``over``): each branch is decoded to RGBA separately and composited head over torso
over background: C = a_h c_h + (1 - a_h)(a_t c_t + (1 - a_t) bg).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FusedRays:
    """feature (R, C) premultiplied; alpha (R,); head_vis, torso_vis (R,) visible coverage;
    head_weights (R, Nh), torso_weights (R, Nt) per-sample compositing weights."""

    feature: torch.Tensor
    alpha: torch.Tensor
    head_vis: torch.Tensor
    torso_vis: torch.Tensor
    head_weights: torch.Tensor
    torso_weights: torch.Tensor


def fusion_weights(
    tau_h: torch.Tensor, t_h: torch.Tensor, tau_t: torch.Tensor, t_t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Compositing weights w_s of the merged, depth-ordered samples (module docstring).

    tau_h, t_h (R, Nh); tau_t, t_t (R, Nt), each branch sorted by t along its last axis ->
    w_h (R, Nh), w_t (R, Nt). The branches are merged without sorting: the transmittance in front
    of a head sample is its own branch's exclusive transmittance times the torso transmittance up
    to its depth, found by binary search in the torso's cumulative optical depth (and vice versa).
    On equal depths the head sample counts as in front.
    """
    zero = tau_h.new_zeros(tau_h.shape[0], 1)
    cum_h = torch.cat([zero, torch.cumsum(tau_h, 1)], 1)  # (R, Nh + 1): optical depth before sample k
    cum_t = torch.cat([zero, torch.cumsum(tau_t, 1)], 1)
    k_t = torch.searchsorted(t_t.contiguous(), t_h.contiguous(), side="left")  # torso samples before each head sample
    k_h = torch.searchsorted(t_h.contiguous(), t_t.contiguous(), side="right")  # head samples at/before each torso sample
    depth_h = cum_h[:, :-1] + cum_t.gather(1, k_t)
    depth_t = cum_t[:, :-1] + cum_h.gather(1, k_h)
    return torch.exp(-depth_h) * -torch.expm1(-tau_h), torch.exp(-depth_t) * -torch.expm1(-tau_t)


def fuse_rays(
    tau_h: torch.Tensor,
    t_h: torch.Tensor,
    feat_h: torch.Tensor,
    tau_t: torch.Tensor,
    t_t: torch.Tensor,
    feat_t: torch.Tensor,
) -> FusedRays:
    """Depth-ordered compositing of head and torso samples (formula in the module docstring).

    tau_h, t_h (R, Nh); feat_h (R, Nh, C); tau_t, t_t (R, Nt); feat_t (R, Nt, C); each branch's
    samples sorted by depth t. Rays a branch misses simply carry tau = 0 there.
    """
    w_h, w_t = fusion_weights(tau_h, t_h, tau_t, t_t)
    feature = torch.einsum("rn,rnc->rc", w_h, feat_h) + torch.einsum("rn,rnc->rc", w_t, feat_t)
    alpha = -torch.expm1(-(tau_h.sum(1) + tau_t.sum(1)))
    return FusedRays(feature, alpha, w_h.sum(1), w_t.sum(1), w_h, w_t)


def over(
    rgb_front: torch.Tensor, a_front: torch.Tensor, rgb_back: torch.Tensor, a_back: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Straight-alpha 'over': (B, 3, H, W) colours and (B, 1, H, W) alphas -> premultiplied colour
    a_f c_f + (1 - a_f) a_b c_b and alpha 1 - (1 - a_f)(1 - a_b)."""
    return a_front * rgb_front + (1.0 - a_front) * a_back * rgb_back, 1.0 - (1.0 - a_front) * (1.0 - a_back)


def over_background(premult: torch.Tensor, alpha: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Premultiplied colour (B, 3, H, W) + alpha (B, 1, H, W) over background (B, 3, H, W)."""
    return premult + (1.0 - alpha) * background
