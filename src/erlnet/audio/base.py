"""The `AudioEncoder` interface, its input checks, and the typed configs that choose an encoder.

An encoder turns `(S,) float32` mono audio into per-video-frame features `(T, feature_dim) float32`,
row `i` describing the audio around `(i + 0.5) / fps` seconds (docs/conventions.md).
Configs are plain dataclasses so they can be stored in manifests (`to_dict`) and rebuilt
(`encoder_from_dict`); each has `setup()` that builds its encoder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Union

import numpy as np
import tyro

from erlnet.errors import FormatError, InputError

if TYPE_CHECKING:
    from erlnet.audio.melformant import MelFormantEncoder

DEFAULT_FPS = 25.0


class AudioEncoder(ABC):
    """Maps mono audio to features aligned with video frames."""

    @property
    @abstractmethod
    def feature_dim(self) -> int:
        """Number of feature columns."""

    @property
    def fps(self) -> float:
        """Feature rows per second (= video frame rate)."""
        return DEFAULT_FPS

    @property
    @abstractmethod
    def cache_key(self) -> str:
        """Identifies the features: changes whenever they would change (class, version, config hash)."""

    @abstractmethod
    def encode(self, wav: np.ndarray, sr: int, n_frames: int | None = None) -> np.ndarray:
        """`(S,) float32` mono audio at `sr` Hz -> `(n_frames, feature_dim) float32`.

        Row `i` is centred on `(i + 0.5) / fps` s. `n_frames` defaults to `floor(duration * fps)`;
        the output is padded (as if the audio continued with silence) or cropped to exactly `n_frames`.
        Raises InputError for empty, too short, non-finite, non-float or non-1-D audio.
        """


def check_audio(wav: Any, sr: Any, fps: float, n_frames: Any = None) -> tuple[np.ndarray, int]:
    """Validate encoder input; returns (contiguous `(S,) float32` audio, number of output rows)."""
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise InputError(f"sample rate must be a positive integer in Hz, got {sr!r}")
    if not isinstance(wav, np.ndarray):
        raise InputError(f"audio must be a numpy array, got {type(wav).__name__}")
    if not np.issubdtype(wav.dtype, np.floating):
        raise InputError(f"audio must be float samples in [-1, 1], got dtype {wav.dtype}"
                         + (" (divide int16 PCM by 32768)" if wav.dtype == np.int16 else ""))
    if wav.ndim != 1:
        raise InputError(f"audio must be mono with shape (S,), got shape {wav.shape}; downmix channels first")
    if wav.size == 0:
        raise InputError("audio is empty")
    if not np.all(np.isfinite(wav)):
        raise InputError("audio contains NaN or infinite samples")
    # Small tolerance so that exactly one frame of samples counts as one frame despite float rounding.
    frames_in_audio = math.floor(wav.size * fps / sr + 1e-6)
    if frames_in_audio < 1:
        raise InputError(
            f"audio is {1000.0 * wav.size / sr:.1f} ms long, shorter than one video frame ({1000.0 / fps:.1f} ms)"
        )
    if n_frames is None:
        n_frames = frames_in_audio
    elif isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise InputError(f"n_frames must be a positive integer, got {n_frames!r}")
    return np.ascontiguousarray(wav, dtype=np.float32), int(n_frames)


def fit_length(wav: np.ndarray, n_samples: int) -> np.ndarray:
    """Zero-pad or crop `(S,)` audio to `(n_samples,)`: missing audio is treated as silence."""
    if wav.size >= n_samples:
        return wav[:n_samples]
    return np.concatenate([wav, np.zeros(n_samples - wav.size, dtype=wav.dtype)])


def config_digest(d: dict[str, Any]) -> str:
    """Stable short hash of a JSON-serialisable config dict (key order does not matter)."""
    blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _normalise_numbers(cfg: Any, non_negative: frozenset[str] = frozenset()) -> None:
    """Check a frozen config's numeric fields are positive (>= 0 for `non_negative`); store floats as float.

    Storing `25` as `25.0` keeps `to_dict` and hence cache keys identical for equal configs.
    """
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InputError(f"audio encoder config: {f.name} must be a number, got {value!r}")
        lowest = "non-negative" if f.name in non_negative else "positive"
        if not math.isfinite(value) or value < 0 or (value == 0 and lowest == "positive"):
            raise InputError(f"audio encoder config: {f.name} must be a {lowest} finite number, got {value!r}")
        if f.type == "int":
            if value != int(value):
                raise InputError(f"audio encoder config: {f.name} must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        object.__setattr__(cfg, f.name, value)


@dataclass(frozen=True)
class MelFormantConfig:
    """Hand-crafted features needing no downloads: sub-frame log-mel, energy, formants, pitch."""

    kind: ClassVar[str] = "melformant"

    sample_rate: int = 16000  # Hz the features are computed at; other input rates are resampled
    fps: float = DEFAULT_FPS  # feature rows per second (= video frame rate)
    n_mels: int = 80  # mel bands
    win_ms: float = 25.0  # STFT window length, ms (Hann)
    hop_ms: float = 10.0  # STFT hop, ms
    n_fft: int = 512  # FFT size, samples (>= window length)
    f_min: float = 0.0  # lowest mel band edge, Hz
    f_max: float = 8000.0  # highest mel band edge, Hz (<= sample_rate / 2)
    sub_frames: int = 2  # mel/energy sub-frames per video frame, so fast mouth motion keeps its timing
    max_formant_hz: float = 5500.0  # Praat formant ceiling: ~5000 for adult male, ~5500 for female voices
    n_lpc_formants: int = 5  # formants the Burg LPC looks for below the ceiling (F1-F3 are kept)
    formant_window_ms: float = 25.0  # Praat formant window length, ms (effective Gaussian window is 2x)
    pitch_floor_hz: float = 75.0  # lowest F0 searched, Hz (sets the pitch window: 3 periods)
    pitch_ceiling_hz: float = 500.0  # highest F0 searched, Hz

    def __post_init__(self) -> None:
        _normalise_numbers(self, non_negative=frozenset({"f_min"}))
        if not 0.0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise InputError(
                f"audio encoder config: need 0 <= f_min < f_max <= sample_rate/2, got f_min={self.f_min}, "
                f"f_max={self.f_max}, sample_rate={self.sample_rate}"
            )
        if self.win_ms * self.sample_rate / 1000.0 > self.n_fft:
            raise InputError(f"audio encoder config: n_fft={self.n_fft} is shorter than the {self.win_ms} ms window")
        if self.hop_ms > self.win_ms:
            raise InputError("audio encoder config: hop_ms must not exceed win_ms (STFT frames would skip audio)")
        if self.n_lpc_formants < 3:
            raise InputError("audio encoder config: n_lpc_formants must be >= 3 (F1-F3 are used)")
        if self.pitch_floor_hz >= self.pitch_ceiling_hz:
            raise InputError("audio encoder config: pitch_floor_hz must be below pitch_ceiling_hz")

    def setup(self) -> MelFormantEncoder:
        """Build the encoder."""
        # Imported here so configs stay importable without loading encoder implementations
        # (later encoders pull in large model code).
        from erlnet.audio.melformant import MelFormantEncoder

        return MelFormantEncoder(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict with a `type` tag, for manifests."""
        return {"type": self.kind, **dataclasses.asdict(self)}


# Configs of the pretrained-model encoders live beside their encoders; importing them here is cheap
# (model libraries are imported only by `setup()`). At the bottom of the module because they import
# the interface above (the package `__init__` always imports this module first).
from erlnet.audio.hf import HubertConfig, Wav2Vec2Config  # noqa: E402
from erlnet.audio.whisper import WhisperConfig  # noqa: E402

# A union of the configs; for the CLI (tyro) each is a subcommand named by its `kind`, e.g.
# `erlnet preprocess VIDEO -o OUT audio:wav2vec2 --audio.model-path DIR --audio.layer 9`.
AudioEncoderConfig = Union[  # noqa: UP007 (Annotated members)
    Annotated[MelFormantConfig, tyro.conf.subcommand(MelFormantConfig.kind)],
    Annotated[Wav2Vec2Config, tyro.conf.subcommand(Wav2Vec2Config.kind)],
    Annotated[HubertConfig, tyro.conf.subcommand(HubertConfig.kind)],
    Annotated[WhisperConfig, tyro.conf.subcommand(WhisperConfig.kind)],
]
_CONFIG_TYPES: tuple[type[AudioEncoderConfig], ...] = (MelFormantConfig, Wav2Vec2Config, HubertConfig, WhisperConfig)


def config_from_dict(d: dict[str, Any]) -> AudioEncoderConfig:
    """Rebuild a config written by `to_dict`; missing fields take their defaults.

    Raises FormatError for an unknown encoder type, unknown fields or invalid values.
    """
    if not isinstance(d, dict) or "type" not in d:
        raise FormatError(f"audio encoder config must be a dict with a 'type' key, got {d!r}")
    by_kind = {c.kind: c for c in _CONFIG_TYPES}
    cls = by_kind.get(d["type"])
    if cls is None:
        raise FormatError(f"unknown audio encoder type {d['type']!r}; known: {', '.join(sorted(by_kind))}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names - {"type"})
    if unknown:
        raise FormatError(f"unknown fields for audio encoder {d['type']!r}: {', '.join(unknown)}")
    try:
        return cls(**{k: v for k, v in d.items() if k != "type"})
    except InputError as e:
        raise FormatError(str(e)) from e


def encoder_from_dict(d: dict[str, Any]) -> AudioEncoder:
    """Build the encoder described by a manifest dict (see `config_from_dict`)."""
    return config_from_dict(d).setup()
