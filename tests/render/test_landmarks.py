"""The head field's landmark conditioning: expression layouts, the warp, the Gaussian code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from erlnet.face import topology
from erlnet.render.dbf import DBFConfig
from erlnet.render.landmarks import LandmarkCoding, _quadratic_weights, driving_columns, expression_points

BOX_MIN, BOX_MAX = (-0.18, -0.22, -0.12), (0.18, 0.26, 0.20)
L = len(topology.DRIVING)


def _face(seed: int = 0) -> torch.Tensor:
    """A 478-point neutral 'face': eye corners 9.5 cm apart, the lips as two rows of points 5 mm
    apart (upper at y = 6 cm, lower at 6.5 cm, y down), every other point scattered above them."""
    g = torch.Generator().manual_seed(seed)
    pts = (torch.rand(topology.N_LANDMARKS, 3, generator=g) - 0.5) * torch.tensor([0.14, 0.06, 0.06])
    pts[:, 1] -= 0.01  # y in [-0.04, 0.02]: above the mouth
    pts[33], pts[263] = torch.tensor([-0.0475, 0.0, 0.0]), torch.tensor([0.0475, 0.0, 0.0])
    for contour in (topology.LIPS_OUTER, topology.LIPS_INNER):
        for i, p in enumerate(contour):  # 0..9 lower lip (corner first), 10..19 upper lip
            x = -0.025 + 0.05 * (i % 10) / 9
            pts[int(p)] = torch.tensor([x, 0.065 if i < 10 else 0.06, 0.0])
    return pts


def _coding(warp_sigma: float = 0.012) -> LandmarkCoding:
    lm = LandmarkCoding(driving_columns(3 * topology.N_LANDMARKS), BOX_MIN, BOX_MAX, 8, 0.01, warp_sigma)
    lm.set_face(_face())
    return lm


def _expression(disp: dict[int, tuple[float, float, float]], unit: float = 0.095) -> torch.Tensor:
    """(1, 1434) expression with the given landmarks displaced (metres; expression = metres / unit)."""
    e = torch.zeros(1, 3 * topology.N_LANDMARKS)
    for p, d in disp.items():
        e[0, 3 * p : 3 * p + 3] = torch.tensor(d) / unit
    return e


def test_layouts() -> None:
    cols = driving_columns(3 * topology.N_LANDMARKS)
    assert cols.shape == (L, 3)
    assert torch.equal(cols[:, 0] // 3, torch.from_numpy(topology.DRIVING))
    expressive = driving_columns(3 * len(topology.EXPRESSIVE))
    assert expressive is not None
    np.testing.assert_array_equal(topology.EXPRESSIVE[expressive[:, 0].numpy() // 3], topology.DRIVING)
    assert expression_points(12) is None and driving_columns(12) is None
    # a renderer on an unknown layout has no landmark path; on a landmark layout it has one
    assert DBFConfig().setup(12, 64).landmarks is None
    assert DBFConfig().setup(3 * topology.N_LANDMARKS, 64).landmarks is not None
    assert DBFConfig(landmark_code=False).setup(3 * topology.N_LANDMARKS, 64).landmarks is None


def test_quadratic_weights_match_direct_formula() -> None:
    g = torch.Generator().manual_seed(1)
    x, q = torch.rand(50, 3, generator=g) * 2 - 1, torch.rand(7, 3, generator=g) * 2 - 1
    inv_var = torch.rand(7, 3, generator=g) * 20 + 1
    ref = torch.exp(-0.5 * ((x[:, None] - q[None]) ** 2 * inv_var[None]).sum(-1))
    torch.testing.assert_close(_quadratic_weights(x, q, inv_var), ref, atol=1e-5, rtol=1e-4)


def test_set_face_and_stats() -> None:
    lm = _coding()
    face = _face()
    torch.testing.assert_close(lm.neutral, face[torch.from_numpy(topology.DRIVING)])
    assert float(lm.unit) == pytest.approx(0.095)
    # a landmark that moves twice as much in training gets twice the std
    lip, brow = int(topology.LOWER_INNER_LIP[1]), int(topology.LEFT_BROW[0])
    g = torch.Generator().manual_seed(0)
    e = torch.zeros(200, 3 * topology.N_LANDMARKS)
    e[:, 3 * lip + 1] = 0.2 * torch.randn(200, generator=g)
    e[:, 3 * brow + 1] = 0.1 * torch.randn(200, generator=g)
    lm.set_stats(e)
    k_lip, k_brow = int(np.flatnonzero(topology.DRIVING == lip)[0]), int(np.flatnonzero(topology.DRIVING == brow)[0])
    assert float(lm.d_std[k_lip, 1] / lm.d_std[k_brow, 1]) == pytest.approx(2.0, rel=0.2)


def test_warp_carries_a_moved_lip_back_and_leaves_far_points() -> None:
    lm = _coding()
    lip = int(topology.LOWER_INNER_LIP[1])
    k = int(np.flatnonzero(topology.DRIVING == lip)[0])
    d = (0.0, 0.015, 0.0)  # the jaw opens: the whole lower lip 1.5 cm down (the rest stays)
    lower = [*topology.LIPS_OUTER[1:10], *topology.LIPS_INNER[1:10]]
    state = lm.frame_state(_expression({int(p): d for p in lower}))
    neutral_n = (lm.neutral[k] - lm.box_min) * lm.scale - 1.0
    moved_n = state.q[0, k]
    far = torch.tensor([[0.9, -0.9, 0.9]])  # a corner of the box, far from every landmark
    x = torch.stack([moved_n, far[0]])
    w = lm.warp(x, [2], state)
    before = float((moved_n - neutral_n).norm())
    after = float((w[0] - neutral_n).norm())
    assert before > 0.05 and after < 0.4 * before  # most of the way back to the neutral lip
    torch.testing.assert_close(w[1], far[0])
    # no motion: no warp
    still = lm.frame_state(torch.zeros(1, 3 * topology.N_LANDMARKS))
    torch.testing.assert_close(lm.warp(x, [2], still), x)
    # the warp can be switched off
    assert torch.equal(_coding(warp_sigma=0.0).warp(x, [2], state), x)


def test_code_is_local_and_differentiable() -> None:
    lm = _coding()
    lip = int(topology.LOWER_INNER_LIP[1])
    k = int(np.flatnonzero(topology.DRIVING == lip)[0])
    rest = lm.frame_state(torch.zeros(1, 3 * topology.N_LANDMARKS))
    moved = lm.frame_state(_expression({lip: (0.0, 0.004, 0.0)}))
    near = rest.q[0, k][None]
    far = torch.tensor([[0.9, -0.9, 0.9]])
    x = torch.cat([near, far])
    c0, c1 = lm.code(x, [2], rest), lm.code(x, [2], moved)
    diff = (c1 - c0).detach().abs()
    assert float(diff[0].max()) > 0.05  # next to the moved lip the code changes
    assert float(diff[1].max()) < 1e-6  # far from it, not at all
    c1.sum().backward()
    assert lm.log_sigma.grad is not None and float(lm.log_sigma.grad.abs().sum()) > 0
    assert float(lm.weight.grad.abs().sum()) > 0


def test_old_avatar_configs_load_without_landmarks() -> None:
    old = {k: v for k, v in DBFConfig().to_dict().items() if not k.startswith(("landmark", "mouth_margin"))}
    assert DBFConfig.from_dict(old).landmark_code is False
    assert DBFConfig.from_dict(DBFConfig().to_dict()).landmark_code is True


def test_the_mouth_cells_are_never_skipped() -> None:
    r = DBFConfig(occupancy_resolution=16).setup(3 * topology.N_LANDMARKS, 64)
    r.set_face(_face())
    lm = r.landmarks
    lip = (lm.neutral[int(np.flatnonzero(topology.DRIVING == int(topology.LOWER_INNER_LIP[1]))[0])]
           - lm.box_min) * lm.scale - 1.0
    far = torch.tensor([0.9, -0.9, 0.9])
    keep = r._mouth_cells(torch.stack([lip, far]))
    assert keep.tolist() == [True, False]
    r.head_grid.carve(torch.ones(16, 16, 16, dtype=torch.bool))  # the silhouettes still win
    assert not r._mouth_cells(torch.stack([lip, far])).any()
