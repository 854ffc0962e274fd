from __future__ import annotations

import math

import pytest
import torch

from erlnet.render.raymarch import (
    OccupancyGrid,
    composite,
    distortion,
    intersect_box,
    pixel_directions,
    rays_in_frame,
    stratified_samples,
    transmittance,
)


def test_pixel_directions_reproject_to_cell_centres() -> None:
    K = torch.tensor([[100.0, 0.0, 31.5], [0.0, 120.0, 30.0], [0.0, 0.0, 1.0]])
    d = pixel_directions(K, h=16, w=16, scale=4)  # 64 x 64 output, 4 x 4 cells
    assert d.shape == (256, 3) and torch.all(d[:, 2] == 1)
    px = (K @ (d * 2.5).t()).t()  # any depth
    px = px[:, :2] / px[:, 2:]
    # Cell (u=3, v=5) covers output pixels x 12..15, y 20..23: centre (13.5, 21.5).
    assert torch.allclose(px[5 * 16 + 3], torch.tensor([13.5, 21.5]), atol=1e-4)
    # Scale 1: exactly the output pixel centres.
    d1 = pixel_directions(K, h=64, w=64, scale=1)
    px1 = (K @ d1.t()).t()[:, :2]
    assert torch.allclose(px1[64 * 7 + 9], torch.tensor([9.0, 7.0]), atol=1e-4)


def test_ray_box_intersection_known_case() -> None:
    o = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.5]])
    d = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    near, far, hit = intersect_box(o, d, torch.tensor([-0.1, -0.1, 0.4]), torch.tensor([0.1, 0.1, 0.7]))
    assert hit.tolist() == [True, False, True]
    assert near[0] == pytest.approx(0.4) and far[0] == pytest.approx(0.7)
    assert near[2] == pytest.approx(1e-3) and far[2] == pytest.approx(0.2)  # camera inside the box
    # An oblique ray entering through a side face.
    n2, f2, h2 = intersect_box(torch.tensor([-1.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 0.5]),
                               torch.tensor([-0.1, -0.1, 0.4]), torch.tensor([0.1, 0.1, 0.7]))
    assert bool(h2) and n2 == pytest.approx(0.9) and f2 == pytest.approx(1.1)


def test_constant_density_slab_gives_analytic_opacity() -> None:
    sigma, L = 7.0, 0.3
    near, far = torch.tensor([0.4, 0.4]), torch.tensor([0.4 + L, 0.4 + L])
    for jitter in (False, True):
        t, delta = stratified_samples(near, far, 13, jitter=jitter)
        assert torch.all((t >= 0.4) & (t <= 0.4 + L)) and torch.all(t[:, 1:] > t[:, :-1])
        feat = torch.ones(2, 13, 2)
        f, a, w = composite(sigma * delta, feat)
        assert torch.allclose(a, torch.full((2,), 1 - math.exp(-sigma * L)), atol=1e-6)
        assert torch.allclose(w.sum(1), a, atol=1e-6) and torch.allclose(f[:, 0], a, atol=1e-6)


def test_eval_samples_are_bin_centres_and_training_samples_jitter() -> None:
    t, _ = stratified_samples(torch.tensor([0.0]), torch.tensor([1.0]), 4, jitter=False)
    assert torch.allclose(t, torch.tensor([[0.125, 0.375, 0.625, 0.875]]))
    t1, _ = stratified_samples(torch.tensor([0.0]), torch.tensor([1.0]), 4, jitter=True)
    assert not torch.allclose(t1, t) and torch.all((t1 >= torch.tensor([0.0, 0.25, 0.5, 0.75])) & (t1 < torch.tensor([0.25, 0.5, 0.75, 1.0])))


def test_rays_in_frame_inverts_the_pose() -> None:
    a = 0.4
    R = torch.tensor([[[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]]])
    t = torch.tensor([[0.02, -0.03, 0.6]])
    X = torch.tensor([0.01, 0.05, -0.02])  # a canonical point
    cam = R[0] @ X + t[0]
    o, d = rays_in_frame((cam / cam[2])[None], R, t)
    assert torch.allclose(o[0] + cam[2] * d[0, 0], X, atol=1e-6)  # ray parameter = camera depth


def test_transmittance_is_exclusive() -> None:
    T = transmittance(torch.tensor([[1.0, 2.0, 3.0]]))
    assert torch.allclose(T, torch.exp(-torch.tensor([[0.0, 1.0, 3.0]])))


def test_distortion_prefers_a_compact_surface() -> None:
    t = torch.linspace(0.05, 0.95, 10)[None]
    delta = torch.full_like(t, 0.1)
    compact = torch.zeros_like(t)
    compact[0, 4] = 0.9
    spread = torch.full_like(t, 0.09)
    assert distortion(compact, t, delta) < 0.2 * distortion(spread, t, delta)
    # Brute-force check of the O(N) formula.
    w = torch.rand(1, 10)
    brute = (w[0, :, None] * w[0, None, :] * (t[0, :, None] - t[0, None, :]).abs()).sum() + (w**2 * delta).sum() / 3
    assert distortion(w, t, delta)[0] == pytest.approx(float(brute), rel=1e-5)


def test_occupancy_grid_keeps_weighted_cells_and_forgets_empty_ones() -> None:
    g = OccupancyGrid(8, decay=0.5, threshold=1e-2, dilation=1)
    x = torch.tensor([[0.1, 0.1, 0.1], [-0.9, -0.9, -0.9]])
    assert g.query(x).all()  # fresh grid: everything may be occupied
    for _ in range(10):
        g.update(x, torch.tensor([0.8, 0.0]))
    q = g.query(torch.tensor([[0.1, 0.1, 0.1], [0.3, 0.1, 0.1], [-0.9, -0.9, -0.9], [0.9, -0.9, 0.9]]))
    assert q.tolist() == [True, True, False, False]  # the neighbour is kept by the 1-cell dilation
    tight = OccupancyGrid(8, decay=0.5, threshold=1e-2)
    tight.update(x, torch.tensor([0.8, 0.0]))
    assert tight.query(torch.tensor([[0.1, 0.1, 0.1], [0.3, 0.1, 0.1]])).tolist() == [True, False]
    tight.carve(torch.ones(8, 8, 8, dtype=torch.bool))  # silhouettes overrule the weights
    assert not tight.query(x).any()
