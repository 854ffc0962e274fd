"""Style encoders: a style clip of any length (>= min_style_frames) -> one style vector.

The expression encoder reads the (normalised) expression sequence, the pose encoder reads how the
head moves (`pose_style_features`: pose relative to the clip's mean pose, and its velocity), so the
style describes manner and amount of motion rather than where the camera was.
"""

from __future__ import annotations

import torch
from torch import nn

from erlnet.motion.config import StyleConfig
from erlnet.motion.vqvae import Transformer, sinusoid
from erlnet.motion.windows import mean_pose, relative_pose

POSE_STYLE_DIM = 12


class AttentionPool(nn.Module):
    """Learned-query attention pooling over time: (B, S, d) + valid (B, S) -> (B, d)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        q = self.query.expand(x.shape[0], -1, -1)
        out, _ = self.attn(q, x, x, key_padding_mask=None if valid is None else ~valid, need_weights=False)
        return out[:, 0]


class StyleEncoder(nn.Module):
    """Sequence (B, S, in_dim) with valid-frame mask (B, S) -> style vector (B, style_dim).

    Frames are grouped `cfg.downsample` at a time into one token (a style is a slow property; this
    divides the cost of the transformer, the largest part of a stage-2 step, by about that factor).
    """

    def __init__(self, in_dim: int, cfg: StyleConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Linear(in_dim * cfg.downsample, cfg.d_model)
        self.body = Transformer(cfg.d_model, cfg.n_layers, cfg.n_heads, 4, cfg.dropout)
        self.pool = AttentionPool(cfg.d_model, cfg.n_heads)
        self.out = nn.Linear(cfg.d_model, cfg.style_dim)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        x, valid = crop_center(x, valid, self.cfg.max_frames)
        x, valid = group_frames(x, valid, self.cfg.downsample)
        h = self.inp(x) + sinusoid(x.shape[1], self.cfg.d_model, x.device)
        return self.out(self.pool(self.body(h, valid=valid), valid))


def group_frames(x: torch.Tensor, valid: torch.Tensor | None, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, S, F) -> (B, ceil(S / n), n F): n consecutive frames per token; a token is valid when one of
    its frames is. Invalid frames (and the padding of the end) repeat the last valid frame before them,
    so a clip gives the same tokens whatever padding follows it in a batch."""
    if n == 1:
        return x, valid
    b, s = x.shape[:2]
    if valid is not None:
        pos = torch.arange(s, device=x.device).expand(b, s)
        last = torch.where(valid, pos, torch.zeros_like(pos)).cummax(1).values
        x = torch.gather(x, 1, last.view(b, s, *([1] * (x.ndim - 2))).expand_as(x))
    pad = -s % n
    if pad:
        x = torch.cat([x, x[:, -1:].expand(b, pad, *x.shape[2:])], dim=1)
        if valid is not None:
            valid = torch.cat([valid, torch.zeros(b, pad, dtype=valid.dtype, device=valid.device)], dim=1)
    x = x.reshape(b, (s + pad) // n, -1)
    return x, None if valid is None else valid.reshape(b, -1, n).any(-1)


def crop_center(x: torch.Tensor, valid: torch.Tensor | None, max_frames: int
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Keep at most `max_frames` frames around the middle of (B, S, ...) (bounds the attention cost)."""
    s = x.shape[1]
    if s <= max_frames:
        return x, valid
    a = (s - max_frames) // 2
    return x[:, a:a + max_frames], None if valid is None else valid[:, a:a + max_frames]


def pose_style_features(rotation: torch.Tensor, translation: torch.Tensor, offset_scale: torch.Tensor,
                        delta_scale: torch.Tensor, valid: torch.Tensor | None = None,
                        fps: float = 25.0) -> torch.Tensor:
    """Head-motion features of a style clip: rotation (B, S, 3, 3), translation (B, S, 3) m ->
    (B, S, 12) = [pose relative to the clip's mean pose / offset_scale, velocity (change per 0.4 s, a
    typical head-motion time scale) / delta_scale]; padded frames (valid False) are zeroed."""
    r_mean, t_mean = mean_pose(rotation, translation, valid)
    offset = relative_pose(rotation, translation, r_mean[:, None], t_mean[:, None]) / offset_scale
    step = relative_pose(rotation[:, 1:], translation[:, 1:], rotation[:, :-1], translation[:, :-1])
    vel = torch.cat([step[:, :1], step], dim=1) * (0.4 * fps) / delta_scale
    if valid is not None:
        # A padded neighbour makes a velocity meaningless: zero it as well.
        ok = valid & torch.cat([valid[:, :1], valid[:, :-1]], dim=1)
        offset = offset * valid[..., None]
        vel = vel * ok[..., None]
    return torch.cat([offset, vel], dim=-1)
