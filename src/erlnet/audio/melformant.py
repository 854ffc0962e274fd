"""`MelFormantEncoder`: hand-crafted per-video-frame speech features that need no downloads.

Each row `i` describes video frame `i`, the interval `[i, i + 1) / fps` s centred on `(i + 0.5) / fps`.
The interval is split into `K = sub_frames` equal sub-frames (earliest first) so that mouth motion
faster than the video rate keeps its timing. Column layout (`feature_layout`, defaults K=2, M=80):

    mel         K*M  log-mel power of each sub-frame, sub-frame-major: columns [k*M, (k+1)*M) = sub-frame k.
                     Mean power of the STFT frames (25 ms Hann, 10 ms hop) centred inside the sub-frame.
    energy      K    log RMS of the samples inside each sub-frame (exact boundaries, no window).
    formants    3    F1, F2, F3 in kHz (Praat Burg at the frame centre).
    bandwidths  3    log10(B / 100 Hz) of B1, B2, B3, clipped to [-1, 2].
    formant_defined 1  fraction of F1-F3 Praat found at this frame; undefined ones are interpolated
                     in time from neighbouring frames (never NaN).
    log_f0      1    log2(F0 / 200 Hz) (Praat autocorrelation pitch); interpolated across unvoiced frames.
    voiced      1    1 where Praat finds the frame voiced, else 0.

Log powers are in dB re full scale mapped as `(dB + 50) / 50` with a floor at -100 dB, so silence is
-1 and a full-scale signal is about +1.
"""

from __future__ import annotations

import math

import numpy as np
import parselmouth
import scipy.fft
from parselmouth.praat import call

from erlnet.audio.base import AudioEncoder, MelFormantConfig, check_audio, config_digest, fit_length
from erlnet.io.audio import resample

_DB_FLOOR = -100.0  # dB re full scale; keeps digital silence finite
_F0_REF_HZ = 200.0
_DEFAULT_FORMANTS_HZ = (500.0, 1500.0, 2500.0)  # uniform 17.5 cm tube; used only if none are ever found
_DEFAULT_BANDWIDTH_HZ = 100.0


class MelFormantEncoder(AudioEncoder):
    """Sub-frame log-mel + energy + formants + pitch; see the module docstring for the layout."""

    VERSION = 1  # bump when the computation changes for the same config

    def __init__(self, config: MelFormantConfig | None = None) -> None:
        self._cfg = config if config is not None else MelFormantConfig()
        c = self._cfg
        self._win = round(c.win_ms * c.sample_rate / 1000.0)
        self._hop = round(c.hop_ms * c.sample_rate / 1000.0)
        self._mel_fb = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.f_min, c.f_max)
        self._window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(self._win) / self._win)).astype(np.float32)

    @property
    def config(self) -> MelFormantConfig:
        return self._cfg

    @property
    def fps(self) -> float:
        return self._cfg.fps

    @property
    def feature_layout(self) -> dict[str, slice]:
        """Column slices by feature name, in column order."""
        k, m = self._cfg.sub_frames, self._cfg.n_mels
        sizes = {"mel": k * m, "energy": k, "formants": 3, "bandwidths": 3, "formant_defined": 1,
                 "log_f0": 1, "voiced": 1}
        out, start = {}, 0
        for name, size in sizes.items():
            out[name] = slice(start, start + size)
            start += size
        return out

    @property
    def feature_dim(self) -> int:
        return self._cfg.sub_frames * (self._cfg.n_mels + 1) + 9

    @property
    def cache_key(self) -> str:
        return f"{type(self).__name__}-v{self.VERSION}-{config_digest(self._cfg.to_dict())}"

    def encode(self, wav: np.ndarray, sr: int, n_frames: int | None = None) -> np.ndarray:
        """`(S,)` mono audio at `sr` Hz -> `(n_frames, feature_dim) float32`; see the module docstring."""
        c = self._cfg
        wav, n_frames = check_audio(wav, sr, c.fps, n_frames)
        wav = resample(wav, int(sr), c.sample_rate)
        # Audio past the last frame is kept for a short margin so the analysis windows of the last
        # frames see real audio; a 0.1 s margin exceeds every window used here.
        wav = fit_length(wav, math.ceil((n_frames / c.fps + 0.1) * c.sample_rate))

        k = c.sub_frames
        n_sub = n_frames * k
        mel_power, mel_times = self._mel_power(wav)
        mel = pool_by_time(mel_power, mel_times, c.fps * k, n_sub).reshape(n_frames, k * c.n_mels)
        energy = subframe_mean_square(wav, c.sample_rate, c.fps * k, n_sub).reshape(n_frames, k)
        praat_wav, praat_sr = _formant_rate(wav, c)
        formants = formant_features(praat_wav, praat_sr, c, n_frames)
        pitch = pitch_features(praat_wav, praat_sr, c, n_frames)
        feats = np.concatenate([power_to_feature(mel), power_to_feature(energy), formants, pitch], axis=1)
        return np.ascontiguousarray(feats, dtype=np.float32)

    def _mel_power(self, wav: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Mel power `(J, n_mels)` of STFT frames and their centre times `(J,)` s.

        Frame `j` is centred near `(j + 0.5) * hop`, so frames tile time like the video frames do.
        """
        sr, win, hop = self._cfg.sample_rate, self._win, self._hop
        left = (win - hop) // 2
        padded = np.concatenate([np.zeros(left, np.float32), wav, np.zeros(win, np.float32)])
        n = (padded.size - win) // hop + 1
        frames = np.lib.stride_tricks.sliding_window_view(padded, win)[::hop][:n]
        # Scale so a full-scale sine has power ~1 (0 dB) in its peak bin.
        scale = np.float32((2.0 / self._window.sum()) ** 2)
        out = np.empty((n, self._cfg.n_mels), np.float32)
        for s in range(0, n, chunk):  # chunks bound memory for long audio
            spec = scipy.fft.rfft(frames[s : s + chunk] * self._window, n=self._cfg.n_fft, axis=1)
            power = spec.real**2 + spec.imag**2
            out[s : s + chunk] = (power @ self._mel_fb.T) * scale
        times = (np.arange(n) * hop - left + win / 2.0) / sr
        return out, times


def power_to_feature(power: np.ndarray) -> np.ndarray:
    """Mean-square power (1 = full scale) -> `(dB + 50) / 50` with a -100 dB floor (silence = -1)."""
    db = 10.0 * np.log10(np.maximum(power, 10.0 ** (_DB_FLOOR / 10.0)))
    return ((db + 50.0) / 50.0).astype(np.float32)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear (3 mel per 200 Hz) below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    lin = f * 3.0 / 200.0
    log = 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f < 1000.0, lin, log)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    lin = m * 200.0 / 3.0
    log = 1000.0 * np.exp((m - 15.0) * np.log(6.4) / 27.0)
    return np.where(m < 15.0, lin, log)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Triangular filters with unit peak on the Slaney mel scale -> `(n_mels, n_fft // 2 + 1) float32`."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / sr)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rise = (bins[None] - lo) / (mid - lo)
    fall = (hi - bins[None]) / (hi - mid)
    return np.clip(np.minimum(rise, fall), 0.0, None).astype(np.float32)


def pool_by_time(values: np.ndarray, times: np.ndarray, rate: float, n_bins: int) -> np.ndarray:
    """Average rows of `values (J, D)` whose `times (J,)` s fall in bin `b = [b, b+1) / rate` -> `(n_bins, D)`.

    `times` must be increasing. A bin containing no row takes the row nearest its centre.
    """
    idx = np.floor(times * rate + 1e-9).astype(np.int64)
    keep = (idx >= 0) & (idx < n_bins)
    vals, idx = values[keep], idx[keep]
    out = np.empty((n_bins, values.shape[1]), values.dtype)
    counts = np.bincount(idx, minlength=n_bins)
    filled = counts > 0
    if vals.shape[0]:
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[filled]
        # reduceat sums contiguous runs exactly (no cumulative-sum cancellation for quiet after loud).
        out[filled] = np.add.reduceat(vals, starts, axis=0) / counts[filled, None]
    if not filled.all():
        centres = (np.flatnonzero(~filled) + 0.5) / rate
        nearest = np.clip(np.searchsorted(times, centres), 1, len(times) - 1)
        nearest -= (centres - times[nearest - 1]) < (times[nearest] - centres)
        out[~filled] = values[nearest]
    return out


def subframe_mean_square(wav: np.ndarray, sr: int, rate: float, n_bins: int) -> np.ndarray:
    """Mean square of `wav (S,)` over exact intervals `[b, b+1) / rate` s -> `(n_bins,)`; zero past the end."""
    bounds = np.round(np.arange(n_bins + 1) * (sr / rate)).astype(np.int64)
    wav = fit_length(wav, int(bounds[-1]))
    sq = wav.astype(np.float64) ** 2
    lengths = np.diff(bounds)
    sums = np.add.reduceat(sq, bounds[:-1]) if sq.size else np.zeros(n_bins)
    return np.where(lengths > 0, sums / np.maximum(lengths, 1), 0.0)


def _praat_sound(wav: np.ndarray, sr: int, n_frames: int, dt: float, window_s: float) -> parselmouth.Sound:
    """A Praat Sound cut from `wav (S,)` so Praat's analysis frames land on video frame centres.

    Praat places `n = floor((duration - window) / dt) + 1` frames symmetrically about the middle of
    the sound; a span of `(n_frames - 1) * dt + window + dt / 2` centred on `n_frames * dt / 2` gives
    exactly `n_frames` frames at `(i + 0.5) * dt`. Callers still read Praat's frame times, so a
    different placement only costs interpolation, not correctness.
    """
    span = (n_frames - 1) * dt + window_s + 0.5 * dt
    s0 = round((n_frames * dt - span) / 2.0 * sr)
    s1 = s0 + round(span * sr)
    seg = wav[max(s0, 0) : max(s1, 0)]
    seg = np.concatenate([np.zeros(max(-s0, 0), wav.dtype), seg, np.zeros(s1 - s0 - max(-s0, 0) - seg.size, wav.dtype)])
    # Sample q covers [q, q + 1) / sr here as in Praat (which centres it at start_time + (q + 0.5) / sr).
    return parselmouth.Sound(seg.astype(np.float64), sampling_frequency=float(sr), start_time=s0 / sr)


def _fill_undefined(times: np.ndarray, values: np.ndarray, defined: np.ndarray, default: float) -> np.ndarray:
    """Linear interpolation in time over undefined entries of `values (N,)`; `default` if none are defined."""
    if not defined.any():
        return np.full_like(values, default)
    return np.interp(times, times[defined], values[defined])


def _formant_rate(wav: np.ndarray, cfg: MelFormantConfig) -> tuple[np.ndarray, int]:
    """Resample `(S,)` audio at `cfg.sample_rate` to 2 x the formant ceiling (when an integer rate).

    Praat's Burg resamples to that rate internally with a slow sinc; polyphase here is several times
    faster and Praat then skips its own step. Pitch reuses the same signal (its ceiling is far lower).
    """
    fs = 2.0 * cfg.max_formant_hz
    if fs.is_integer() and int(fs) != cfg.sample_rate:
        return resample(wav, cfg.sample_rate, int(fs)), int(fs)
    return wav, cfg.sample_rate


def formant_features(wav: np.ndarray, sr: int, cfg: MelFormantConfig, n_frames: int) -> np.ndarray:
    """F1-F3 (kHz), log bandwidths and fraction defined at each frame centre -> `(n_frames, 7) float32`.

    `wav (S,)` at `sr` Hz starts at time 0 (ideally `sr = 2 * cfg.max_formant_hz`, see `_formant_rate`).
    """
    dt = 1.0 / cfg.fps
    window = cfg.formant_window_ms / 1000.0
    sound = _praat_sound(wav, sr, n_frames, dt, 2.0 * window)  # Praat's Gaussian window spans 2x
    formant = sound.to_formant_burg(dt, cfg.n_lpc_formants, cfg.max_formant_hz, window, 50.0)
    times = np.asarray(formant.xs())
    centres = (np.arange(n_frames) + 0.5) * dt
    freqs, bands, defined = [], [], []
    for k in (1, 2, 3):
        f = np.asarray(call(formant, "To Matrix", k).values[0], dtype=np.float64)  # 0 where undefined
        # Praat has no bulk bandwidth export; at frame times this reads the frame's own value.
        b = np.array([formant.get_bandwidth_at_time(k, t) for t in times])
        ok = np.isfinite(f) & np.isfinite(b) & (f > 0) & (b > 0)
        freqs.append(_fill_undefined(times, f, ok, _DEFAULT_FORMANTS_HZ[k - 1]))
        bands.append(_fill_undefined(times, b, ok, _DEFAULT_BANDWIDTH_HZ))
        defined.append(ok.astype(np.float64))
    f_khz = np.stack(freqs, 1) / 1000.0
    log_b = np.clip(np.log10(np.stack(bands, 1) / 100.0), -1.0, 2.0)
    frac = np.mean(defined, axis=0)[:, None]
    per_frame = np.concatenate([f_khz, log_b, frac], axis=1)
    return _resample_rows(times, per_frame, centres).astype(np.float32)


def pitch_features(wav: np.ndarray, sr: int, cfg: MelFormantConfig, n_frames: int) -> np.ndarray:
    """log2(F0 / 200 Hz) (interpolated across unvoiced frames) and voiced flag -> `(n_frames, 2) float32`.

    `wav (S,)` at `sr` Hz starts at time 0.
    """
    dt = 1.0 / cfg.fps
    window = 3.0 / cfg.pitch_floor_hz  # Praat's autocorrelation method uses 3 periods of the floor
    sound = _praat_sound(wav, sr, n_frames, dt, window)
    pitch = sound.to_pitch_ac(time_step=dt, pitch_floor=cfg.pitch_floor_hz, pitch_ceiling=cfg.pitch_ceiling_hz)
    times = np.asarray(pitch.xs())
    f0 = np.asarray(pitch.selected_array["frequency"], dtype=np.float64)
    voiced = f0 > 0
    log_f0 = _fill_undefined(times, np.log2(np.where(voiced, f0, _F0_REF_HZ) / _F0_REF_HZ), voiced, 0.0)
    per_frame = np.stack([log_f0, voiced.astype(np.float64)], axis=1)
    return _resample_rows(times, per_frame, (np.arange(n_frames) + 0.5) * dt).astype(np.float32)


def _resample_rows(times: np.ndarray, rows: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Linear interpolation of `rows (N, D)` sampled at `times (N,)` onto `at (T,)` -> `(T, D)`."""
    if times.size == rows.shape[0] == at.size and np.allclose(times, at, atol=1e-6):
        return rows
    return np.stack([np.interp(at, times, rows[:, d]) for d in range(rows.shape[1])], axis=1)
