"""The ADF motion model: speech audio + a style clip -> per-frame expression, blink and head pose.

Stage 1 (`stage1_losses`): two VQ-VAEs learn discrete tokens of motion windows, one for expression
(+ blink), one for head-pose deltas from the window's first frame. Stage 2 (`stage2_losses`): with the
VQ-VAEs frozen, style encoders read a style clip, an audio projection reads the AudioEncoder features,
and two autoregressive code decoders learn to predict the VQ tokens (cross-entropy, a feature loss
through the frozen VQ decoders, and InfoNCE between audio and mouth-motion windows).
`generate` turns any length of audio into motion, window by window (see `erlnet.motion.windows`).

`ExpressionRegressor` is the no-VQ baseline (audio -> expression by a temporal conv net).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from erlnet.errors import InputError
from erlnet.motion.config import (
    EMOTIONS,
    UNKNOWN_EMOTION,
    ADFConfig,
    DecoderConfig,
    MotionStatistics,
    RegressorConfig,
    emotion_index,
)
from erlnet.motion.losses import SpeechContrast, code_cross_entropy, masked_mse, velocity_mse
from erlnet.motion.style import POSE_STYLE_DIM, StyleEncoder, pose_style_features
from erlnet.motion.vqvae import SequenceVQVAE, Transformer, sinusoid
from erlnet.motion.windows import (
    blend,
    blend_rotations,
    cut_windows,
    mean_pose,
    pose_deltas,
    relative_pose,
    rotvec_to_matrix,
    window_starts,
)
from erlnet.types import Motion

Tensor = torch.Tensor
PoseMode = Literal["generated", "static"]


# ----------------------------------------------------------------------------- batches


@dataclass
class MotionBatch:
    """A batch of motion windows (tensors; B windows of W frames, style clips of S frames).

    expression (B, W, D); blink (B, W) in [0, 1]; rotation (B, W, 3, 3); translation (B, W, 3) m;
    emotion (B,) int64 indices into `EMOTIONS`; valid (B, W) bool: frames that count in the losses
    (all when None; invalid frames must still hold finite values, e.g. interpolated).
    Stage 2 also needs audio (B, W, A) and a style clip: style_expression (B, S, D), style_rotation
    (B, S, 3, 3), style_translation (B, S, 3), style_valid (B, S) bool (clips padded to one length).
    ref_rotation (B, 3, 3), ref_translation (B, 3): the clip's mean head pose, the reference the
    first pose is described against (falls back to the style clip's, else the window's, mean pose).
    ref_expression (B, D): the clip's mean expression, what stage 1 codes a window relative to when
    `ADFConfig.style_offset` is on (falls back to the style clip's, else the window's, mean).
    """

    expression: Tensor
    blink: Tensor
    rotation: Tensor
    translation: Tensor
    emotion: Tensor
    audio: Tensor | None = None
    valid: Tensor | None = None
    style_expression: Tensor | None = None
    style_rotation: Tensor | None = None
    style_translation: Tensor | None = None
    style_valid: Tensor | None = None
    ref_rotation: Tensor | None = None
    ref_translation: Tensor | None = None
    ref_expression: Tensor | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MotionBatch:
        """From a collated dict of tensors / arrays; `emotion` may also be a list of label strings."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"motion batch: unknown fields {', '.join(unknown)}")
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if v is None:
                continue
            if k == "emotion" and isinstance(v, (list, tuple)) and v and isinstance(v[0], (str, type(None))):
                v = torch.tensor([emotion_index(e) for e in v], dtype=torch.long)
            kw[k] = torch.as_tensor(np.asarray(v)) if isinstance(v, np.ndarray) else torch.as_tensor(v)
        return cls(**kw)

    def to(self, device: torch.device | str) -> MotionBatch:
        return MotionBatch(**{f.name: (None if (v := getattr(self, f.name)) is None else v.to(device))
                              for f in dataclasses.fields(self)})

    def __len__(self) -> int:
        return self.expression.shape[0]


def _shape_error(name: str, got: tuple[int, ...], want: str) -> InputError:
    return InputError(f"motion batch: {name} has shape {got}, expected {want}")


def _check_batch(batch: MotionBatch, expression_dim: int, audio_dim: int | None, downsample: int) -> None:
    """Shapes, dims and finiteness of a batch; InputError naming the offending field."""
    e = batch.expression
    if e.ndim != 3 or e.shape[2] != expression_dim:
        raise _shape_error("expression", tuple(e.shape), f"(B, W, {expression_dim})")
    b, w = e.shape[:2]
    if w % downsample:
        raise InputError(f"motion batch: window length {w} is not a multiple of the VQ downsampling {downsample}")
    want = {"blink": (b, w), "rotation": (b, w, 3, 3), "translation": (b, w, 3), "emotion": (b,)}
    if batch.valid is not None:
        want["valid"] = (b, w)
    if batch.ref_expression is not None:
        want["ref_expression"] = (b, expression_dim)
    if audio_dim is not None:
        if batch.audio is None:
            raise InputError("motion batch: stage 2 needs audio features")
        want["audio"] = (b, w, audio_dim)
        if batch.style_expression is None or batch.style_rotation is None or batch.style_translation is None:
            raise InputError("motion batch: stage 2 needs a style clip (style_expression, style_rotation, "
                             "style_translation)")
        s = batch.style_expression.shape[1] if batch.style_expression.ndim == 3 else -1
        want.update({"style_expression": (b, s, expression_dim), "style_rotation": (b, s, 3, 3),
                     "style_translation": (b, s, 3)})
        if batch.style_valid is not None:
            want["style_valid"] = (b, s)
    for name, shape in want.items():
        t = getattr(batch, name)
        if tuple(t.shape) != shape:
            raise _shape_error(name, tuple(t.shape), str(shape))
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise InputError(f"motion batch: {name} holds NaN or infinite values")
    if batch.emotion.is_floating_point() or int(batch.emotion.min()) < 0 or int(batch.emotion.max()) >= len(EMOTIONS):
        raise InputError(f"motion batch: emotion must hold integer indices in [0, {len(EMOTIONS)})")


# ----------------------------------------------------------------------------- normalisation


class Normalizer(nn.Module):
    """Data statistics as buffers (saved with the weights): expression (D) <-> latent (E = pca_dim or D),
    audio standardisation, head-pose scales, and the mouth columns of the expression."""

    def __init__(self, expression_dim: int, audio_dim: int, pca_dim: int = 0,
                 mouth_columns: np.ndarray | None = None) -> None:
        super().__init__()
        self.expression_dim, self.audio_dim, self.pca_dim = expression_dim, audio_dim, pca_dim
        self.register_buffer("expression_mean", torch.zeros(expression_dim))
        self.register_buffer("expression_scale", torch.ones(()))
        self.register_buffer("expression_basis", torch.eye(expression_dim, pca_dim) if pca_dim else None)
        self.register_buffer("audio_mean", torch.zeros(audio_dim))
        self.register_buffer("audio_std", torch.ones(audio_dim))
        self.register_buffer("delta_scale", torch.ones(6))
        self.register_buffer("offset_scale", torch.ones(6))
        self.register_buffer("ready", torch.tensor(False))
        cols = np.zeros(0, np.int64) if mouth_columns is None else np.asarray(mouth_columns, np.int64)
        self.register_buffer("mouth_columns", torch.as_tensor(cols))

    @property
    def latent_dim(self) -> int:
        return self.pca_dim or self.expression_dim

    def set(self, stats: MotionStatistics) -> None:
        """Load statistics (shapes checked against the model)."""
        d, a = self.expression_dim, self.audio_dim
        checks = [("expression_mean", stats.expression_mean, (d,)), ("audio_mean", stats.audio_mean, (a,)),
                  ("audio_std", stats.audio_std, (a,)), ("delta_scale", stats.delta_scale, (6,)),
                  ("offset_scale", stats.offset_scale, (6,))]
        if self.pca_dim:
            if stats.expression_basis is None:
                raise InputError(f"statistics carry no PCA basis but the model uses pca_dim={self.pca_dim}")
            checks.append(("expression_basis", stats.expression_basis, (d, self.pca_dim)))
        elif stats.expression_basis is not None:
            raise InputError("statistics carry a PCA basis but the model has pca_dim=0")
        for name, value, shape in checks:
            arr = np.asarray(value, np.float32)
            if arr.shape != shape:
                raise InputError(f"statistics: {name} has shape {arr.shape}, the model needs {shape} "
                                 "(were they computed on another corpus or audio encoder?)")
            getattr(self, name).copy_(torch.from_numpy(arr))
        if not stats.expression_scale > 0:
            raise InputError(f"statistics: expression_scale must be positive, got {stats.expression_scale}")
        self.expression_scale.fill_(float(stats.expression_scale))
        self.ready.fill_(True)

    def check_ready(self) -> None:
        if not bool(self.ready):
            raise InputError("the motion model has no data statistics: call set_statistics(compute_statistics(...)) "
                             "before training or generating")

    def expression(self, x: Tensor) -> Tensor:
        """(..., D) expression -> (..., E) normalised latent."""
        x = x - self.expression_mean
        if self.expression_basis is not None:
            x = x @ self.expression_basis
        return x / self.expression_scale

    def expression_inverse(self, z: Tensor) -> Tensor:
        """(..., E) -> (..., D)."""
        z = z * self.expression_scale
        if self.expression_basis is not None:
            z = z @ self.expression_basis.T
        return z + self.expression_mean

    def mouth(self, z: Tensor) -> Tensor:
        """Normalised latent (..., E) -> centred, scaled mouth displacements (..., M)."""
        if self.expression_basis is not None:
            return z @ self.expression_basis[self.mouth_columns].T
        return z[..., self.mouth_columns]

    def audio(self, a: Tensor) -> Tensor:
        return (a - self.audio_mean) / self.audio_std


# ----------------------------------------------------------------------------- stage-2 modules


class AudioProjection(nn.Module):
    """AudioEncoder features (B, W, A), standardised -> (B, W, d): per-frame MLP + a residual temporal conv."""

    def __init__(self, audio_dim: int, d: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.inp = nn.Sequential(nn.Linear(audio_dim, d), nn.GELU(), nn.Dropout(dropout), nn.Linear(d, d))
        self.norm = nn.LayerNorm(d)
        self.conv = nn.Conv1d(d, d, 5, padding=2)

    def forward(self, a: Tensor) -> Tensor:
        h = self.inp(a)
        return h + F.gelu(self.conv(self.norm(h).transpose(1, 2))).transpose(1, 2)


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Standard Gumbel samples: argmax(logits + noise) draws from softmax(logits)."""
    u = torch.rand(shape, generator=generator, device=device).clamp_(1e-9, 1.0 - 1e-9)
    return -torch.log(-torch.log(u))


def pick_codes(logits: Tensor, temperature: float, top_k: int, noise: Tensor | None) -> Tensor:
    """logits (..., K) -> indices (...): greedy when temperature <= 0 or noise is None, else a sample of
    softmax(logits / temperature) restricted to the top_k codes (Gumbel-max with the given noise (..., K))."""
    if temperature <= 0 or noise is None:
        return logits.argmax(-1)
    scaled = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    return (scaled + noise).argmax(-1)


class CodeDecoder(nn.Module):
    """Predicts a window's VQ tokens from audio, a style vector, the emotion and the first pose.

    A bidirectional transformer reads the audio at token rate (so each token sees the whole window's
    speech, including what comes next). With the "codes" objective an autoregressive transformer then
    predicts token i's code indices from tokens < i plus the audio context of token i; with the
    "latent" objective a bidirectional transformer regresses every token's latent vector at once
    (`regress`), which the VQ quantiser snaps to codes.
    """

    def __init__(self, audio_dim: int, style_dim: int, n_emotions: int, emotion_dim: int, n_codes: int,
                 n_groups: int, downsample: int, cfg: DecoderConfig, pose_dim: int = 6,
                 latent_dim: int = 0) -> None:
        super().__init__()
        self.cfg, self.n_codes, self.n_groups, self.downsample = cfg, n_codes, n_groups, downsample
        d = cfg.d_model
        self.down = nn.Linear(downsample * audio_dim, d)
        self.emotion = nn.Embedding(n_emotions, emotion_dim)
        self.cond = nn.Linear(style_dim + emotion_dim + pose_dim, d)
        self.context_net = Transformer(d, cfg.n_context_layers, cfg.n_heads, 4, cfg.dropout)
        self.ar = Transformer(d, cfg.n_layers, cfg.n_heads, 4, cfg.dropout)
        if cfg.objective == "codes":
            self.code_emb = nn.Embedding(n_groups * n_codes, d)
            self.bos = nn.Parameter(torch.zeros(1, 1, d))
            self.head = nn.Linear(d, n_groups * n_codes)
        else:
            if latent_dim < 1:
                raise InputError("a latent code decoder needs the latent width of its VQ-VAE")
            self.latent_head = nn.Linear(d, latent_dim)

    @property
    def regresses(self) -> bool:
        """True for the "latent" objective."""
        return self.cfg.objective == "latent"

    def regress(self, ctx: Tensor) -> Tensor:
        """"latent" objective: ctx (B, N, d) -> latent vectors (B, N, latent_dim), all tokens at once."""
        return self.latent_head(self.ar(ctx))

    def context(self, audio: Tensor, style: Tensor, emotion: Tensor, pose0: Tensor) -> Tensor:
        """audio (B, W, audio_dim), style (B, style_dim), emotion (B,), pose0 (B, 6) -> (B, N, d)."""
        b, w, _ = audio.shape
        h = self.down(audio.reshape(b, w // self.downsample, -1))
        cond = self.cond(torch.cat([style, self.emotion(emotion), pose0], dim=-1))
        return self.context_net(h + sinusoid(h.shape[1], h.shape[2], h.device) + cond[:, None])

    def embed_codes(self, codes: Tensor) -> Tensor:
        """(B, N, G) -> (B, N, d): sum of the group embeddings."""
        offset = torch.arange(self.n_groups, device=codes.device) * self.n_codes
        return self.code_emb(codes + offset).sum(-2)

    def forward(self, ctx: Tensor, codes: Tensor) -> Tensor:
        """Teacher forcing: ctx (B, N, d), target codes (B, N, G) -> logits (B, N, G, K)."""
        b, n, _ = codes.shape
        prev = torch.cat([self.bos.expand(b, -1, -1), self.embed_codes(codes[:, :-1])], dim=1)
        return self.head(self.ar(prev + ctx, causal=True)).view(b, n, self.n_groups, self.n_codes)

    def sample(self, ctx: Tensor, temperature: float, top_k: int, noise: Tensor | None,
               forced: Tensor | None = None, force: Tensor | None = None) -> Tensor:
        """ctx (B, N, d) -> codes (B, N, G), one token at a time with a key-value cache.

        noise (B, N, G, K): Gumbel noise for sampling (`gumbel_noise`); None or temperature 0 = greedy.
        Fixed noise makes the draw a deterministic function of the logits. forced (B, N, G) with
        force (B, N) bool: tokens that are given rather than predicted (e.g. the previous window's).
        """
        b, n, _ = ctx.shape
        caches: list[dict[str, Tensor]] = [{} for _ in self.ar.blocks]
        prev = self.bos.expand(b, -1, -1)
        out = []
        for i in range(n):
            h = self.ar(prev + ctx[:, i:i + 1], causal=True, caches=caches)
            logits = self.head(h[:, -1]).view(b, self.n_groups, self.n_codes)
            code = pick_codes(logits, temperature, top_k, None if noise is None else noise[:, i])
            if forced is not None and force is not None:
                code = torch.where(force[:, i, None], forced[:, i], code)
            out.append(code)
            prev = self.embed_codes(code[:, None])
        return torch.stack(out, dim=1)


# ----------------------------------------------------------------------------- input checks for generation


def _as_tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise InputError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputError(f"{name} must hold floats, got {x.dtype}")
    x = x.detach().to(torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{name} holds NaN or infinite values")
    return x


def _check_audio(audio: Any, audio_dim: int) -> Tensor:
    a = _as_tensor(audio, "audio features")
    if a.ndim != 2:
        raise InputError(f"audio features must be (T, {audio_dim}), got shape {tuple(a.shape)}")
    if a.shape[0] < 1:
        raise InputError("audio is shorter than one video frame: no audio feature rows to animate")
    if a.shape[1] != audio_dim:
        raise InputError(f"audio features have {a.shape[1]} columns but the motion model was trained on "
                         f"{audio_dim} (another audio encoder?)")
    return a


def _check_pose_seq(rotation: Any, translation: Any, n: int, what: str) -> tuple[Tensor, Tensor]:
    r = _as_tensor(rotation, f"{what} rotation")
    t = _as_tensor(translation, f"{what} translation")
    if tuple(r.shape) != (n, 3, 3) or tuple(t.shape) != (n, 3):
        raise InputError(f"{what} pose must be rotation ({n}, 3, 3) and translation ({n}, 3), got "
                         f"{tuple(r.shape)} and {tuple(t.shape)}")
    return r, t


def _check_first_pose(first_pose: Any) -> tuple[Tensor, Tensor]:
    """(R (3, 3), t (3,)) -> rotation (1, 3, 3), translation (1, 3); R must be a rotation matrix."""
    if not isinstance(first_pose, (tuple, list)) or len(first_pose) != 2:
        raise InputError("first_pose must be a pair (rotation (3, 3), translation (3,))")
    r, t = _check_pose_seq(_as_tensor(first_pose[0], "first pose rotation")[None],
                           _as_tensor(first_pose[1], "first pose translation")[None], 1, "first")
    if float((r[0] @ r[0].T - torch.eye(3)).abs().max()) > 1e-3 or float(torch.det(r[0])) < 0:
        raise InputError("first pose rotation is not a rotation matrix (orthonormal, determinant +1)")
    return r, t


def _check_style(style_expr: Any, rotation: Any, translation: Any, expression_dim: int, min_frames: int,
                 fps: float) -> tuple[Tensor, Tensor, Tensor]:
    e = _as_tensor(style_expr, "style expression")
    if e.ndim != 2 or e.shape[1] != expression_dim:
        raise InputError(f"style expression must be (S, {expression_dim}), got shape {tuple(e.shape)} "
                         "(another expression representation?)")
    if e.shape[0] < min_frames:
        raise InputError(f"style clip is {e.shape[0]} frames ({e.shape[0] / fps:.2f} s); it needs at least "
                         f"{min_frames} frames ({min_frames / fps:.2f} s)")
    r, t = _check_pose_seq(rotation, translation, e.shape[0], "style clip")
    return e, r, t


# ----------------------------------------------------------------------------- the model


class ADFModel(nn.Module):
    """Audio-driven motion: AudioEncoder features + style clip (+ emotion) -> expression, blink, head pose.

    Build with `erlnet.motion.config.setup`; load data statistics with `set_statistics` before use.
    """

    def __init__(self, config: ADFConfig, expression_dim: int, audio_dim: int, mouth_columns: np.ndarray) -> None:
        super().__init__()
        self.config, self.expression_dim, self.audio_dim = config, expression_dim, audio_dim
        c = config
        n_emo = len(EMOTIONS)
        self.norm = Normalizer(expression_dim, audio_dim, c.pca_dim, mouth_columns)
        e = self.norm.latent_dim
        self.vq_expression = SequenceVQVAE(e + 1, c.expression_vq, c.downsample, n_emo, c.emotion_dim)
        self.vq_pose = SequenceVQVAE(6, c.pose_vq, c.downsample, n_emo, c.emotion_dim)
        self.style_expression = StyleEncoder(e, c.style)
        self.style_pose = StyleEncoder(POSE_STYLE_DIM, c.style)
        self.audio_proj = AudioProjection(audio_dim, c.audio_dim_model, c.expression_decoder.dropout)
        self.decoder_expression = CodeDecoder(c.audio_dim_model, c.style.style_dim, n_emo, c.emotion_dim,
                                              c.expression_vq.codebook_size, self.vq_expression.n_groups,
                                              c.downsample, c.expression_decoder,
                                              latent_dim=self.vq_expression.latent_dim)
        self.decoder_pose = CodeDecoder(c.audio_dim_model, c.style.style_dim, n_emo, c.emotion_dim,
                                        c.pose_vq.codebook_size, self.vq_pose.n_groups, c.downsample, c.pose_decoder,
                                        latent_dim=self.vq_pose.latent_dim)
        self.contrast = SpeechContrast(c.audio_dim_model, len(mouth_columns), c.contrast)
        # Static expression offset of a window (see ADFConfig.offset_head); zero at the start of stage 2.
        self.expression_offset = nn.Linear(c.expression_decoder.d_model + e, e) if c.offset_head else None
        if self.expression_offset is not None:
            nn.init.zeros_(self.expression_offset.weight)
            nn.init.zeros_(self.expression_offset.bias)
        self._stage1_frozen = False

    # ---- bookkeeping
    def spec(self) -> dict[str, Any]:
        """JSON-serialisable description that `from_spec` rebuilds the (untrained) model from."""
        return {"config": self.config.to_dict(), "expression_dim": self.expression_dim, "audio_dim": self.audio_dim,
                "mouth_columns": self.norm.mouth_columns.tolist()}

    @classmethod
    def from_spec(cls, d: dict[str, Any]) -> ADFModel:
        from erlnet.motion.config import setup

        return setup(int(d["expression_dim"]), int(d["audio_dim"]), ADFConfig.from_dict(d["config"]),
                     np.asarray(d["mouth_columns"], np.int64))

    def set_statistics(self, stats: MotionStatistics) -> None:
        """Load the corpus statistics (`compute_statistics`); required before training or generation."""
        self.norm.set(stats)

    def codebook_stats(self) -> dict[str, float]:
        """Usage of both codebooks (EMA): {expression,pose}_{perplexity,used_fraction,restarts}."""
        return {f"{name}_{k}": v for name, vq in (("expression", self.vq_expression), ("pose", self.vq_pose))
                for k, v in vq.usage_stats().items()}

    def stage1_modules(self) -> list[nn.Module]:
        return [self.vq_expression, self.vq_pose]

    def stage1_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.stage1_modules() for p in m.parameters()]

    def stage2_parameters(self) -> list[nn.Parameter]:
        frozen = {id(p) for p in self.stage1_parameters()}
        return [p for p in self.parameters() if id(p) not in frozen]

    def freeze_stage1(self) -> None:
        """Fix the VQ-VAEs for stage 2: no gradients, always in eval mode (dropout off, codebooks fixed)."""
        self._stage1_frozen = True
        for p in self.stage1_parameters():
            p.requires_grad_(False)
        for m in self.stage1_modules():
            m.eval()

    def train(self, mode: bool = True) -> ADFModel:
        super().train(mode)
        if self._stage1_frozen:
            for m in self.stage1_modules():
                m.eval()
        return self

    # ---- shared pieces
    def _emotion(self, emotion: Tensor) -> Tensor:
        """Training: replace a share of the labels by "unknown" so generation works without a label."""
        p = self.config.emotion_dropout
        if not self.training or p <= 0:
            return emotion
        drop = torch.rand(emotion.shape, device=emotion.device) < p
        return torch.where(drop, torch.full_like(emotion, UNKNOWN_EMOTION), emotion)

    def _expression_input(self, expression: Tensor, blink: Tensor, offset: Tensor | None = None) -> Tensor:
        """(B, W, D), (B, W), normalised offset (B, E) or None -> VQ input (B, W, E + 1)."""
        z = self.norm.expression(expression)
        if offset is not None:
            z = z - offset[:, None]
        return torch.cat([z, blink[..., None]], dim=-1)

    def _mean_expression(self, expression: Tensor, valid: Tensor | None) -> Tensor | None:
        """Normalised mean expression (B, E) of clips (B, S, D) over valid (B, S) frames; None when
        `style_offset` is off (expressions are then coded as they are)."""
        if not self.config.style_offset:
            return None
        z = self.norm.expression(expression)
        if valid is None:
            return z.mean(1)
        w = valid.to(z.dtype)[..., None]
        return (z * w).sum(1) / w.sum(1).clamp_min(1.0)

    def _stage1_offset(self, batch: MotionBatch) -> Tensor | None:
        """What stage 1 codes a window relative to: the clip's mean expression, else the style clip's,
        else the window's own."""
        if batch.ref_expression is not None:
            return self._mean_expression(batch.ref_expression[:, None], None)
        if batch.style_expression is not None:
            return self._mean_expression(batch.style_expression, batch.style_valid)
        return self._mean_expression(batch.expression, batch.valid)

    def _reference(self, batch: MotionBatch) -> tuple[Tensor, Tensor]:
        if batch.ref_rotation is not None and batch.ref_translation is not None:
            return batch.ref_rotation, batch.ref_translation
        if batch.style_rotation is not None and batch.style_translation is not None:
            return mean_pose(batch.style_rotation, batch.style_translation, batch.style_valid)
        return mean_pose(batch.rotation, batch.translation, batch.valid)

    def _pose0(self, r0: Tensor, t0: Tensor, r_ref: Tensor, t_ref: Tensor) -> Tensor:
        """First pose (B, 3, 3), (B, 3) relative to the reference pose, normalised -> (B, 6)."""
        return relative_pose(r0, t0, r_ref, t_ref) / self.norm.offset_scale

    def _pose_recon(self, out: Tensor) -> Tensor:
        """The pose decoder's deltas with frame 0 pinned to zero, so a window starts exactly at its first pose."""
        return out - out[:, :1]

    def _recon_losses(self, recon_e: Tensor, target_e: Tensor, recon_p: Tensor, target_p: Tensor,
                      valid: Tensor | None) -> dict[str, Tensor]:
        ce, cp = self.config.expression_vq, self.config.pose_vq
        e = self.norm.latent_dim
        out = {
            "expression": masked_mse(recon_e[..., :e], target_e[..., :e], valid),
            "blink": masked_mse(recon_e[..., e], target_e[..., e], valid),
            "expression_velocity": velocity_mse(recon_e[..., :e], target_e[..., :e], valid),
            "pose": masked_mse(recon_p, target_p, valid),
            "pose_velocity": velocity_mse(recon_p, target_p, valid),
        }
        out["expression_total"] = (out["expression"] + ce.blink_weight * out["blink"]
                                   + ce.velocity_weight * out["expression_velocity"])
        out["pose_total"] = out["pose"] + cp.velocity_weight * out["pose_velocity"]
        return out

    @torch.no_grad()
    def _metrics(self, recon_e: Tensor, target_e: Tensor, recon_p: Tensor, target_p: Tensor,
                 valid: Tensor | None) -> dict[str, Tensor]:
        """Errors in physical units: expression RMSE (representation units), rotation (deg), translation (mm)."""
        e = self.norm.latent_dim
        diff_p = (recon_p - target_p) * self.norm.delta_scale
        return {
            "expression_rmse": masked_mse(recon_e[..., :e], target_e[..., :e], valid).sqrt() * self.norm.expression_scale,
            "rotation_error_deg": masked_mse(diff_p[..., :3], torch.zeros_like(diff_p[..., :3]), valid).mul(3).sqrt()
            * (180 / np.pi),
            "translation_error_mm": masked_mse(diff_p[..., 3:], torch.zeros_like(diff_p[..., 3:]), valid).mul(3).sqrt()
            * 1000,
        }

    # ---- stage 1
    def stage1_losses(self, batch: MotionBatch) -> dict[str, Tensor]:
        """VQ-VAE losses of a batch of windows. Keys: loss (to minimise), expression, blink, pose (MSE of
        normalised values), *_velocity, *_commitment, *_perplexity (codes used in this batch),
        expression_rmse, rotation_error_deg, translation_error_mm."""
        self.norm.check_ready()
        _check_batch(batch, self.expression_dim, None, self.config.downsample)
        emo = self._emotion(batch.emotion)
        r_ref, t_ref = self._reference(batch)
        pose0 = self._pose0(batch.rotation[:, 0], batch.translation[:, 0], r_ref, t_ref)
        x_e = self._expression_input(batch.expression, batch.blink, self._stage1_offset(batch))
        x_p = pose_deltas(batch.rotation, batch.translation) / self.norm.delta_scale
        out_e = self.vq_expression(x_e, emo, pose0)
        out_p = self.vq_pose(x_p, emo, pose0)
        recon_p = self._pose_recon(out_p.recon)
        losses = self._recon_losses(out_e.recon, x_e, recon_p, x_p, batch.valid)
        c = self.config
        losses["expression_commitment"] = out_e.commitment
        losses["pose_commitment"] = out_p.commitment
        losses["loss"] = (losses["expression_total"] + losses["pose_total"]
                          + c.expression_vq.commitment * out_e.commitment + c.pose_vq.commitment * out_p.commitment)
        losses["expression_perplexity"] = out_e.perplexity.detach()
        losses["pose_perplexity"] = out_p.perplexity.detach()
        losses.update(self._metrics(out_e.recon, x_e, recon_p, x_p, batch.valid))
        return losses

    # ---- stage 2
    def _styles(self, style_expression: Tensor, style_rotation: Tensor, style_translation: Tensor,
                style_valid: Tensor | None) -> tuple[Tensor, Tensor]:
        s_e = self.style_expression(self.norm.expression(style_expression), style_valid)
        feats = pose_style_features(style_rotation, style_translation, self.norm.offset_scale,
                                    self.norm.delta_scale, style_valid, self.config.fps)
        return s_e, self.style_pose(feats, style_valid)

    def stage2_losses(self, batch: MotionBatch) -> dict[str, Tensor]:
        """Stage-2 losses (freezes the VQ-VAEs on first use). Keys: loss, expression_accuracy and
        pose_accuracy (codes right: teacher-forced for the "codes" objective, snapped latents for
        "latent"), expression_ce / pose_ce ("codes"), expression_latent / pose_latent ("latent"),
        expression_feature, pose_feature (decoded motion vs. target), contrast, contrast_accuracy, sync."""
        self.norm.check_ready()
        if not self._stage1_frozen:
            self.freeze_stage1()
        c = self.config
        _check_batch(batch, self.expression_dim, self.audio_dim, c.downsample)
        n_style = batch.style_expression.shape[1] if batch.style_valid is None else int(batch.style_valid.sum(1).min())
        if n_style < c.min_style_frames:
            raise InputError(f"motion batch: a style clip has {n_style} frames, fewer than {c.min_style_frames}")
        emo = self._emotion(batch.emotion)
        r_ref, t_ref = self._reference(batch)
        pose0 = self._pose0(batch.rotation[:, 0], batch.translation[:, 0], r_ref, t_ref)
        # At generation only the style clip is known: its mean is the offset to predict relative to.
        style_mean = self._mean_expression(batch.style_expression, batch.style_valid)
        x_e = self._expression_input(batch.expression, batch.blink, style_mean)
        x_p = pose_deltas(batch.rotation, batch.translation) / self.norm.delta_scale
        with torch.no_grad():
            codes_e = self.vq_expression.tokenize(x_e, emo, pose0)
            codes_p = self.vq_pose.tokenize(x_p, emo, pose0)
        b, w = batch.expression.shape[:2]
        tok_valid = None if batch.valid is None else batch.valid.view(b, w // c.downsample, c.downsample).any(-1)

        audio = self.audio_proj(self.norm.audio(batch.audio))
        s_e, s_p = self._styles(batch.style_expression, batch.style_rotation, batch.style_translation,
                                batch.style_valid)
        ctx_e = self.decoder_expression.context(audio, s_e, emo, pose0)
        ctx_p = self.decoder_pose.context(audio, s_p, emo, pose0)
        out: dict[str, Tensor] = {}
        loss = audio.new_zeros(())
        pred_e = pred_p = None  # decoded predictions (B, W, E + 1) and (B, W, 6) for the feature losses
        if self.decoder_expression.regresses:
            loss_e, pred_e = self._latent_losses("expression", self.vq_expression, self.decoder_expression, ctx_e,
                                                 x_e, codes_e, emo, pose0, tok_valid, out)
            loss = loss + loss_e
        if self.decoder_pose.regresses:
            loss_p, pred_p = self._latent_losses("pose", self.vq_pose, self.decoder_pose, ctx_p, x_p, codes_p, emo,
                                                 pose0, tok_valid, out)
            loss = loss + loss_p
        fe, fp = c.expression_decoder.feature_weight, c.pose_decoder.feature_weight
        if not self.decoder_expression.regresses:
            logits_e = self.decoder_expression(ctx_e, codes_e)
            out["expression_ce"], out["expression_accuracy"] = code_cross_entropy(logits_e, codes_e, tok_valid)
            loss = loss + out["expression_ce"]
            if fe > 0:
                pred_e = self.vq_expression.decode(
                    self.vq_expression.quantizer.soft_lookup(logits_e.softmax(-1)), emo, pose0)
        if not self.decoder_pose.regresses:
            logits_p = self.decoder_pose(ctx_p, codes_p)
            out["pose_ce"], out["pose_accuracy"] = code_cross_entropy(logits_p, codes_p, tok_valid)
            loss = loss + out["pose_ce"]
            if fp > 0:
                pred_p = self.vq_pose.decode(self.vq_pose.quantizer.soft_lookup(logits_p.softmax(-1)), emo, pose0)

        mouth_gt = self.norm.mouth(x_e[..., :-1])
        out["contrast"], out["contrast_accuracy"] = self.contrast(audio, mouth_gt, batch.valid)
        loss = loss + c.contrast.weight * out["contrast"]

        if pred_e is not None:
            pred_e = self._add_offset(pred_e, ctx_e, style_mean)
        if pred_e is not None or pred_p is not None:
            # Unused halves get the target itself: zero loss, and one code path for the pair.
            rec = self._recon_losses(x_e if pred_e is None else pred_e, x_e,
                                     x_p if pred_p is None else self._pose_recon(pred_p), x_p, batch.valid)
            if pred_e is not None:
                out["expression_feature"] = rec["expression_total"]
                loss = loss + fe * out["expression_feature"]
            if pred_p is not None:
                out["pose_feature"] = rec["pose_total"]
                loss = loss + fp * out["pose_feature"]
            if pred_e is not None and c.contrast.sync_weight > 0:
                out["sync"] = self._sync_loss(audio, self.norm.mouth(pred_e[..., :-1]), batch.valid)
                loss = loss + c.contrast.sync_weight * out["sync"]
        out["loss"] = loss
        return out

    def _latent_losses(self, name: str, vq: SequenceVQVAE, decoder: CodeDecoder, ctx: Tensor, x: Tensor,
                       codes: Tensor, emo: Tensor, pose0: Tensor, tok_valid: Tensor | None,
                       out: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """"latent" objective of one decoder: MSE of the predicted latents (B, N, L) to the VQ encoder's
        (scaled to unit variance), plus their decoding (B, W, F) for the feature loss. Logs
        `{name}_latent` and `{name}_accuracy` (share of first-level codes the prediction snaps to)."""
        with torch.no_grad():
            target = vq.encode(x, emo, pose0)
            var = target.var().clamp_min(1e-8)
        z = decoder.regress(ctx)
        out[f"{name}_latent"] = masked_mse(z, target, tok_valid) / var
        if decoder.cfg.quantize:
            # Straight-through: the decoder sees codebook vectors as at generation, gradients reach z.
            z = z + (vq.quantizer.lookup(vq.quantizer.nearest(z.detach())) - z).detach()
        g = vq.cfg.n_groups
        hit = (vq.quantizer.nearest(z.detach())[..., :g] == codes[..., :g]).float().mean(-1)
        out[f"{name}_accuracy"] = hit.mean() if tok_valid is None else \
            (hit * tok_valid).sum() / tok_valid.sum().clamp_min(1.0)
        return decoder.cfg.latent_weight * out[f"{name}_latent"], vq.decode(z, emo, pose0)

    def _add_offset(self, x: Tensor, ctx: Tensor, style_mean: Tensor | None) -> Tensor:
        """Decoded expression windows x (B, W, E + 1) plus the offset head's static offset of each window,
        read from the mean of its expression context ctx (B, N, d) and the normalised mean expression of
        the style clip (B, E) that the codes are relative to (None: zeros), so that pulling a noisy style
        mean back towards the speech's is a linear map; x unchanged without the head."""
        if self.expression_offset is None:
            return x
        b, e = x.shape[0], self.norm.latent_dim
        mean = x.new_zeros(b, e) if style_mean is None else style_mean.expand(b, e)
        delta = self.expression_offset(torch.cat([ctx.mean(1), mean], dim=-1))  # (B, E)
        return x + F.pad(delta, (0, 1))[:, None]  # blink (last column) untouched

    def _sync_loss(self, audio: Tensor, mouth_pred: Tensor, valid: Tensor | None) -> Tensor:
        """InfoNCE of the generated mouth against the audio, through a frozen copy of the contrast module:
        it moves the generated motion towards the speech, not the embedding towards the generated motion."""
        params = {k: v.detach() for k, v in self.contrast.named_parameters()}
        loss, _ = torch.func.functional_call(self.contrast, params, (audio.detach(), mouth_pred, valid))
        return loss

    # ---- generation
    @torch.inference_mode()
    def generate(
        self,
        audio_feats: Tensor | np.ndarray,
        style_expr: Tensor | np.ndarray,
        style_rotation: Tensor | np.ndarray,
        style_translation: Tensor | np.ndarray,
        emotion: str | None = None,
        first_pose: tuple[Any, Any] | None = None,
        pose_mode: PoseMode = "generated",
        seed: int = 0,
        expression_temperature: float | None = None,
        pose_temperature: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Motion for `audio_feats` (T, A) in the manner of the style clip (S >= min_style_frames frames).

        style_expr (S, D), style_rotation (S, 3, 3), style_translation (S, 3) m; emotion: a label of
        `EMOTIONS` or None; first_pose (R (3, 3), t (3,)) where the head starts (default: the style clip's
        mean pose); pose_mode "static" keeps the head at first_pose. Same seed -> same output.
        Temperatures override the config (0 = greedy). Returns float32 arrays expression (T, D),
        blink (T,) in [0, 1], rotation (T, 3, 3), translation (T, 3) m.
        """
        self.norm.check_ready()
        c = self.config
        audio = _check_audio(audio_feats, self.audio_dim)
        s_expr, s_rot, s_trans = _check_style(style_expr, style_rotation, style_translation, self.expression_dim,
                                              c.min_style_frames, c.fps)
        emo_idx = emotion_index(emotion)
        if pose_mode not in ("generated", "static"):
            raise InputError(f"pose_mode must be 'generated' or 'static', got {pose_mode!r}")
        t_exp = c.expression_decoder.temperature if expression_temperature is None else float(expression_temperature)
        t_pose = c.pose_decoder.temperature if pose_temperature is None else float(pose_temperature)
        dev = self.norm.expression_mean.device
        was_training = self.training
        self.eval()
        try:
            # Separate streams: the expression draw does not depend on whether the pose was sampled.
            gen_pose = torch.Generator(device=dev).manual_seed(2 * int(seed))
            gen_expr = torch.Generator(device=dev).manual_seed(2 * int(seed) + 1)
            audio, s_expr, s_rot, s_trans = (x.to(dev) for x in (audio, s_expr, s_rot, s_trans))
            r_ref, t_ref = mean_pose(s_rot[None], s_trans[None])
            if first_pose is None:
                r_first, t_first = r_ref, t_ref
            else:
                r_first, t_first = (x.to(dev) for x in _check_first_pose(first_pose))
            n_frames = audio.shape[0]
            starts = window_starts(n_frames, c.window, c.overlap, c.downsample)
            n = len(starts)
            feats = self.audio_proj(self.norm.audio(cut_windows(audio, starts, c.window)))  # (n, W, d)
            s_e, s_p = self._styles(s_expr[None], s_rot[None], s_trans[None], None)
            emo = torch.full((n,), emo_idx, dtype=torch.long, device=dev)
            if pose_mode == "static":
                rot_w = r_first[:, None].expand(n, c.window, 3, 3)
                trans_w = t_first[:, None].expand(n, c.window, 3)
            else:
                rot_w, trans_w = self._generate_pose(feats, s_p, emo, starts, r_first, t_first, r_ref, t_ref,
                                                     t_pose, gen_pose)
            pose0 = self._pose0(rot_w[:, 0], trans_w[:, 0], r_ref, t_ref)
            ctx = self.decoder_expression.context(feats, s_e.expand(n, -1), emo, pose0)
            if self.decoder_expression.regresses:
                x = self._decode_latents(self.vq_expression, self.decoder_expression, ctx, emo, pose0)
            else:
                noise = self._noise(n, self.vq_expression, t_exp, gen_expr)
                codes = self.decoder_expression.sample(ctx, t_exp, c.expression_decoder.top_k, noise)
                if c.continue_windows and n > 1:
                    codes = self._continue_windows(self.decoder_expression, ctx, codes, starts, t_exp,
                                                   c.expression_decoder.top_k, noise)
                x = self.vq_expression.decode_indices(codes, emo, pose0)  # (n, W, E + 1)
            offset = self._mean_expression(s_expr[None], None)
            x = self._add_offset(x, ctx, offset)
            z = blend(x[..., :-1], starts, n_frames)
            expression = self.norm.expression_inverse(z if offset is None else z + offset)
            blink = blend(x[..., -1], starts, n_frames).clamp(0.0, 1.0)
            if pose_mode == "static":
                rotation = r_first.expand(n_frames, 3, 3)
                translation = t_first.expand(n_frames, 3)
            else:
                rotation = blend_rotations(rot_w, starts, n_frames)
                translation = blend(trans_w, starts, n_frames)
        finally:
            self.train(was_training)

        def np32(t: Tensor) -> np.ndarray:
            return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)

        return {"expression": np32(expression), "blink": np32(blink), "rotation": np32(rotation),
                "translation": np32(translation)}

    @torch.inference_mode()
    def reconstruct(self, expression: Tensor | np.ndarray, blink: Tensor | np.ndarray, rotation: Tensor | np.ndarray,
                    translation: Tensor | np.ndarray, emotion: str | None = None,
                    quantize: bool = True) -> dict[str, np.ndarray]:
        """Stage-1 round trip of a tracked clip through the expression VQ-VAE, window by window as in
        `generate` (what stage 2 can at best reproduce). expression (T, D), blink (T,), rotation (T, 3, 3),
        translation (T, 3) m; quantize=False skips the codebooks (the autoencoder alone). Returns float32
        expression (T, D), blink (T,) and the code indices (n_windows, tokens, slots) int64."""
        self.norm.check_ready()
        c = self.config
        expr = _as_tensor(expression, "expression")
        n_frames = expr.shape[0]
        if expr.ndim != 2 or expr.shape[1] != self.expression_dim or n_frames < 1:
            raise InputError(f"expression must be (T, {self.expression_dim}), got shape {tuple(expr.shape)}")
        bl = _as_tensor(blink, "blink")
        if tuple(bl.shape) != (n_frames,):
            raise InputError(f"blink must be ({n_frames},), got shape {tuple(bl.shape)}")
        rot, trans = _check_pose_seq(rotation, translation, n_frames, "clip")
        dev = self.norm.expression_mean.device
        expr, bl, rot, trans = (x.to(dev) for x in (expr, bl, rot, trans))
        was_training = self.training
        self.eval()
        try:
            starts = window_starts(n_frames, c.window, c.overlap, c.downsample)
            n = len(starts)
            offset = self._mean_expression(expr[None], None)
            x = cut_windows(self._expression_input(expr[None], bl[None], offset)[0], starts, c.window)
            r_w, t_w = cut_windows(rot, starts, c.window), cut_windows(trans, starts, c.window)
            r_ref, t_ref = mean_pose(rot[None], trans[None])
            pose0 = self._pose0(r_w[:, 0], t_w[:, 0], r_ref, t_ref)
            emo = torch.full((n,), emotion_index(emotion), dtype=torch.long, device=dev)
            vq = self.vq_expression
            z = vq.encode(x, emo, pose0)
            codes = vq.quantizer.nearest(z)
            out = vq.decode(vq.quantizer.lookup(codes) if quantize else z, emo, pose0)
            zz = blend(out[..., :-1], starts, n_frames)
            recon = self.norm.expression_inverse(zz if offset is None else zz + offset[0])
            blink_out = blend(out[..., -1], starts, n_frames).clamp(0.0, 1.0)
        finally:
            self.train(was_training)
        return {"expression": recon.cpu().numpy().astype(np.float32),
                "blink": blink_out.cpu().numpy().astype(np.float32), "codes": codes.cpu().numpy()}

    def _decode_latents(self, vq: SequenceVQVAE, decoder: CodeDecoder, ctx: Tensor, emo: Tensor,
                        pose0: Tensor) -> Tensor:
        """"latent" objective: regressed latents, snapped to their nearest codes when `quantize`, decoded
        by the frozen VQ decoder -> (n, W, F)."""
        z = decoder.regress(ctx)
        if decoder.cfg.quantize:
            z = vq.quantizer.lookup(vq.quantizer.nearest(z))
        return vq.decode(z, emo, pose0)

    def _continue_windows(self, decoder: CodeDecoder, ctx: Tensor, codes: Tensor, starts: list[int],
                          temperature: float, top_k: int, noise: Tensor | None) -> Tensor:
        """Decode all windows again, each taking the tokens `codes` (n, N, G) of the previous window over
        their shared frames as given, so that overlapping windows agree there (smooth joins)."""
        ds = self.config.downsample
        forced = torch.zeros_like(codes)
        force = torch.zeros(codes.shape[:2], dtype=torch.bool, device=codes.device)
        for k in range(1, len(starts)):
            shift = (starts[k] - starts[k - 1]) // ds
            forced[k, : codes.shape[1] - shift] = codes[k - 1, shift:]
            force[k, : codes.shape[1] - shift] = True
        return decoder.sample(ctx, temperature, top_k, noise, forced, force)

    def _noise(self, n: int, vq: SequenceVQVAE, temperature: float, gen: torch.Generator) -> Tensor | None:
        if temperature <= 0:
            return None
        return gumbel_noise((n, self.config.tokens, vq.n_groups, vq.n_codes), gen, gen.device)

    def _generate_pose(self, feats: Tensor, s_p: Tensor, emo: Tensor, starts: list[int], r_first: Tensor,
                       t_first: Tensor, r_ref: Tensor, t_ref: Tensor, temperature: float,
                       gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """Head pose of all windows; returns per-window rotation (n, W, 3, 3) and translation (n, W, 3).

        Every window's deltas continue from the pose the previous window reached at its first frame
        (exact continuity). Which deltas a window gets depends on its first pose (the decoders are
        conditioned on it, e.g. to turn back towards the reference); rather than decoding the windows one
        after another, all windows are decoded at once `pose_passes` times, each pass conditioned on
        the start poses chained from the previous pass, with the same sampling noise in every pass.
        """
        c = self.config
        n = len(starts)
        noise = self._noise(n, self.vq_pose, temperature, gen)
        r0 = r_first.expand(n, 3, 3)
        t0 = t_first.expand(n, 3)
        for _ in range(c.pose_passes):
            pose0 = self._pose0(r0, t0, r_ref, t_ref)
            ctx = self.decoder_pose.context(feats, s_p.expand(n, -1), emo, pose0)
            if self.decoder_pose.regresses:
                x = self._decode_latents(self.vq_pose, self.decoder_pose, ctx, emo, pose0)
            else:
                codes = self.decoder_pose.sample(ctx, temperature, c.pose_decoder.top_k, noise)
                x = self.vq_pose.decode_indices(codes, emo, pose0)
            deltas = self._pose_recon(x) * self.norm.delta_scale
            rots, transes = chain_windows(deltas, starts, r_first, t_first)
            r0, t0 = rots[:, 0], transes[:, 0]
        return rots, transes


def chain_windows(deltas: Tensor, starts: list[int], r_first: Tensor, t_first: Tensor) -> tuple[Tensor, Tensor]:
    """Absolute poses of windows of deltas (n, W, 6) starting at `starts`: window 0 starts at the first pose
    r_first (1, 3, 3), t_first (1, 3); window k at the pose window k-1 has at frame starts[k].
    Returns rotation (n, W, 3, 3), translation (n, W, 3)."""
    rel_r = rotvec_to_matrix(deltas[..., :3])  # all windows at once; only the 3x3 chaining is sequential
    r0, t0 = r_first[0], t_first[0]
    rots, transes = [], []
    for k in range(len(starts)):
        r = r0 @ rel_r[k]
        t = t0 + deltas[k, :, 3:]
        rots.append(r)
        transes.append(t)
        if k + 1 < len(starts):
            j = starts[k + 1] - starts[k]
            r0, t0 = r[j], t[j]
    return torch.stack(rots), torch.stack(transes)


# ----------------------------------------------------------------------------- baseline


class _ResConv(nn.Module):
    def __init__(self, d: int, kernel: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.conv = nn.Conv1d(d, d, kernel, padding=dilation * (kernel // 2), dilation=dilation)
        self.out = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = F.gelu(self.conv(self.norm(x).transpose(1, 2))).transpose(1, 2)
        return x + self.drop(self.out(h))


class ExpressionRegressor(nn.Module):
    """Baseline without VQ: AudioEncoder features (+ emotion) -> expression and blink per frame.

    A dilated temporal conv net (non-causal, any length); build with `RegressorConfig.setup`.
    """

    def __init__(self, config: RegressorConfig, expression_dim: int, audio_dim: int) -> None:
        super().__init__()
        self.config, self.expression_dim, self.audio_dim = config, expression_dim, audio_dim
        c = config
        self.norm = Normalizer(expression_dim, audio_dim, c.pca_dim)
        self.emotion = nn.Embedding(len(EMOTIONS), c.emotion_dim)
        self.inp = nn.Linear(audio_dim + c.emotion_dim, c.d_model)
        self.blocks = nn.Sequential(*[_ResConv(c.d_model, c.kernel, 2**i, c.dropout) for i in range(c.n_blocks)])
        self.out = nn.Sequential(nn.LayerNorm(c.d_model), nn.Linear(c.d_model, self.norm.latent_dim + 1))

    def set_statistics(self, stats: MotionStatistics) -> None:
        self.norm.set(stats)

    def spec(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "expression_dim": self.expression_dim, "audio_dim": self.audio_dim}

    @classmethod
    def from_spec(cls, d: dict[str, Any]) -> ExpressionRegressor:
        return RegressorConfig.from_dict(d["config"]).setup(int(d["expression_dim"]), int(d["audio_dim"]))

    def forward(self, audio: Tensor, emotion: Tensor) -> Tensor:
        """Standardised audio (B, T, A), emotion (B,) -> (B, T, E + 1) normalised expression latent + blink."""
        emo = self.emotion(emotion)[:, None].expand(-1, audio.shape[1], -1)
        return self.out(self.blocks(self.inp(torch.cat([audio, emo], dim=-1))))

    def losses(self, batch: MotionBatch) -> dict[str, Tensor]:
        """Keys: loss, expression, blink, expression_velocity (normalised MSE), expression_rmse."""
        self.norm.check_ready()
        if batch.audio is None:
            raise InputError("motion batch: the regressor needs audio features")
        _check_batch(batch, self.expression_dim, None, 1)
        b, w = batch.expression.shape[:2]
        if tuple(batch.audio.shape) != (b, w, self.audio_dim):
            raise _shape_error("audio", tuple(batch.audio.shape), f"({b}, {w}, {self.audio_dim})")
        pred = self(self.norm.audio(batch.audio), batch.emotion)
        target = torch.cat([self.norm.expression(batch.expression), batch.blink[..., None]], dim=-1)
        e = self.norm.latent_dim
        out = {
            "expression": masked_mse(pred[..., :e], target[..., :e], batch.valid),
            "blink": masked_mse(pred[..., e], target[..., e], batch.valid),
            "expression_velocity": velocity_mse(pred[..., :e], target[..., :e], batch.valid),
        }
        c = self.config
        out["loss"] = out["expression"] + c.blink_weight * out["blink"] + c.velocity_weight * out["expression_velocity"]
        out["expression_rmse"] = out["expression"].detach().sqrt() * self.norm.expression_scale
        return out

    @torch.inference_mode()
    def generate(self, audio_feats: Tensor | np.ndarray, emotion: str | None = None) -> dict[str, np.ndarray]:
        """audio_feats (T, A) -> expression (T, D) and blink (T,) float32 numpy arrays."""
        self.norm.check_ready()
        audio = _check_audio(audio_feats, self.audio_dim).to(self.norm.expression_mean.device)
        was_training = self.training
        self.eval()
        try:
            emo = torch.tensor([emotion_index(emotion)], device=audio.device)
            pred = self(self.norm.audio(audio)[None], emo)[0]
        finally:
            self.train(was_training)
        expression = self.norm.expression_inverse(pred[:, :-1])
        blink = pred[:, -1].clamp(0.0, 1.0)
        return {"expression": expression.cpu().numpy().astype(np.float32),
                "blink": blink.cpu().numpy().astype(np.float32)}


def to_motion(out: dict[str, np.ndarray], fps: float = 25.0, representation: str = "landmarks") -> Motion:
    """The dict returned by `ADFModel.generate` as an `erlnet.types.Motion`."""
    return Motion(expression=out["expression"], blink=out["blink"], rotation=out["rotation"],
                  translation=out["translation"], fps=fps, representation=representation)


def motion_batch(windows: Sequence[dict[str, Any]]) -> MotionBatch:
    """Collate per-window dicts of numpy arrays / tensors (same keys as `MotionBatch`; emotion a label,
    an index, or None / absent for unknown) into a `MotionBatch`; style clips of different lengths are
    padded and masked."""
    if not windows:
        raise InputError("cannot collate an empty list of windows")
    keys = [k for k in windows[0] if windows[0][k] is not None and k not in ("style_valid", "emotion")]
    out: dict[str, Any] = {"emotion": torch.tensor(
        [e if isinstance(e := w.get("emotion"), (int, np.integer)) else emotion_index(e) for w in windows])}
    for k in keys:
        vals = [w[k] for w in windows]
        ts = [torch.as_tensor(np.asarray(v)) for v in vals]
        if k.startswith("style_") and k != "style_valid":
            s = max(len(t) for t in ts)
            if "style_valid" not in out:
                out["style_valid"] = torch.stack([torch.arange(s) < len(t) for t in ts])
            # Pad with the last frame: finite values that the mask then ignores.
            ts = [torch.cat([t, t[-1:].expand(s - len(t), *t.shape[1:])]) for t in ts]
        out[k] = torch.stack(ts)
    return MotionBatch.from_dict(out)
