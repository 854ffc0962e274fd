"""Typed configuration of the ADF motion model, the data statistics it normalises with, and `setup`.

`ADFConfig` holds only hyper-parameters; widths that come from the data (expression and audio feature
dims, the mouth columns of the expression) are arguments of `setup`, and data statistics
(`MotionStatistics`, from `compute_statistics`) are loaded into the model with `set_statistics`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from erlnet.errors import FormatError, InputError
from erlnet.face import topology as tp

if TYPE_CHECKING:
    from erlnet.motion.adf import ADFModel, ExpressionRegressor

# Emotion labels of the corpus (MEAD's eight) plus "unknown" for unlabelled clips and `emotion=None`.
EMOTIONS: tuple[str, ...] = ("neutral", "angry", "contempt", "disgusted", "fear", "happy", "sad", "surprised",
                             "unknown")
UNKNOWN_EMOTION = EMOTIONS.index("unknown")


def emotion_index(name: str | None) -> int:
    """Index of an emotion label in `EMOTIONS`; None or "" -> "unknown". InputError for other names."""
    if name is None or name == "":
        return UNKNOWN_EMOTION
    key = str(name).strip().lower()
    if key not in EMOTIONS:
        raise InputError(f"unknown emotion {name!r}; choose one of: {', '.join(EMOTIONS)}")
    return EMOTIONS.index(key)


@dataclass
class VQConfig:
    """One transformer VQ-VAE over motion windows (expression+blink, or head-pose deltas)."""

    d_model: int = 128  # transformer width
    n_layers: int = 3  # transformer blocks in the encoder and again in the decoder
    n_heads: int = 4  # attention heads
    ff_mult: int = 4  # feed-forward width = ff_mult * d_model
    dropout: float = 0.0  # dropout in the transformer blocks (an autoencoder underfits long before it overfits)
    codebook_size: int = 256  # codes per codebook
    code_dim: int = 32  # width of one code
    n_groups: int = 2  # codebooks per token (product quantisation: token = n_groups codes)
    levels: int = 1  # residual quantisation levels (each level codes what the previous ones left over)
    ema_decay: float = 0.99  # EMA decay of the codebook statistics
    commitment: float = 0.25  # weight of the commitment loss (encoder output -> its code)
    dead_fraction: float = 0.03  # a code whose EMA usage falls below this fraction of the mean is restarted
    dead_steps: int = 20  # ... as is a code no input chose for this many training batches (0 = off)
    velocity_weight: float = 0.5  # weight of the frame-to-frame velocity reconstruction loss
    blink_weight: float = 1.0  # weight of the blink reconstruction loss (expression VQ only)


@dataclass
class StyleConfig:
    """Style encoders: transformer + attention pooling over a style clip."""

    d_model: int = 128  # transformer width
    n_layers: int = 2  # transformer blocks
    n_heads: int = 4  # attention heads
    style_dim: int = 128  # width of a style vector
    dropout: float = 0.1  # dropout in the transformer blocks
    max_frames: int = 250  # longer clips are centre-cropped to this many frames (bounds the attention cost)
    downsample: int = 4  # frames per transformer token


@dataclass
class DecoderConfig:
    """A code decoder: audio context encoder + a transformer over the VQ tokens of a window.

    objective "codes": the second transformer is autoregressive and classifies each token's code
    indices (cross-entropy; sampled or greedy at generation). objective "latent": it reads all tokens
    at once and regresses the VQ encoder's latent vectors, trained mainly through the frozen VQ decoder
    (loss on the decoded motion); at generation the latents are snapped to their nearest codes.
    """

    objective: Literal["codes", "latent"] = "codes"  # what the decoder predicts per token (see above)
    d_model: int = 192  # transformer width
    n_context_layers: int = 2  # bidirectional blocks over the audio tokens
    n_layers: int = 3  # causal blocks over the code tokens
    n_heads: int = 4  # attention heads
    dropout: float = 0.1  # dropout in the transformer blocks
    temperature: float = 0.0  # sampling temperature at generation; 0 = greedy (most likely code)
    top_k: int = 0  # sample among the k most likely codes (0 = all)
    feature_weight: float = 0.1  # weight of the feature loss (predicted codes or latents -> frozen VQ decoder -> target motion)
    latent_weight: float = 0.1  # objective "latent": weight of the MSE to the VQ encoder's latents (unit variance)
    quantize: bool = True  # objective "latent": decode the nearest codes of the predicted latents (False: the latents)


@dataclass
class ContrastConfig:
    """InfoNCE between audio windows and mouth-motion windows."""

    weight: float = 0.1  # weight of the InfoNCE loss (audio projection vs. ground-truth mouth motion)
    sync_weight: float = 0.05  # weight of InfoNCE(audio, generated mouth motion) when the feature loss is on
    sub_window: int = 8  # frames per audio/mouth window (0.32 s at 25 fps)
    embed_dim: int = 64  # width of the joint embedding
    hidden: int = 128  # width of the window encoders
    temperature: float = 0.1  # softmax temperature of the similarities


@dataclass
class ADFConfig:
    """The ADF motion model: two VQ-VAEs (stage 1), style encoders and code decoders (stage 2)."""

    fps: float = 25.0  # frames per second of motion and audio features
    window: int = 64  # frames per window (training and generation); a multiple of `downsample`
    downsample: int = 4  # frames per VQ token
    overlap: int = 16  # frames shared by consecutive windows at generation (cross-faded)
    pca_dim: int = 0  # expression is reduced to this many PCA components (0 = learned projection of all dims)
    emotion_dim: int = 32  # width of the emotion embedding
    audio_dim_model: int = 128  # width of the audio projection
    emotion_dropout: float = 0.1  # training: share of samples whose emotion is replaced by "unknown"
    min_style_frames: int = 25  # shortest style clip accepted (1 s at 25 fps)
    continue_windows: bool = True  # generation: a second expression pass in which each window continues the previous one's tokens
    pose_passes: int = 2  # generation: parallel pose decoding passes, each conditioned on the previous pass's start poses
    style_offset: bool = True  # code expressions relative to a mean expression (the clip's in stage 1, the style
    # clip's in stage 2 and at generation) and add it back: carries the static part of a style (a smile, raised brows,
    # a speaker's resting mouth) whatever the training data's styles
    # Stage 2 also predicts a static offset per window (linear in the mean of the audio + style context and in the
    # style clip's mean expression), added to the decoded codes: how this speech's mean expression differs from
    # the style clip's (a few seconds of speech have their own mean mouth), which stage 1's codes, measured from
    # each clip's own mean, rarely hold.
    # Off by default so bundles saved without it still load; `erlnet train-motion` turns it on.
    offset_head: bool = False
    # Residual levels: one level of 2 x 256 codes per 4 frames cannot hold the mouth's detail (held-out
    # reconstruction ~1.1 mm mouth LMD); four levels reach ~0.6 mm for the same training time.
    expression_vq: VQConfig = field(default_factory=lambda: VQConfig(levels=4))
    pose_vq: VQConfig = field(default_factory=lambda: VQConfig(d_model=96, n_layers=2, codebook_size=128,
                                                                code_dim=16, n_groups=1, blink_weight=0.0))
    style: StyleConfig = field(default_factory=StyleConfig)
    # Expression: latents regressed through the frozen VQ decoder (per-frame accuracy); classifying codes
    # with cross-entropy learns far more slowly on a small corpus and its greedy tokens lose mouth detail.
    expression_decoder: DecoderConfig = field(default_factory=lambda: DecoderConfig(objective="latent",
                                                                                    feature_weight=1.0))
    # Head motion is only loosely tied to speech: sampling gives lively, varied motion where greedy
    # decoding tends towards a still head.
    pose_decoder: DecoderConfig = field(default_factory=lambda: DecoderConfig(d_model=128, n_layers=2,
                                                                              temperature=1.0, top_k=8))
    contrast: ContrastConfig = field(default_factory=ContrastConfig)

    def __post_init__(self) -> None:
        check_config(self)

    @classmethod
    def tiny(cls) -> ADFConfig:
        """A very small model for tests: trains in seconds on a CPU."""
        vq = dict(d_model=32, n_layers=1, n_heads=2, ff_mult=2, dropout=0.0, codebook_size=32, code_dim=8)
        dec = dict(d_model=32, n_context_layers=1, n_layers=1, n_heads=2, dropout=0.0)
        return cls(
            window=16, downsample=4, overlap=8, emotion_dim=8, audio_dim_model=32, emotion_dropout=0.0,
            expression_vq=VQConfig(**vq, n_groups=2),
            pose_vq=VQConfig(**vq, n_groups=1, blink_weight=0.0),
            style=StyleConfig(d_model=32, n_layers=1, n_heads=2, style_dim=16, dropout=0.0, max_frames=64),
            expression_decoder=DecoderConfig(**dec, objective="latent", feature_weight=1.0),
            pose_decoder=DecoderConfig(**dec, temperature=1.0, top_k=4),
            contrast=ContrastConfig(sub_window=4, embed_dim=16, hidden=32),
        )

    @property
    def tokens(self) -> int:
        """VQ tokens per window."""
        return self.window // self.downsample

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable nested dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ADFConfig:
        """Rebuild from `to_dict`; missing fields take defaults. FormatError for unknown fields or bad values."""
        try:
            return _build(cls, d, "motion config")
        except InputError as e:
            raise FormatError(str(e)) from e

    def setup(self, expression_dim: int, audio_dim: int, mouth_columns: np.ndarray | None = None,
              statistics: MotionStatistics | None = None) -> ADFModel:
        """Build the model; see `setup`."""
        return setup(expression_dim, audio_dim, self, mouth_columns, statistics)


@dataclass
class RegressorConfig:
    """Baseline: direct audio -> expression regression with a dilated temporal conv net (no VQ)."""

    fps: float = 25.0  # frames per second
    d_model: int = 128  # channels
    n_blocks: int = 4  # residual conv blocks, dilations 1, 2, 4, ... (receptive field ~ 2^n_blocks * kernel)
    kernel: int = 5  # temporal kernel size (odd)
    dropout: float = 0.1  # dropout inside the blocks
    emotion_dim: int = 16  # width of the emotion embedding
    pca_dim: int = 0  # as ADFConfig.pca_dim
    velocity_weight: float = 0.5  # weight of the velocity loss
    blink_weight: float = 1.0  # weight of the blink loss

    def __post_init__(self) -> None:
        _check_numbers(self, "regressor config")
        if self.kernel % 2 == 0:
            raise InputError(f"regressor config: kernel must be odd, got {self.kernel}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RegressorConfig:
        try:
            return _build(cls, d, "regressor config")
        except InputError as e:
            raise FormatError(str(e)) from e

    def setup(self, expression_dim: int, audio_dim: int,
              statistics: MotionStatistics | None = None) -> ExpressionRegressor:
        from erlnet.motion.adf import ExpressionRegressor

        _check_dims(expression_dim, audio_dim)
        model = ExpressionRegressor(self, expression_dim, audio_dim)
        if statistics is not None:
            model.set_statistics(statistics)
        return model


_NON_NEGATIVE = frozenset({"overlap", "pca_dim", "emotion_dropout", "dropout", "temperature", "top_k",
                           "feature_weight", "weight", "sync_weight", "velocity_weight", "blink_weight",
                           "commitment", "dead_fraction", "dead_steps", "latent_weight"})
_CHOICES: dict[str, tuple[str, ...]] = {"objective": get_args(Literal["codes", "latent"])}


def _check_numbers(cfg: Any, what: str) -> None:
    """Numbers must be finite and positive (non-negative for `_NON_NEGATIVE`); ints must be ints."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            continue
        if f.name in _CHOICES:
            if v not in _CHOICES[f.name]:
                raise InputError(f"{what}: {f.name} must be one of {', '.join(_CHOICES[f.name])}, got {v!r}")
            continue
        if f.type == "bool":
            if not isinstance(v, (bool, np.bool_)):
                raise InputError(f"{what}: {f.name} must be true or false, got {v!r}")
            object.__setattr__(cfg, f.name, bool(v))
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise InputError(f"{what}: {f.name} must be a number, got {v!r}")
        if not np.isfinite(v) or v < 0 or (v == 0 and f.name not in _NON_NEGATIVE):
            kind = "non-negative" if f.name in _NON_NEGATIVE else "positive"
            raise InputError(f"{what}: {f.name} must be a {kind} finite number, got {v!r}")
        if f.type == "int":
            if v != int(v):
                raise InputError(f"{what}: {f.name} must be an integer, got {v!r}")
            object.__setattr__(cfg, f.name, int(v))
        else:
            object.__setattr__(cfg, f.name, float(v))


def check_config(c: ADFConfig) -> None:
    """Validate an ADFConfig (InputError with the offending field)."""
    for name, sub in (("", c), ("expression_vq.", c.expression_vq), ("pose_vq.", c.pose_vq), ("style.", c.style),
                      ("expression_decoder.", c.expression_decoder), ("pose_decoder.", c.pose_decoder),
                      ("contrast.", c.contrast)):
        _check_numbers(sub, f"motion config {name}".strip())
    if c.window % c.downsample:
        raise InputError(f"motion config: window ({c.window}) must be a multiple of downsample ({c.downsample})")
    if not 1 <= c.overlap <= c.window // 2:
        raise InputError(f"motion config: overlap must be between 1 and window/2 = {c.window // 2}, got {c.overlap}")
    if c.window % c.contrast.sub_window:
        raise InputError(f"motion config: window ({c.window}) must be a multiple of contrast.sub_window "
                         f"({c.contrast.sub_window})")
    if c.emotion_dropout > 1:
        raise InputError(f"motion config: emotion_dropout must be in [0, 1], got {c.emotion_dropout}")
    for name, width, heads in (("expression_vq", c.expression_vq.d_model, c.expression_vq.n_heads),
                               ("pose_vq", c.pose_vq.d_model, c.pose_vq.n_heads),
                               ("style", c.style.d_model, c.style.n_heads),
                               ("expression_decoder", c.expression_decoder.d_model, c.expression_decoder.n_heads),
                               ("pose_decoder", c.pose_decoder.d_model, c.pose_decoder.n_heads)):
        if width % heads:
            raise InputError(f"motion config: {name}.d_model ({width}) must be divisible by n_heads ({heads})")
    for name, vq in (("expression_vq", c.expression_vq), ("pose_vq", c.pose_vq)):
        if vq.ema_decay >= 1:
            raise InputError(f"motion config: {name}.ema_decay must be below 1, got {vq.ema_decay}")
    if c.style.max_frames < c.min_style_frames:
        raise InputError("motion config: style.max_frames must be >= min_style_frames")


def _build(cls: type, d: Any, what: str) -> Any:
    """Instantiate a (nested) config dataclass from a dict, rejecting unknown keys."""
    if not isinstance(d, dict):
        raise InputError(f"{what}: expected a dict, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise InputError(f"{what}: unknown fields {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in d.items():
        default = getattr(cls(), name) if name in fields else None
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{what}.{name}")
        else:
            kwargs[name] = value
    return cls(**kwargs)


# ----------------------------------------------------------------------------- data statistics
@dataclass
class MotionStatistics:
    """Normalisation statistics of a corpus (all float32 numpy).

    expression_mean (D,); expression_basis (D, K) orthonormal PCA basis or None (K = D, identity);
    expression_scale: RMS of the centred (projected) expression, one number so that the loss stays
    proportional to the landmark error; audio_mean, audio_std (A,); delta_scale (6,): RMS of head-pose
    deltas from a window's first frame (axis-angle rad, translation m); offset_scale (6,): RMS of the
    pose relative to the clip's mean pose.
    """

    expression_mean: np.ndarray
    expression_scale: float
    audio_mean: np.ndarray
    audio_std: np.ndarray
    delta_scale: np.ndarray
    offset_scale: np.ndarray
    expression_basis: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain lists (JSON-serialisable)."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MotionStatistics:
        def arr(v: Any) -> np.ndarray | None:
            return None if v is None else np.asarray(v, np.float32)

        try:
            return cls(expression_mean=arr(d["expression_mean"]), expression_scale=float(d["expression_scale"]),
                       audio_mean=arr(d["audio_mean"]), audio_std=arr(d["audio_std"]),
                       delta_scale=arr(d["delta_scale"]), offset_scale=arr(d["offset_scale"]),
                       expression_basis=arr(d.get("expression_basis")))
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"motion statistics: missing or invalid field ({e})") from None


def _rotvec(r: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(r.reshape(-1, 3, 3)).as_rotvec().reshape(*r.shape[:-2], 3)


def _mean_rotation(r: np.ndarray) -> np.ndarray:
    """Chordal L2 mean of rotations (N, 3, 3) -> (3, 3)."""
    u, _, vt = np.linalg.svd(r.sum(axis=0))
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def compute_statistics(
    expressions: Sequence[np.ndarray],
    rotations: Sequence[np.ndarray],
    translations: Sequence[np.ndarray],
    audios: Sequence[np.ndarray | None] = (),
    window: int = 64,
    pca_dim: int = 0,
    max_rows: int = 20000,
    seed: int = 0,
) -> MotionStatistics:
    """Statistics of a corpus of clips: expressions (T_i, D), rotations (T_i, 3, 3), translations (T_i, 3) m,
    audios (T_i, A) or None for clips without speech (at least one clip needs audio; none given -> the
    audio normalisation is the identity of width 1, only for VQ-only use). `pca_dim > 0` fits a PCA basis
    on at most `max_rows` random frames."""
    if not len(expressions) or not (len(expressions) == len(rotations) == len(translations)):
        raise InputError("compute_statistics needs the same number (>= 1) of expression, rotation and "
                         "translation arrays")
    rng = np.random.default_rng(seed)
    expr = np.concatenate([np.asarray(e, np.float64) for e in expressions])
    if expr.ndim != 2 or not np.isfinite(expr).all():
        raise InputError(f"expressions must be finite (T, D) arrays, got {expr.shape}")
    if len(expr) > max_rows:
        expr = expr[rng.choice(len(expr), max_rows, replace=False)]
    mean = expr.mean(axis=0)
    centred = expr - mean
    basis = None
    if pca_dim > 0:
        if pca_dim > min(centred.shape):
            raise InputError(f"pca_dim={pca_dim} exceeds what {centred.shape[0]} frames of {centred.shape[1]} "
                             "dims support")
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        basis = vt[:pca_dim].T
        centred = centred @ basis
    scale = float(np.sqrt(np.mean(centred**2)))
    scale = max(scale, 1e-6)

    deltas, offsets = [], []
    for rot, trans in zip(rotations, translations, strict=True):
        rot = np.asarray(rot, np.float64)
        trans = np.asarray(trans, np.float64)
        if rot.ndim != 3 or rot.shape[1:] != (3, 3) or trans.shape != (len(rot), 3):
            raise InputError(f"rotation must be (T, 3, 3) and translation (T, 3), got {rot.shape}, {trans.shape}")
        r_mean = _mean_rotation(rot)
        offsets.append(np.concatenate([_rotvec(r_mean.T @ rot), trans - trans.mean(axis=0)], axis=1))
        for s in range(0, max(1, len(rot) - 1), max(1, window // 2)):
            r0, t0 = rot[s], trans[s]
            seg = slice(s, s + window)
            deltas.append(np.concatenate([_rotvec(r0.T @ rot[seg]), trans[seg] - t0], axis=1))
    floor = np.array([1e-3] * 3 + [1e-4] * 3)  # 0.06 degrees, 0.1 mm: keeps a still head from blowing up
    delta_scale = np.maximum(np.sqrt(np.mean(np.concatenate(deltas) ** 2, axis=0)), floor)
    offset_scale = np.maximum(np.sqrt(np.mean(np.concatenate(offsets) ** 2, axis=0)), floor)

    with_audio = [np.asarray(a, np.float64) for a in audios if a is not None]
    if with_audio:
        aud = np.concatenate(with_audio)
        if aud.ndim != 2 or not np.isfinite(aud).all():
            raise InputError(f"audio features must be finite (T, A) arrays, got {aud.shape}")
        a_mean, a_std = aud.mean(axis=0), aud.std(axis=0)
        a_std = np.maximum(a_std, 1e-3 * max(float(a_std.max()), 1e-6))
    else:
        a_mean, a_std = np.zeros(1), np.ones(1)
    f32 = np.float32
    return MotionStatistics(
        expression_mean=mean.astype(f32), expression_scale=scale, audio_mean=a_mean.astype(f32),
        audio_std=a_std.astype(f32), delta_scale=delta_scale.astype(f32), offset_scale=offset_scale.astype(f32),
        expression_basis=None if basis is None else basis.astype(f32),
    )


# ----------------------------------------------------------------------------- setup
def mouth_columns(expression_dim: int) -> np.ndarray:
    """Expression columns of the mouth points (topology.MOUTH) for the known landmark layouts.

    3 * 478 / 3 * 468: all points; 3 * |EXPRESSIVE|: the expressive subset. InputError otherwise
    (pass the columns to `setup` explicitly for another representation).
    """
    layouts = {3 * tp.N_LANDMARKS: np.arange(tp.N_LANDMARKS), 3 * tp.N_MESH: np.arange(tp.N_MESH),
               3 * len(tp.EXPRESSIVE): tp.EXPRESSIVE}
    if expression_dim not in layouts:
        raise InputError(f"cannot tell the mouth columns of a {expression_dim}-dim expression; pass "
                         "mouth_columns to setup")
    points = layouts[expression_dim]
    pos = np.searchsorted(points, tp.MOUTH)
    return (3 * pos[:, None] + np.arange(3)[None]).reshape(-1).astype(np.int64)


def _check_dims(expression_dim: Any, audio_dim: Any) -> None:
    for name, v in (("expression_dim", expression_dim), ("audio_dim", audio_dim)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")


def setup(expression_dim: int, audio_dim: int, config: ADFConfig | None = None,
          mouth_cols: np.ndarray | None = None, statistics: MotionStatistics | None = None) -> ADFModel:
    """Build an `ADFModel` for `expression_dim`-wide expressions and `audio_dim`-wide audio features.

    mouth_cols: expression columns of the mouth (for the contrastive loss); derived from the
    landmark layout when None (see `mouth_columns`). statistics: loaded with `set_statistics`.
    """
    from erlnet.motion.adf import ADFModel

    _check_dims(expression_dim, audio_dim)
    config = config or ADFConfig()
    cols = mouth_columns(int(expression_dim)) if mouth_cols is None else np.asarray(mouth_cols, np.int64)
    if cols.ndim != 1 or not len(cols) or cols.min() < 0 or cols.max() >= expression_dim:
        raise InputError(f"mouth columns must be a non-empty 1-D array of indices below {expression_dim}")
    if config.pca_dim > expression_dim:
        raise InputError(f"pca_dim ({config.pca_dim}) exceeds the expression dim ({expression_dim})")
    model = ADFModel(config, int(expression_dim), int(audio_dim), cols)
    if statistics is not None:
        model.set_statistics(statistics)
    return model
