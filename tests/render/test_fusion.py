from __future__ import annotations

import torch

from erlnet.render.fusion import fuse_rays, fusion_weights, over, over_background


def _rays(tau_h, t_h, tau_t, t_t, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    f_h = torch.rand(len(tau_h), len(tau_h[0]), c, generator=g, dtype=torch.float64)
    f_t = torch.rand(len(tau_t), len(tau_t[0]), c, generator=g, dtype=torch.float64)
    T = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    return T(tau_h), T(t_h), f_h, T(tau_t), T(t_t), f_t


def test_opaque_head_in_front_gives_head_feature() -> None:
    tau_h, t_h, f_h, tau_t, t_t, f_t = _rays([[50.0, 0.0]], [[0.5, 0.6]], [[3.0, 3.0]], [[0.7, 0.8]])
    r = fuse_rays(tau_h, t_h, f_h, tau_t, t_t, f_t)
    assert torch.allclose(r.feature[0], f_h[0, 0], atol=1e-9)
    assert r.alpha[0] > 1 - 1e-9 and r.head_vis[0] > 1 - 1e-9 and r.torso_vis[0] < 1e-9


def test_torso_only_gives_torso_composite() -> None:
    tau_h, t_h, f_h, tau_t, t_t, f_t = _rays([[0.0, 0.0]], [[0.5, 0.6]], [[0.4, 0.9]], [[0.55, 0.8]])
    r = fuse_rays(tau_h, t_h, f_h, tau_t, t_t, f_t)
    a0, a1 = 1 - torch.exp(torch.tensor(-0.4, dtype=torch.float64)), 1 - torch.exp(torch.tensor(-0.9, dtype=torch.float64))
    expect = a0 * f_t[0, 0] + (1 - a0) * a1 * f_t[0, 1]
    assert torch.allclose(r.feature[0], expect, atol=1e-12)
    assert torch.allclose(r.alpha[0], 1 - (1 - a0) * (1 - a1))
    assert r.head_vis[0] == 0


def test_half_and_half_mix_follows_depth_order() -> None:
    half = float(torch.log(torch.tensor(2.0)))  # tau giving opacity 0.5
    # Head in front of torso on ray 0, behind it on ray 1.
    tau_h, t_h, f_h, tau_t, t_t, f_t = _rays([[half], [half]], [[0.5], [0.9]], [[half], [half]], [[0.7], [0.7]])
    r = fuse_rays(tau_h, t_h, f_h, tau_t, t_t, f_t)
    assert torch.allclose(r.feature[0], 0.5 * f_h[0, 0] + 0.25 * f_t[0, 0])
    assert torch.allclose(r.feature[1], 0.25 * f_h[1, 0] + 0.5 * f_t[1, 0])
    assert torch.allclose(r.alpha, torch.full((2,), 0.75, dtype=torch.float64))
    assert torch.allclose(r.head_vis + r.torso_vis, r.alpha)
    # A = 1 - (1 - A_h)(1 - A_t) whatever the order.
    assert torch.allclose(r.head_vis, torch.tensor([0.5, 0.25], dtype=torch.float64))


def test_weights_match_sorting_all_samples_together() -> None:
    g = torch.Generator().manual_seed(1)
    R, nh, nt = 64, 9, 6
    t_h = torch.sort(torch.rand(R, nh, generator=g)).values
    t_t = torch.sort(torch.rand(R, nt, generator=g)).values
    tau_h, tau_t = torch.rand(R, nh, generator=g), torch.rand(R, nt, generator=g)
    w_h, w_t = fusion_weights(tau_h, t_h, tau_t, t_t)
    tau = torch.cat([tau_h, tau_t], 1)
    order = torch.argsort(torch.cat([t_h, t_t], 1), 1)
    ts = tau.gather(1, order)
    trans = torch.empty_like(ts).scatter_(1, order, torch.exp(-(ts.cumsum(1) - ts)))
    w = trans * (1 - torch.exp(-tau))
    assert torch.allclose(torch.cat([w_h, w_t], 1), w, atol=1e-6)


def test_fusion_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(2)
    R, nh, nt, c = 4, 5, 3, 2
    t_h = torch.sort(torch.rand(R, nh, generator=g, dtype=torch.float64)).values
    t_t = torch.sort(torch.rand(R, nt, generator=g, dtype=torch.float64)).values
    args = [
        torch.rand(R, nh, generator=g, dtype=torch.float64).requires_grad_(),
        t_h,
        torch.rand(R, nh, c, generator=g, dtype=torch.float64).requires_grad_(),
        torch.rand(R, nt, generator=g, dtype=torch.float64).requires_grad_(),
        t_t,
        torch.rand(R, nt, c, generator=g, dtype=torch.float64).requires_grad_(),
    ]

    def f(*a):
        r = fuse_rays(*a)
        return r.feature, r.alpha, r.head_vis, r.torso_vis

    assert torch.autograd.gradcheck(f, args)


def test_pixel_over_compositing() -> None:
    front, back = torch.full((1, 3, 2, 2), 0.8), torch.full((1, 3, 2, 2), 0.2)
    af, ab = torch.full((1, 1, 2, 2), 0.5), torch.ones(1, 1, 2, 2)
    premult, a = over(front, af, back, ab)
    assert torch.allclose(a, torch.ones_like(a))
    assert torch.allclose(premult, torch.full_like(premult, 0.5 * 0.8 + 0.5 * 0.2))
    bg = torch.zeros(1, 3, 2, 2)
    assert torch.allclose(over_background(premult, a, bg), premult)
    assert torch.allclose(over_background(torch.zeros_like(bg), torch.zeros_like(a), bg + 0.3), bg + 0.3)
