"""Losses of the motion model: masked reconstruction, code cross-entropy, and the contrastive speech loss.

`SpeechContrast` embeds short audio windows and the matching mouth-motion windows (the mouth columns
of the expression) into one space; InfoNCE pulls each audio window towards its own mouth window and
away from the others in the batch (other clips and other moments of the same clip).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from erlnet.motion.config import ContrastConfig


def masked_mse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over (B, W, ...) frames whose valid (B, W) is True (all when None)."""
    err = (pred - target) ** 2
    err = err.reshape(*err.shape[:2], -1).mean(-1)
    if valid is None:
        return err.mean()
    w = valid.to(err.dtype)
    return (err * w).sum() / w.sum().clamp_min(1.0)


def velocity_mse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """`masked_mse` of frame-to-frame differences (B, W, ...) (a pair counts when both frames are valid)."""
    pair = None if valid is None else valid[:, 1:] & valid[:, :-1]
    return masked_mse(pred[:, 1:] - pred[:, :-1], target[:, 1:] - target[:, :-1], pair)


def code_cross_entropy(logits: torch.Tensor, codes: torch.Tensor,
                       valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, N, G, K), codes (B, N, G), valid (B, N) tokens -> (mean cross-entropy, accuracy)."""
    ce = F.cross_entropy(logits.flatten(0, -2), codes.flatten(), reduction="none").view(codes.shape)
    hit = (logits.argmax(-1) == codes).to(ce.dtype)
    if valid is None:
        return ce.mean(), hit.mean()
    w = valid.to(ce.dtype)[..., None].expand_as(ce)
    n = w.sum().clamp_min(1.0)
    return (ce * w).sum() / n, (hit * w).sum() / n


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE of paired embeddings a, b (M, E): row i of a matches row i of b.

    Returns (loss, retrieval accuracy a -> b). Embeddings are L2-normalised here.
    """
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    return loss, (logits.argmax(-1) == target).float().mean()


class WindowEncoder(nn.Module):
    """A short window (B, w, in_dim) -> embedding (B, E): two temporal convs and mean + max pooling."""

    def __init__(self, in_dim: int, hidden: int, embed_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_dim, hidden, 3, padding=1)
        self.conv2 = nn.Conv1d(hidden, hidden, 3, padding=1)
        self.out = nn.Linear(2 * hidden, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.conv1(x.transpose(1, 2)))
        h = F.gelu(self.conv2(h)) + h
        return self.out(torch.cat([h.mean(-1), h.amax(-1)], dim=-1))


class SpeechContrast(nn.Module):
    """Audio windows <-> mouth-motion windows (InfoNCE). Audio: (B, W, audio_dim) features of the model's
    audio projection; mouth: (B, W, mouth_dim) normalised mouth displacements. W is cut into
    consecutive sub-windows of `cfg.sub_window` frames, each a pair."""

    def __init__(self, audio_dim: int, mouth_dim: int, cfg: ContrastConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.audio = WindowEncoder(audio_dim, cfg.hidden, cfg.embed_dim)
        # The mouth branch sees displacement and velocity: speech shows in how the lips move.
        self.mouth = WindowEncoder(2 * mouth_dim, cfg.hidden, cfg.embed_dim)

    def _cut(self, x: torch.Tensor, valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, w = x.shape[:2]
        n = w // self.cfg.sub_window
        x = x[:, : n * self.cfg.sub_window].reshape(b * n, self.cfg.sub_window, *x.shape[2:])
        keep = None
        if valid is not None:
            keep = valid[:, : n * self.cfg.sub_window].reshape(b * n, self.cfg.sub_window).all(-1)
        return x, keep

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """(M, w, audio_dim) -> (M, E)."""
        return self.audio(audio)

    def embed_mouth(self, mouth: torch.Tensor) -> torch.Tensor:
        """(M, w, mouth_dim) -> (M, E)."""
        vel = torch.cat([mouth[:, 1:2] - mouth[:, :1], mouth[:, 1:] - mouth[:, :-1]], dim=1)
        return self.mouth(torch.cat([mouth, 4.0 * vel], dim=-1))

    def forward(self, audio: torch.Tensor, mouth: torch.Tensor, valid: torch.Tensor | None = None,
                detach_audio: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (B, W, audio_dim), mouth (B, W, mouth_dim), valid (B, W) -> (InfoNCE loss, accuracy).

        Sub-windows with an invalid frame are left out; fewer than two pairs give a zero loss.
        """
        a, keep = self._cut(audio, valid)
        m, _ = self._cut(mouth, None)
        if keep is not None:
            a, m = a[keep], m[keep]
        if len(a) < 2:
            zero = audio.sum() * 0.0
            return zero, zero.detach()
        ea = self.embed_audio(a)
        if detach_audio:
            ea = ea.detach()
        return info_nce(ea, self.embed_mouth(m), self.cfg.temperature)
