"""Windows, cross-faded joins and head-pose delta maths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from erlnet.errors import InputError
from erlnet.motion.windows import (
    apply_deltas,
    blend,
    blend_rotations,
    cut_windows,
    matrix_to_rotvec,
    mean_pose,
    pose_deltas,
    project_rotation,
    rotvec_to_matrix,
    window_starts,
)


@pytest.mark.parametrize("n", [1, 5, 64, 65, 100, 111, 112, 113, 1500])
def test_window_starts_cover_everything_with_overlap(n):
    window, overlap = 64, 16
    starts = window_starts(n, window, overlap)
    assert starts[0] == 0
    if n <= window:
        assert starts == [0]
        return
    assert starts[-1] + window == n  # ends exactly at the end
    gaps = np.diff(starts)
    assert (gaps > 0).all() and (gaps <= window - overlap).all()  # at least `overlap` shared frames


@pytest.mark.parametrize("n", [65, 70, 111, 113, 1500, 1501])
def test_window_starts_aligned_to_tokens(n):
    window, overlap, align = 64, 16, 4
    starts = window_starts(n, window, overlap, align)
    assert all(s % align == 0 for s in starts)
    assert n <= starts[-1] + window < n + align
    gaps = np.diff(starts)
    assert (gaps > 0).all() and (gaps <= window - overlap).all()


def test_window_starts_rejects_bad_arguments():
    with pytest.raises(InputError, match="at least one frame"):
        window_starts(0, 64, 16)
    with pytest.raises(InputError, match="overlap"):
        window_starts(100, 64, 64)


def test_cut_windows_pads_by_repeating_the_last_frame():
    x = torch.arange(10.0)[:, None]
    w = cut_windows(x, [0], 16)
    assert w.shape == (1, 16, 1)
    assert torch.equal(w[0, :10, 0], torch.arange(10.0)) and bool((w[0, 10:, 0] == 9).all())


def test_blend_of_consistent_windows_is_exact():
    n, window = 150, 32
    x = torch.sin(torch.arange(n, dtype=torch.float64) / 5)[:, None].repeat(1, 3)
    starts = window_starts(n, window, 8)
    out = blend(cut_windows(x, starts, window), starts, n)
    assert torch.allclose(out, x, atol=1e-12)


def _steps(x: torch.Tensor) -> torch.Tensor:
    return (x[1:] - x[:-1]).abs()


def test_join_has_no_jump():
    """Windows that disagree a little (as separately generated windows do: each has its own small smooth
    error) join without a jump: a join adds at most pi/2 * disagreement / overlap to the largest
    frame-to-frame change inside the windows (here under 3%)."""
    n, window, overlap = 200, 48, 12
    t = torch.arange(n, dtype=torch.float64)
    truth = torch.sin(2 * math.pi * t / 40)  # max step ~0.157 per frame
    starts = window_starts(n, window, overlap)
    g = torch.Generator().manual_seed(0)
    phase = 2 * math.pi * torch.rand(len(starts), 1, generator=g, dtype=torch.float64)
    err = 0.05 * torch.sin(2 * math.pi * torch.arange(window, dtype=torch.float64) / 30 + phase)
    chunks = cut_windows(truth, starts, window) + err
    out = blend(chunks, starts, n)
    inner = max(float(_steps(c).max()) for c in chunks)
    disagreement = max(float((chunks[k, starts[k + 1] - starts[k]:] - chunks[k + 1, :window - starts[k + 1]
                                                                               + starts[k]]).abs().max())
                       for k in range(len(starts) - 1))
    assert float(_steps(out).max()) <= inner + math.pi / 2 * disagreement / overlap
    assert float(_steps(out).max()) <= 1.03 * inner


def test_join_step_is_bounded_by_the_disagreement_over_the_overlap():
    n, window = 100, 40
    starts = window_starts(n, window, 10)
    chunks = torch.stack([torch.full((window,), float(k % 2), dtype=torch.float64) for k in range(len(starts))])
    out = blend(chunks, starts, n)
    overlaps = [starts[k] + window - starts[k + 1] for k in range(len(starts) - 1)]
    # Disagreement 1 (a hard cut would jump by 1) is spread over the shared frames by a raised cosine:
    # peak step <= pi / 2 / overlap.
    assert float(_steps(out).max()) <= math.pi / 2 / min(overlaps) + 1e-9
    assert float(out.min()) >= 0 and float(out.max()) <= 1  # a convex combination


def test_blend_rotations_stay_rotations():
    r = torch.from_numpy(Rotation.from_rotvec(np.linspace([0, 0, 0], [0, 0.5, 0.2], 52)).as_matrix())
    starts = [0, 20]
    tweak = rotvec_to_matrix(torch.tensor([0.0, 0.02, 0.0], dtype=torch.float64))
    chunks = torch.stack([r[:32], tweak @ r[20:52]])
    out = blend_rotations(chunks, starts, 52)
    assert out.shape == (52, 3, 3)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(out @ out.transpose(-1, -2), eye.expand(52, 3, 3), atol=1e-9)
    assert torch.allclose(torch.det(out), torch.ones(52, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(out[:20], r[:20]) and torch.allclose(out[32:], chunks[1, 12:])
    mid = matrix_to_rotvec(r[26].T @ out[26])  # halfway through the hand-over: about half the tweak
    assert 0.005 < float(mid.norm()) < 0.015


def test_rotvec_round_trip_and_scipy_agreement():
    g = np.random.default_rng(0)
    rv = g.normal(size=(50, 3)) * 0.8
    rv[0] = 0.0
    rv[1] = [1e-7, 0, 0]
    m = rotvec_to_matrix(torch.from_numpy(rv))
    assert np.allclose(m.numpy(), Rotation.from_rotvec(rv).as_matrix(), atol=1e-10)
    assert np.allclose(matrix_to_rotvec(m).numpy(), rv, atol=1e-9)


def test_pose_deltas_round_trip_and_start_at_zero():
    g = np.random.default_rng(1)
    rot = torch.from_numpy(Rotation.from_rotvec(g.normal(size=(2 * 16, 3)) * 0.2).as_matrix()).view(2, 16, 3, 3)
    trans = torch.from_numpy(g.normal(size=(2, 16, 3)) * 0.01)
    d = pose_deltas(rot, trans)
    assert d.shape == (2, 16, 6) and torch.allclose(d[:, 0], torch.zeros(2, 6, dtype=d.dtype), atol=1e-12)
    r2, t2 = apply_deltas(d, rot[:, 0], trans[:, 0])
    assert torch.allclose(r2, rot, atol=1e-10) and torch.allclose(t2, trans, atol=1e-12)


def test_mean_pose_ignores_masked_frames_and_projects():
    r = torch.from_numpy(Rotation.from_rotvec([[0, 0.1, 0], [0, -0.1, 0], [1.5, 0, 0]]).as_matrix())[None]
    t = torch.tensor([[[0.0, 0, 0.5], [0.0, 0, 0.7], [9.0, 9, 9]]], dtype=torch.float64)
    rm, tm = mean_pose(r, t, torch.tensor([[True, True, False]]))
    assert torch.allclose(rm[0], torch.eye(3, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(tm[0], torch.tensor([0.0, 0, 0.6], dtype=torch.float64))
    noisy = torch.eye(3, dtype=torch.float64) + 0.01 * torch.randn(3, 3, dtype=torch.float64)
    p = project_rotation(noisy)
    assert torch.allclose(p @ p.T, torch.eye(3, dtype=torch.float64), atol=1e-10)
