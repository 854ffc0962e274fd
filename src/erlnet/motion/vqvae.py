"""Transformer VQ-VAE over motion windows, with EMA codebooks and dead-code restart.

A window (B, W, F) is projected per frame, grouped into tokens of `downsample` frames, encoded by a
transformer, and quantised by `n_groups` EMA codebooks (a token = one code per group). The decoder
mirrors this and is conditioned on the emotion and the window's first pose, so codes can describe the
motion itself. Also home of the small transformer `Block` shared by the motion modules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from erlnet.motion.config import VQConfig

# ----------------------------------------------------------------------------- building blocks


def sinusoid(length: int, dim: int, device: torch.device | None = None, offset: int = 0) -> torch.Tensor:
    """Fixed sinusoidal position encoding (length, dim) for positions offset .. offset + length - 1."""
    pos = torch.arange(offset, offset + length, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


class Block(nn.Module):
    """Pre-norm transformer block (self-attention + MLP) with optional causal mask and key-value cache."""

    def __init__(self, d: int, heads: int, ff_mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, ff_mult * d), nn.GELU(), nn.Linear(ff_mult * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, causal: bool = False, valid: torch.Tensor | None = None,
                cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """x (B, L, d) -> (B, L, d). valid (B, L) bool marks real (not padded) keys.

        With `cache` (a dict kept by the caller across steps) x holds only the new positions and
        attends to every earlier one: incremental causal decoding.
        """
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        mask = None if valid is None else valid[:, None, None, :]
        is_causal = causal and n > 1
        if is_causal and cache is not None and k.shape[2] != n:
            raise ValueError("a cached causal step must add one position at a time")
        # No dropout on the attention weights: on a CPU it costs more than the rest of the block (a random
        # mask per head and key pair) and forces the slow attention kernel; the residual dropout remains.
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        x = x + self.drop(self.proj(o.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.mlp(self.norm2(x)))


class Transformer(nn.Module):
    """A stack of `Block`s with a final LayerNorm."""

    def __init__(self, d: int, layers: int, heads: int, ff_mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(d, heads, ff_mult, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, causal: bool = False, valid: torch.Tensor | None = None,
                caches: list[dict[str, torch.Tensor]] | None = None) -> torch.Tensor:
        for i, blk in enumerate(self.blocks):
            x = blk(x, causal=causal, valid=valid, cache=None if caches is None else caches[i])
        return self.norm(x)


class ConvRefine(nn.Module):
    """Residual temporal convolution over frames (B, W, d): smooths token-rate structure at frame rate."""

    def __init__(self, d: int, kernel: int = 5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.conv = nn.Conv1d(d, d, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.gelu(self.conv(self.norm(x).transpose(1, 2))).transpose(1, 2)


class Conditioning(nn.Module):
    """Emotion index (B,) + first-pose features (B, 6) -> (B, d), added to every token."""

    def __init__(self, n_emotions: int, emotion_dim: int, pose_dim: int, d: int) -> None:
        super().__init__()
        self.emotion = nn.Embedding(n_emotions, emotion_dim)
        self.proj = nn.Linear(emotion_dim + pose_dim, d)

    def forward(self, emotion: torch.Tensor, pose0: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat([self.emotion(emotion), pose0], dim=-1))


# ----------------------------------------------------------------------------- quantiser


@dataclass
class Quantized:
    """Output of `EMAQuantizer`: z_q (B, N, G * C) with straight-through gradients, indices (B, N, L * G),
    commitment loss (scalar) and the perplexity of the codes used in this batch (mean over groups)."""

    z_q: torch.Tensor
    indices: torch.Tensor
    commitment: torch.Tensor
    perplexity: torch.Tensor


class EMAQuantizer(nn.Module):
    """`levels` x `n_groups` codebooks of `n_codes` x `code_dim`, updated by exponential moving averages.

    Product quantisation: a latent (G * C) is cut into G groups, each quantised by its own codebook.
    Residual quantisation: level l quantises what levels < l left over, and a token's code vector is
    the sum over levels. Codebooks are stored level-major as (L * G, K, C) and a token's indices as
    (L * G,) "slots", so one level (L = 1) is plain product quantisation.

    A code is restarted at a random encoder output of the current batch when its EMA usage falls below
    `dead_fraction` of the mean or when no input chose it for `dead_steps` training batches (the EMA
    alone takes hundreds of steps to notice the codes that the first moves of the encoder strand).
    """

    def __init__(self, n_codes: int, code_dim: int, n_groups: int = 1, decay: float = 0.99,
                 dead_fraction: float = 0.03, eps: float = 1e-5, levels: int = 1, dead_steps: int = 0) -> None:
        super().__init__()
        self.n_codes, self.code_dim, self.n_groups, self.levels = n_codes, code_dim, n_groups, levels
        self.decay, self.dead_fraction, self.dead_steps, self.eps = decay, dead_fraction, dead_steps, eps
        slots = levels * n_groups
        self.register_buffer("codebook", torch.randn(slots, n_codes, code_dim) * 0.1)
        self.register_buffer("ema_count", torch.ones(slots, n_codes))
        self.register_buffer("ema_sum", self.codebook.clone())
        self.register_buffer("idle", torch.zeros(slots, n_codes))  # training batches since a code was last chosen
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))  # codes restarted so far

    @property
    def slots(self) -> int:
        """Code indices per token: levels * n_groups."""
        return self.levels * self.n_groups

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # Weights saved before `idle` existed: start every code as just used.
        state_dict.setdefault(prefix + "idle", torch.zeros_like(self.idle))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def distances(self, z: torch.Tensor, level: int = 0) -> torch.Tensor:
        """z (M, G, C) -> squared distances (M, G, K) to every code of its group at `level`."""
        cb = self.codebook[level * self.n_groups:(level + 1) * self.n_groups]
        return (z * z).sum(-1, keepdim=True) - 2 * torch.einsum("mgc,gkc->mgk", z, cb) + (cb * cb).sum(-1)[None]

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (..., G * C) -> code indices (..., L * G), level by level on the residual (no update)."""
        flat = z.reshape(-1, self.n_groups, self.code_dim)
        idx = []
        for lvl in range(self.levels):
            i = self.distances(flat, lvl).argmin(-1)
            idx.append(i)
            flat = flat - self._codes(i, lvl)
        return torch.cat(idx, dim=-1).view(*z.shape[:-1], self.slots)

    def _codes(self, idx: torch.Tensor, level: int) -> torch.Tensor:
        """Indices (..., G) of one level -> codes (..., G, C)."""
        g = torch.arange(self.n_groups, device=idx.device) + level * self.n_groups
        return self.codebook[g, idx]

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (..., L * G) -> code vectors (..., G * C), summed over levels."""
        g = torch.arange(self.slots, device=indices.device)
        codes = self.codebook[g, indices]  # (..., L * G, C)
        return codes.unflatten(-2, (self.levels, self.n_groups)).sum(-3).flatten(-2)

    def soft_lookup(self, probs: torch.Tensor) -> torch.Tensor:
        """Expected code vector under code probabilities (..., L * G, K) -> (..., G * C) (differentiable)."""
        codes = torch.einsum("...sk,skc->...sc", probs, self.codebook)
        return codes.unflatten(-2, (self.levels, self.n_groups)).sum(-3).flatten(-2)

    def forward(self, z: torch.Tensor) -> Quantized:
        """z (B, N, G * C) -> `Quantized`. In training mode the codebooks are updated from z."""
        b, n, _ = z.shape
        residual = z.detach().reshape(b * n, self.n_groups, self.code_dim)
        idx = []
        for lvl in range(self.levels):
            if self.training and not bool(self.initialized):
                self._init_from(residual, lvl)
            i = self.distances(residual, lvl).argmin(-1)  # (M, G)
            if self.training:
                self._ema_update(residual, i, lvl)
            idx.append(i)
            residual = residual - self._codes(i, lvl)
        if self.training:
            self.initialized.fill_(True)
        indices = torch.cat(idx, dim=-1)
        z_q = self.lookup(indices).view(b, n, -1)
        commitment = F.mse_loss(z, z_q.detach())
        z_st = z + (z_q - z).detach()
        return Quantized(z_st, indices.view(b, n, self.slots), commitment, self._perplexity(indices))

    def _perplexity(self, idx: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(idx, self.n_codes).float().mean(0)  # (S, K)
        return torch.exp(-(onehot * torch.log(onehot + 1e-10)).sum(-1)).mean()

    def _slots(self, level: int) -> slice:
        return slice(level * self.n_groups, (level + 1) * self.n_groups)

    @torch.no_grad()
    def _init_from(self, flat: torch.Tensor, level: int) -> None:
        """Start a level's codebooks at random inputs (plus a little noise when there are too few)."""
        m = flat.shape[0]
        pick = torch.randint(0, m, (self.n_groups, self.n_codes), device=flat.device)
        codes = flat[pick, torch.arange(self.n_groups, device=flat.device)[:, None]]
        codes = codes + 0.01 * codes.std().clamp_min(1e-6) * torch.randn_like(codes)
        s = self._slots(level)
        self.codebook[s] = codes
        self.ema_sum[s] = codes
        self.ema_count[s] = 1.0
        self.idle[s] = 0.0

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, idx: torch.Tensor, level: int) -> None:
        s = self._slots(level)
        onehot = F.one_hot(idx, self.n_codes).to(flat.dtype)  # (M, G, K)
        counts = onehot.sum(0)
        sums = torch.einsum("mgk,mgc->gkc", onehot, flat)
        self.ema_count[s] = self.decay * self.ema_count[s] + (1 - self.decay) * counts
        self.ema_sum[s] = self.decay * self.ema_sum[s] + (1 - self.decay) * sums
        self.idle[s] = torch.where(counts > 0, torch.zeros_like(counts), self.idle[s] + 1)
        count = self.ema_count[s]
        total = count.sum(-1, keepdim=True)
        smoothed = (count + self.eps) / (total + self.n_codes * self.eps) * total  # Laplace
        self.codebook[s] = self.ema_sum[s] / smoothed[..., None]
        self._restart_dead(flat, level)

    @torch.no_grad()
    def _restart_dead(self, flat: torch.Tensor, level: int) -> None:
        s = self._slots(level)
        count = self.ema_count[s]
        mean = count.mean(-1, keepdim=True)
        dead = count < self.dead_fraction * mean  # (G, K)
        if self.dead_steps > 0:
            dead |= self.idle[s] >= self.dead_steps
        if not dead.any():
            return
        for g in range(self.n_groups):
            where = dead[g].nonzero().squeeze(-1)
            if not len(where):
                continue
            pick = torch.randint(0, flat.shape[0], (len(where),), device=flat.device)
            new = flat[pick, g]
            new = new + 0.01 * new.std().clamp_min(1e-6) * torch.randn_like(new)
            k = level * self.n_groups + g
            self.codebook[k, where] = new
            # A restarted code counts as averagely used, so it has time to attract data before it is judged.
            self.ema_count[k, where] = mean[g]
            self.ema_sum[k, where] = new * mean[g]
            self.idle[k, where] = 0.0
        self.restarts += int(dead.sum())

    def usage(self) -> torch.Tensor:
        """(L * G, K) share of recent assignments per code (EMA)."""
        return self.ema_count / self.ema_count.sum(-1, keepdim=True)

    def perplexity(self) -> float:
        """exp(entropy) of the EMA code usage, averaged over codebooks: the number of codes effectively in use."""
        p = self.usage()
        return float(torch.exp(-(p * torch.log(p + 1e-10)).sum(-1)).mean())


# ----------------------------------------------------------------------------- VQ-VAE


@dataclass
class VQOutput:
    """recon (B, W, F) in the input's units; the rest as in `Quantized`."""

    recon: torch.Tensor
    indices: torch.Tensor
    commitment: torch.Tensor
    perplexity: torch.Tensor


class SequenceVQVAE(nn.Module):
    """Transformer VQ-VAE: windows (B, W, in_dim) <-> tokens (B, W / downsample, levels * n_groups) of code indices.

    Encoder and decoder are conditioned on an emotion index (B,) and first-pose features (B, pose_dim).
    Any W that is a multiple of `downsample` works (positions are sinusoidal).
    """

    def __init__(self, in_dim: int, cfg: VQConfig, downsample: int, n_emotions: int, emotion_dim: int,
                 pose_dim: int = 6) -> None:
        super().__init__()
        self.in_dim, self.cfg, self.downsample = in_dim, cfg, downsample
        d = cfg.d_model
        self.enc_in = nn.Linear(in_dim, d)
        self.enc_refine = ConvRefine(d)
        self.enc_down = nn.Linear(downsample * d, d)
        self.enc_cond = Conditioning(n_emotions, emotion_dim, pose_dim, d)
        self.encoder = Transformer(d, cfg.n_layers, cfg.n_heads, cfg.ff_mult, cfg.dropout)
        self.to_code = nn.Linear(d, cfg.n_groups * cfg.code_dim)
        self.quantizer = EMAQuantizer(cfg.codebook_size, cfg.code_dim, cfg.n_groups, cfg.ema_decay,
                                      cfg.dead_fraction, levels=cfg.levels, dead_steps=cfg.dead_steps)
        self.from_code = nn.Linear(cfg.n_groups * cfg.code_dim, d)
        self.dec_cond = Conditioning(n_emotions, emotion_dim, pose_dim, d)
        self.decoder = Transformer(d, cfg.n_layers, cfg.n_heads, cfg.ff_mult, cfg.dropout)
        self.dec_up = nn.Linear(d, downsample * d)
        self.dec_refine = ConvRefine(d)
        self.dec_out = nn.Linear(d, in_dim)

    @property
    def n_codes(self) -> int:
        return self.cfg.codebook_size

    @property
    def n_groups(self) -> int:
        """Code indices per token (levels * n_groups): what a code decoder predicts per token."""
        return self.quantizer.slots

    @property
    def latent_dim(self) -> int:
        """Width of a token's latent vector (n_groups * code_dim)."""
        return self.cfg.n_groups * self.cfg.code_dim

    def encode(self, x: torch.Tensor, emotion: torch.Tensor, pose0: torch.Tensor) -> torch.Tensor:
        """x (B, W, in_dim) -> continuous latents (B, N, G * C), N = W / downsample."""
        b, w, _ = x.shape
        h = self.enc_refine(self.enc_in(x))
        h = self.enc_down(h.reshape(b, w // self.downsample, -1))
        h = h + sinusoid(h.shape[1], h.shape[2], h.device) + self.enc_cond(emotion, pose0)[:, None]
        return self.to_code(self.encoder(h))

    def decode(self, z_q: torch.Tensor, emotion: torch.Tensor, pose0: torch.Tensor) -> torch.Tensor:
        """Quantised latents (B, N, G * C) -> (B, N * downsample, in_dim)."""
        b, n, _ = z_q.shape
        h = self.from_code(z_q)
        h = h + sinusoid(n, h.shape[2], h.device) + self.dec_cond(emotion, pose0)[:, None]
        h = self.dec_up(self.decoder(h)).reshape(b, n * self.downsample, -1)
        h = h + sinusoid(h.shape[1], h.shape[2], h.device)
        return self.dec_out(self.dec_refine(h))

    def forward(self, x: torch.Tensor, emotion: torch.Tensor, pose0: torch.Tensor) -> VQOutput:
        q = self.quantizer(self.encode(x, emotion, pose0))
        return VQOutput(self.decode(q.z_q, emotion, pose0), q.indices, q.commitment, q.perplexity)

    @torch.no_grad()
    def tokenize(self, x: torch.Tensor, emotion: torch.Tensor, pose0: torch.Tensor) -> torch.Tensor:
        """x (B, W, in_dim) -> code indices (B, N, L * G) (no codebook update)."""
        return self.quantizer.nearest(self.encode(x, emotion, pose0))

    def decode_indices(self, indices: torch.Tensor, emotion: torch.Tensor, pose0: torch.Tensor) -> torch.Tensor:
        """Code indices (B, N, L * G) -> (B, N * downsample, in_dim)."""
        return self.decode(self.quantizer.lookup(indices), emotion, pose0)

    def codebook_perplexity(self) -> float:
        """Effective number of codes in use per codebook (EMA usage)."""
        return self.quantizer.perplexity()

    def usage_stats(self) -> dict[str, float]:
        """perplexity, share of codes in use (EMA share above 1 / (10 K)) and restarts so far."""
        usage = self.quantizer.usage()
        return {
            "perplexity": self.codebook_perplexity(),
            "used_fraction": float((usage > 0.1 / self.n_codes).float().mean()),
            "restarts": float(self.quantizer.restarts),
        }
