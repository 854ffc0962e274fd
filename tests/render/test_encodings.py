from __future__ import annotations

import math

import torch

from erlnet.render.encodings import (
    ExpressionEncoder,
    TriPlanes,
    frequency_encoding,
    relative_pose_code,
    rotation_6d,
)


def _rot_z(a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_triplanes_sample_each_plane_bilinearly() -> None:
    tp = TriPlanes(resolution=5, levels=1, channels=1)
    lin = torch.linspace(-1, 1, 5)
    with torch.no_grad():
        tp.planes[0][0, 0] = 2.0 + lin[None, :]  # xy plane: columns follow x
        tp.planes[0][1, 0] = 3.0 * lin[:, None].expand(5, 5)  # xz plane: rows follow z
        tp.planes[0][2, 0] = lin[None, :] - lin[:, None]  # yz plane: y - z
    x = torch.tensor([[0.5, -0.3, 0.25], [-1.0, 1.0, -1.0], [0.1, 0.2, 0.3]])
    f = tp(x)
    assert f.shape == (3, 3)
    expect = torch.stack([2.0 + x[:, 0], 3.0 * x[:, 2], x[:, 1] - x[:, 2]], 1)  # bilinear is exact on linear functions
    assert torch.allclose(f, expect, atol=1e-5)


def test_triplanes_levels_concatenate_and_get_gradients() -> None:
    tp = TriPlanes(resolution=64, levels=2, channels=4)
    assert tp.resolutions == [16, 64] and tp.out_dim == 24
    x = torch.rand(10, 3) * 2 - 1
    f = tp(x)
    assert f.shape == (10, 24)
    # Layout (plane, level, channel): plane xz, level 0 (coarse), channel 2 is feature 1 * 8 + 0 * 4 + 2.
    with torch.no_grad():
        tp.planes[0][1].fill_(0.0)
        tp.planes[0][1, 2].fill_(7.0)
    assert torch.allclose(tp(x)[:, 10], torch.full((10,), 7.0))
    tp(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tp.planes)


def test_frequency_encoding_shape_and_values() -> None:
    x = torch.tensor([[0.25, -0.5, 0.0]])
    e = frequency_encoding(x, 2)
    assert e.shape == (1, 3 + 12)
    assert torch.allclose(e[0, 3], torch.sin(torch.tensor(math.pi * 0.25)))  # sin(pi x0)
    assert torch.allclose(frequency_encoding(x, 0), x)


def test_relative_pose_code_is_zero_at_the_reference_and_sees_rotation_and_translation() -> None:
    R0, t0 = _rot_z(0.1), torch.tensor([0.01, -0.02, 0.6])
    code = relative_pose_code(R0[None], t0[None], R0, t0)
    assert code.shape == (1, 9) and torch.allclose(code, torch.zeros(1, 9), atol=1e-6)
    moved = relative_pose_code((R0 @ _rot_z(0.2))[None], (t0 + torch.tensor([0.0, 0.0, 0.01]))[None], R0, t0)
    assert torch.allclose(moved[0, :6], rotation_6d(_rot_z(0.2)) - rotation_6d(torch.eye(3)), atol=1e-6)
    assert torch.allclose(moved[0, 6:], torch.tensor([0.0, 0.0, 0.1]), atol=1e-6)


def test_expression_encoder_standardises_with_training_stats() -> None:
    enc = ExpressionEncoder(expression_dim=6, code_dim=4)
    g = torch.Generator().manual_seed(0)
    train = 0.01 * torch.randn(50, 6, generator=g) + 0.3
    enc.set_stats(train)
    assert torch.allclose(enc.mean, train.mean(0))
    assert torch.allclose(enc.std, train.std(0).clamp_min(0.25 * train.std(0).median()))
    code = enc(train[:3], torch.tensor([0.0, 0.5, 1.0]))
    assert code.shape == (3, 4) and torch.all(code.abs() < 1)
    # Blink alone changes the code.
    assert not torch.allclose(enc(train[:1], torch.zeros(1)), enc(train[:1], torch.ones(1)))
