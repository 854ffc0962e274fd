"""Audio file I/O: decode any container PyAV opens to 16 kHz mono float32, write 16-bit WAV, resample.

Audio arrays follow docs/conventions.md: `(S,) float32` mono in [-1, 1], `S` samples at `sr` Hz.
"""

from __future__ import annotations

import os
import tempfile
import wave
from math import gcd
from pathlib import Path

import av
import numpy as np
from scipy.signal import resample_poly

from erlnet.errors import InputError

DEFAULT_SR = 16000


def load_audio(path: str | os.PathLike[str], sr: int = DEFAULT_SR) -> np.ndarray | None:
    """Decode the first audio stream of `path` (wav, flac, mp3, mp4/mov, mpg, ...) to `(S,) float32`.

    Channels are averaged to mono and resampled to `sr` Hz; samples are clipped to [-1, 1].
    Samples start at the first decoded audio sample (any container start offset is not applied).
    Returns None when the file has no audio stream (e.g. a silent video).
    Raises InputError for a missing, unreadable or corrupt file.
    """
    p = Path(path)
    _check_rate(sr, "sr")
    if not p.exists():
        raise InputError(f"audio file not found: {p}")
    if not p.is_file():
        raise InputError(f"not a file: {p}")
    try:
        with av.open(str(p)) as container:
            if not container.streams.audio:
                return None
            chunks = _decode_mono(container, container.streams.audio[0], sr)
    except av.FFmpegError as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise InputError(f"cannot decode audio from {p}: corrupt or not an audio/video file ({reason})") from e
    if not chunks:
        raise InputError(f"audio stream of {p} contains no decodable samples")
    wav = np.concatenate(chunks).astype(np.float32, copy=False)
    if not np.all(np.isfinite(wav)):
        raise InputError(f"audio decoded from {p} contains NaN or infinite samples")
    # Lossy decoders (AAC, MP3) overshoot full scale slightly; the convention is [-1, 1].
    return np.clip(wav, -1.0, 1.0, out=wav)


def _decode_mono(container: av.container.InputContainer, stream: av.AudioStream, sr: int) -> list[np.ndarray]:
    """Decode `stream` into a list of mono float32 chunks at `sr` Hz."""
    chunks: list[np.ndarray] = []
    resampler: av.AudioResampler | None = None
    setup: tuple[str, str, int] | None = None
    for frame in container.decode(stream):
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if key != setup:
            # A resampler is bound to one input format; streams may change it mid-way (e.g. mpg).
            if resampler is not None:
                chunks += [_planar_mean(f) for f in resampler.resample(None)]
            # Keep the channel layout here and average channels ourselves: FFmpeg's stereo->mono
            # matrix sums channels at -3 dB each, which can exceed full scale.
            resampler = av.AudioResampler(format="fltp", layout=None, rate=sr)
            setup = key
        chunks += [_planar_mean(f) for f in resampler.resample(frame)]
    if resampler is not None:
        chunks += [_planar_mean(f) for f in resampler.resample(None)]
    return [c for c in chunks if c.size]


def _planar_mean(frame: av.AudioFrame) -> np.ndarray:
    """(C, n) planar float frame -> (n,) float32 channel mean."""
    return frame.to_ndarray().mean(axis=0, dtype=np.float32)


def save_wav(path: str | os.PathLike[str], wav: np.ndarray, sr: int = DEFAULT_SR) -> None:
    """Write `(S,)` mono audio (float in [-1, 1], clipped; or int16) as 16-bit PCM WAV.

    Atomic: writes a temporary file next to `path`, then renames it, so readers never see a partial file.
    Parent directories are created.
    """
    _check_rate(sr, "sr")
    pcm = _to_pcm16(wav)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f, wave.open(f, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sr)
            w.writeframes(pcm.astype("<i2", copy=False).tobytes())
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; a wav is an ordinary output
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _to_pcm16(wav: np.ndarray) -> np.ndarray:
    """(S,) float in [-1, 1] or int16 -> (S,) int16."""
    if not isinstance(wav, np.ndarray) or wav.ndim != 1:
        shape = getattr(wav, "shape", type(wav).__name__)
        raise InputError(f"audio to save must be a 1-D numpy array (S,), got {shape}")
    if wav.dtype == np.int16:
        return wav
    if not np.issubdtype(wav.dtype, np.floating):
        raise InputError(f"audio to save must be float in [-1, 1] or int16, got {wav.dtype}")
    if not np.all(np.isfinite(wav)):
        raise InputError("audio to save contains NaN or infinite samples")
    return np.round(np.clip(wav, -1.0, 1.0) * 32767.0).astype(np.int16)


def resample(wav: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample `(S,)` audio from `sr_in` to `sr_out` Hz (polyphase, anti-aliased) -> `(S',) float32`.

    `S' = ceil(S * sr_out / sr_in)`. Returns a float32 copy when the rates are equal.
    """
    _check_rate(sr_in, "sr_in")
    _check_rate(sr_out, "sr_out")
    if not isinstance(wav, np.ndarray) or wav.ndim != 1:
        shape = getattr(wav, "shape", type(wav).__name__)
        raise InputError(f"audio to resample must be a 1-D numpy array (S,), got {shape}")
    if sr_in == sr_out or wav.size == 0:
        return wav.astype(np.float32, copy=True)
    g = gcd(sr_in, sr_out)
    return resample_poly(wav, sr_out // g, sr_in // g).astype(np.float32, copy=False)


def _check_rate(sr: int, name: str) -> None:
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise InputError(f"{name} must be a positive integer sample rate in Hz, got {sr!r}")
