"""Style encoders: variable-length clips with masks, head-motion features, a style that can be told apart."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from erlnet.motion.config import StyleConfig
from erlnet.motion.style import POSE_STYLE_DIM, StyleEncoder, crop_center, group_frames, pose_style_features


def tiny_style(**kw) -> StyleConfig:
    base = dict(d_model=16, n_layers=1, n_heads=2, style_dim=8, dropout=0.0, max_frames=64)
    return StyleConfig(**{**base, **kw})


def test_padding_with_mask_does_not_change_the_style():
    torch.manual_seed(0)
    enc = StyleEncoder(5, tiny_style()).eval()
    a, b = torch.randn(1, 30, 5), torch.randn(1, 45, 5)
    with torch.no_grad():
        sa, sb = enc(a), enc(b)
        padded = torch.cat([a, 1e3 * torch.randn(1, 15, 5)], dim=1)  # garbage after the clip
        valid = torch.stack([torch.arange(45) < 30, torch.ones(45, dtype=torch.bool)])
        both = enc(torch.cat([padded, b]), valid)
    assert sa.shape == (1, 8)
    assert torch.allclose(both[0], sa[0], atol=1e-5) and torch.allclose(both[1], sb[0], atol=1e-5)


def test_long_clips_are_centre_cropped():
    x = torch.arange(100.0).view(1, 100, 1)
    y, v = crop_center(x, torch.ones(1, 100, dtype=torch.bool), 40)
    assert y.shape == (1, 40, 1) and float(y[0, 0, 0]) == 30.0 and v.shape == (1, 40)
    enc = StyleEncoder(1, tiny_style(max_frames=40)).eval()
    with torch.no_grad():
        assert torch.allclose(enc(x), enc(x[:, 30:70]), atol=1e-6)


def _poses(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = np.random.default_rng(seed)
    t = np.arange(n)[:, None] / 25
    rv = 0.1 * np.sin(2 * np.pi * 0.3 * t + g.uniform(0, 6, 3))
    rot = Rotation.from_rotvec(rv).as_matrix()
    trans = 0.01 * np.sin(2 * np.pi * 0.2 * t + g.uniform(0, 6, 3)) + [0.0, 0.0, 0.5]
    return torch.from_numpy(rot)[None], torch.from_numpy(trans)[None]


def test_pose_features_ignore_where_the_camera_was():
    rot, trans = _poses(50, 0)
    scale = torch.ones(6, dtype=torch.float64)
    f = pose_style_features(rot, trans, scale, scale)
    assert f.shape == (1, 50, POSE_STYLE_DIM)
    # Moving the camera: rotate every pose and shift the head. Rotation features are unchanged, and
    # translation features too when the camera only shifts.
    rc = torch.from_numpy(Rotation.from_rotvec([0.3, -0.2, 0.1]).as_matrix())
    moved = pose_style_features(rc @ rot, trans + torch.tensor([0.1, -0.05, 0.3], dtype=torch.float64), scale, scale)
    rot_cols = [0, 1, 2, 6, 7, 8]
    assert torch.allclose(moved[..., rot_cols], f[..., rot_cols], atol=1e-9)
    shifted = pose_style_features(rot, trans + 0.2, scale, scale)
    assert torch.allclose(shifted, f, atol=1e-9)
    # A still head has zero velocity, a moving one does not.
    still = pose_style_features(rot[:, :1].expand(1, 50, 3, 3), trans[:, :1].expand(1, 50, 3), scale, scale)
    assert float(still.abs().max()) < 1e-9 and float(f[..., 6:].abs().max()) > 1e-3


def test_pose_features_zero_padded_frames():
    rot, trans = _poses(40, 1)
    valid = torch.arange(40)[None] < 30
    scale = torch.ones(6, dtype=torch.float64)
    f = pose_style_features(rot, trans, scale, scale, valid)
    ref = pose_style_features(rot[:, :30], trans[:, :30], scale, scale)
    assert float(f[:, 30:].abs().max()) == 0.0
    assert torch.allclose(f[:, :30], ref, atol=1e-9)


def _clip(lively: bool, g: torch.Generator) -> torch.Tensor:
    n = int(torch.randint(25, 60, (1,), generator=g))
    t = torch.arange(n, dtype=torch.float32)[:, None]
    amp = 1.0 if lively else 0.25
    phase = 2 * math.pi * torch.rand(1, 4, generator=g)
    return amp * torch.sin(2 * math.pi * 0.12 * t + phase) + 0.05 * torch.randn(n, 4, generator=g)


def _batch(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    labels = torch.randint(0, 2, (n,), generator=g)
    clips = [_clip(bool(y), g) for y in labels]
    s = max(len(c) for c in clips)
    x = torch.stack([torch.cat([c, torch.zeros(s - len(c), 4)]) for c in clips])
    valid = torch.stack([torch.arange(s) < len(c) for c in clips])
    return x, valid, labels


def test_style_vectors_tell_styles_apart():
    """A lively and a calm speaker (clips of different lengths) map to separable style vectors."""
    torch.manual_seed(0)
    enc = StyleEncoder(4, tiny_style())
    head = torch.nn.Linear(8, 2)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], 3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        x, valid, y = _batch(16, g)
        loss = torch.nn.functional.cross_entropy(head(enc(x, valid)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, valid, y = _batch(64, torch.Generator().manual_seed(5))
    with torch.no_grad():
        acc = float((head(enc.eval()(x, valid)).argmax(-1) == y).float().mean())
    assert acc > 0.9


def test_frames_are_grouped_into_tokens_with_the_padding_masked():
    x = torch.arange(10.0).view(1, 10, 1).repeat(2, 1, 1)
    valid = torch.stack([torch.ones(10, dtype=torch.bool), torch.arange(10) < 5])
    g, v = group_frames(x, valid, 4)
    assert g.shape == (2, 3, 4) and v.tolist() == [[True, True, True], [True, True, False]]
    assert g[0, 2].tolist() == [8.0, 9.0, 9.0, 9.0]  # the end repeats the last frame
    assert g[1, 1].tolist() == [4.0, 4.0, 4.0, 4.0]  # frames after the valid ones repeat the last valid one
    same, none = group_frames(x, None, 1)
    assert same is x and none is None
