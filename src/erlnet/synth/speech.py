"""Speech for the synthetic subject, and the fixed audio -> mouth mapping.

Speech comes from a user file, a local text-to-speech program (espeak-ng, espeak or flite) or a
built-in formant synthesiser of speech-like syllables. Whatever the source, the mouth is driven by
the same deterministic function of the audio (`mouth_drive`), so audio -> mouth is learnable.
Audio arrays are `(S,) float32` mono in [-1, 1] at 16 kHz (docs/conventions.md).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import lfilter

from erlnet.errors import InputError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SPEECH_SOURCES = ("auto", "file", "tts", "builtin")

# Read by the TTS engine when no text is given; public-domain style prose (written for this project).
DEFAULT_TEXT = (
    "The weather station on the hill records the wind every ten minutes. "
    "Most days the numbers barely change, but in autumn the storms come quickly from the west. "
    "We walked along the river until the light began to fade, and then we turned back toward the town. "
    "Please remember to bring a map, some water and a warm coat when you go out tomorrow morning. "
    "A good speaker pauses now and then, so that the listener can follow every idea. "
    "The old bridge was repaired last summer, and the traffic moves much faster now. "
    "Seven small boats waited in the harbour while the fishermen mended their nets. "
)


@dataclass(frozen=True)
class Speech:
    """Speech audio and where it came from."""

    wav: np.ndarray  # (S,) float32 mono in [-1, 1]
    sr: int  # sample rate, Hz
    source: str  # "file:<path>", "tts:<program>" or "builtin"


@dataclass(frozen=True)
class MouthDrive:
    """Per-video-frame mouth parameters derived from audio, before any style scaling."""

    open: np.ndarray  # (T,) float32 in [0, 1]: 0 closed lips, 1 a loud open vowel
    width: np.ndarray  # (T,) float32 in [-1, 1]: + spread lips (front vowels), - rounded (back vowels)
    loudness: np.ndarray  # (T,) float32 in [0, 1]: band loudness relative to the clip's speech level


# ----------------------------------------------------------------------------------------------
# Sources


def load_speech_file(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any audio/video file to `(S,) float32` at `sr`. InputError if missing or without audio."""
    from erlnet.io.audio import load_audio

    wav = load_audio(Path(path), sr=sr)
    if wav is None:
        raise InputError(f"{path}: has no audio stream")
    if wav.size < sr // 25:
        raise InputError(f"{path}: audio is shorter than one video frame")
    return wav


def tts_programs() -> list[str]:
    """Text-to-speech programs found on PATH, in order of preference."""
    return [name for name in ("espeak-ng", "espeak", "flite") if shutil.which(name)]


def tts_argv(program: str, exe: str, text: str, out: Path) -> list[str]:
    if program == "flite":
        return [exe, "-t", text, "-o", str(out)]
    return [exe, "-v", "en-us", "-s", "165", "-w", str(out), text]  # espeak-ng / espeak


def tts_speech(seconds: float, rng: np.random.Generator, sr: int = SAMPLE_RATE, text: str | None = None) -> Speech:
    """Speak `text` (default: DEFAULT_TEXT from a seed-chosen sentence) with the first TTS program
    found, repeated until `seconds` are filled -> Speech. InputError if none is installed or it fails."""
    programs = tts_programs()
    if not programs:
        raise InputError("no text-to-speech program found (install espeak-ng or flite)")
    program = programs[0]
    exe = shutil.which(program) or program
    if text is None:
        sentences = [s.strip() + "." for s in DEFAULT_TEXT.split(".") if s.strip()]
        k = int(rng.integers(len(sentences)))
        text = " ".join(sentences[k:] + sentences[:k])
    pause = np.zeros(int(0.4 * sr), np.float32)
    with tempfile.TemporaryDirectory(prefix="erlnet-tts-") as tmp:
        out = Path(tmp) / "tts.wav"
        try:
            subprocess.run(tts_argv(program, exe, text, out), check=True, capture_output=True, timeout=120)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            raise InputError(f"text-to-speech with {program} failed: {e}") from e
        wav = load_speech_file(out, sr)
    reps = int(np.ceil(seconds * sr / (wav.size + pause.size)))
    full = np.concatenate([np.concatenate([wav, pause])] * max(reps, 1))
    return Speech(wav=fit_length(full, round(seconds * sr)), sr=sr, source=f"tts:{program}")


def fit_length(wav: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad `(S,)` audio to exactly `n` samples -> float32."""
    out = np.zeros(n, np.float32)
    m = min(n, wav.size)
    out[:m] = wav[:m]
    return out


# ----------------------------------------------------------------------------------------------
# Built-in formant synthesiser

# (F1, F2, F3) in Hz of an adult female voice.
_VOWELS = np.array(
    [
        [850, 1220, 2810],  # a
        [860, 2050, 2850],  # ae
        [600, 2300, 2950],  # e
        [310, 2790, 3310],  # i
        [500, 900, 2800],  # o
        [370, 950, 2670],  # u
        [760, 1400, 2780],  # uh
        [500, 1500, 2700],  # schwa
    ],
    dtype=np.float64,
)
_BANDWIDTHS = (90.0, 110.0, 170.0)
_BLOCK = 160  # samples per block of the time-varying formant filter (10 ms at 16 kHz)
_SEGMENT_S = 30.0  # long built-in speech is made in independent segments (bounded working memory)
_HOPS_PER_CHUNK = 4096  # STFT frames analysed at once by mouth_drive


@dataclass
class _Tracks:
    """Sample-rate control tracks of the synthesiser."""

    f0: np.ndarray  # (S,) Hz
    voice: np.ndarray  # (S,) voiced-source amplitude
    aspiration: np.ndarray  # (S,) noise through the formants (h, aspiration)
    frication: np.ndarray  # (S,) noise through a band-pass (s, sh, f, bursts)
    fric_band: np.ndarray  # (S,) 0 = low band (sh, f), 1 = high band (s, bursts)
    formants: np.ndarray  # (S // _BLOCK + 1, 3) Hz per block


def _ramp(n: int, attack: int, release: int) -> np.ndarray:
    """Raised-cosine envelope of n samples with the given attack/release lengths."""
    env = np.ones(n)
    a, r = min(attack, n // 2), min(release, n // 2)
    if a:
        env[:a] = 0.5 - 0.5 * np.cos(np.pi * np.arange(a) / a)
    if r:
        env[n - r :] = 0.5 + 0.5 * np.cos(np.pi * np.arange(r) / r)
    return env


def _score(n: int, sr: int, rng: np.random.Generator) -> _Tracks:
    """Lay out phrases of words of syllables (consonant + vowel) and pauses over n samples."""
    f0 = np.zeros(n)
    voice, asp, fric, band = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    fmt_t: list[float] = [0.0]
    fmt_v: list[np.ndarray] = [_VOWELS[7]]
    base_f0 = rng.uniform(175.0, 215.0)
    pos = int(rng.uniform(0.15, 0.5) * sr)

    def seg(seconds: float) -> tuple[int, int]:
        nonlocal pos
        a, pos = pos, min(n, pos + int(seconds * sr))
        return a, pos

    while pos < n:
        n_syll = int(rng.integers(3, 12))
        start = pos
        phrase_len = n_syll * 0.24 * sr
        for k in range(n_syll):
            if pos >= n:
                break
            kind = rng.choice(4, p=[0.25, 0.35, 0.25, 0.15])  # none, plosive, fricative, nasal
            vowel = _VOWELS[rng.integers(len(_VOWELS))]
            if kind == 1:  # plosive: closure (silence), burst, optional aspiration
                seg(rng.uniform(0.04, 0.08))
                a, b = seg(0.012)
                fric[a:b], band[a:b] = 0.5, 1.0
                if rng.random() < 0.5:
                    a, b = seg(rng.uniform(0.02, 0.045))
                    asp[a:b] = 0.12 * _ramp(b - a, 16, 80)
                    fmt_t.append(a / sr)
                    fmt_v.append(vowel)
            elif kind == 2:  # fricative
                a, b = seg(rng.uniform(0.06, 0.12))
                fric[a:b] = rng.uniform(0.15, 0.35) * _ramp(b - a, 160, 160)
                band[a:b] = float(rng.random() < 0.6)
            elif kind == 3:  # nasal: quiet low-formant hum with closed lips
                a, b = seg(rng.uniform(0.05, 0.08))
                voice[a:b] = 0.3 * _ramp(b - a, 80, 40)
                fmt_t += [a / sr, b / sr]
                fmt_v += [np.array([260.0, 1100.0, 2500.0])] * 2
            a, b = seg(rng.uniform(0.09, 0.22))  # vowel nucleus
            stress = 1.0 + 0.6 * (rng.random() < 0.3)
            voice[a:b] = min(1.0, 0.55 * stress) * _ramp(b - a, 320, 640)
            fmt_t += [a / sr + 0.02, b / sr - 0.01]
            fmt_v += [vowel, vowel]
            # pitch: phrase declination, a rise on stressed syllables, slow jitter
            frac = (np.arange(a, b) - start) / max(phrase_len, 1.0)
            f0[a:b] = base_f0 * (1.12 - 0.25 * np.clip(frac, 0, 1)) * (1.0 + 0.08 * (stress - 1.0) / 0.6)
            f0[a:b] *= 1.0 + 0.03 * np.sin(2 * np.pi * rng.uniform(2, 5) * np.arange(b - a) / sr)
            if k < n_syll - 1 and rng.random() < 0.3:
                seg(rng.uniform(0.02, 0.1))  # word gap
        seg(rng.uniform(0.25, 0.7))  # phrase pause
    # Formant targets are held between anchors and glide over ~25 ms (coarticulation).
    order = np.argsort(fmt_t, kind="stable")
    t_block = (np.arange(n // _BLOCK + 1) * _BLOCK) / sr
    tt = np.asarray(fmt_t)[order]
    vv = np.asarray(fmt_v)[order]
    formants = np.stack([np.interp(t_block, tt, vv[:, j]) for j in range(3)], axis=1)
    formants = gaussian_filter1d(formants, sigma=2.5, axis=0, mode="nearest")
    f0[f0 == 0] = base_f0
    return _Tracks(f0=f0, voice=voice, aspiration=asp, frication=fric, fric_band=band, formants=formants)


def _resonate(x: np.ndarray, formants: np.ndarray, sr: int) -> np.ndarray:
    """Cascade of three 2-pole resonators (one 6th-order filter) whose frequencies change every
    _BLOCK samples; the filter state carries over between blocks. x (S,), formants (blocks, 3) Hz."""
    radii = np.exp(-np.pi * np.asarray(_BANDWIDTHS) / sr)
    y = np.empty(x.size)
    zi = np.zeros(6)
    for i in range(0, x.size, _BLOCK):
        theta = 2 * np.pi * formants[i // _BLOCK] / sr
        a = np.array([1.0])
        for r, th in zip(radii, theta, strict=True):
            a = np.convolve(a, [1.0, -2 * r * np.cos(th), r * r])
        # unit gain at DC keeps levels comparable across formant values
        y[i : i + _BLOCK], zi = lfilter([a.sum()], a, x[i : i + _BLOCK], zi=zi)
    return y


def builtin_speech(seconds: float, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> Speech:
    """Speech-like audio: syllables of voiced pulse trains with varying pitch through formant
    resonators, plosives, fricatives, nasals and pauses. Deterministic for the generator state."""
    n = max(1, round(seconds * sr))
    seg = round(_SEGMENT_S * sr)
    wav = np.concatenate([_babble(min(seg, n - a), sr, rng) for a in range(0, n, seg)])
    return Speech(wav=wav, sr=sr, source="builtin")


def _babble(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of built-in speech, starting and ending with a pause -> (n,) float32."""
    tr = _score(n, sr, rng)
    # Glottal source: one pulse per pitch period, low-passed twice (about -12 dB/octave).
    phase = np.cumsum(tr.f0 / sr)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    glottal = lfilter([1.0], [1.0, -0.94], lfilter([1.0], [1.0, -0.94], pulses))
    glottal = np.diff(glottal, prepend=0.0)  # lip radiation (+6 dB/octave)
    noise = rng.standard_normal(n)
    vocal = _resonate(glottal * tr.voice + 0.02 * noise * tr.aspiration, tr.formants, sr)
    high = lfilter([1.0, -1.0], [1.0, -0.3], noise)  # s-like hiss
    low = lfilter([1.0, -1.0], [1.0, 0.5], lfilter([1.0], [1.0, -0.6], noise))  # sh/f-like, duller
    hiss = (tr.fric_band * high + (1 - tr.fric_band) * low) * tr.frication
    wav = vocal / (np.abs(vocal).max() + 1e-9) + 0.12 * hiss
    return (0.5 * wav / (np.abs(wav).max() + 1e-9)).astype(np.float32)


DEFAULT_SECONDS = 10.0  # length of generated speech when none is asked for


def make_speech(
    seconds: float | None,
    rng: np.random.Generator,
    source: str = "auto",
    audio: str | Path | None = None,
    text: str | None = None,
    sr: int = SAMPLE_RATE,
) -> Speech:
    """Speech of at most `seconds` (a file is trimmed, never padded; the others are exact).
    seconds None: the whole file, or DEFAULT_SECONDS of TTS / built-in speech.

    source: "auto" (the file if given, else TTS if installed, else built-in), "file", "tts", "builtin".
    """
    if source not in SPEECH_SOURCES:
        raise InputError(f"unknown speech source {source!r}; choose one of: {', '.join(SPEECH_SOURCES)}")
    if audio is not None and source in ("auto", "file"):
        wav = load_speech_file(audio, sr)
        return Speech(wav=wav if seconds is None else wav[: round(seconds * sr)], sr=sr, source=f"file:{audio}")
    if source == "file":
        raise InputError("speech source 'file' needs an audio path")
    seconds = DEFAULT_SECONDS if seconds is None else seconds
    if source == "tts" or (source == "auto" and tts_programs()):
        try:
            return tts_speech(seconds, rng, sr, text)
        except InputError:
            if source == "tts":
                raise
            log.warning("text-to-speech failed; using the built-in speech synthesiser", exc_info=True)
    return builtin_speech(seconds, rng, sr)


# ----------------------------------------------------------------------------------------------
# Audio -> mouth


def _band_centroid(power: np.ndarray, freqs: np.ndarray, lo: float, hi: float, tilt: float = 0.0) -> np.ndarray:
    """Power-weighted mean frequency in [lo, hi] Hz of (J, F) power spectra, after weighting the
    power by f**tilt (tilt 2 = +6 dB/octave pre-emphasis against the skirt of lower formants)."""
    sel = (freqs >= lo) & (freqs <= hi)
    f = freqs[sel]
    p = power[:, sel] * f**tilt
    return (p * f).sum(axis=1) / (p.sum(axis=1) + 1e-30)


def mouth_drive(wav: np.ndarray, sr: int, fps: float, n_frames: int) -> MouthDrive:
    """Mouth opening and lip spread per video frame from a fixed spectral analysis of the audio.

    wav (S,) float mono; frame i is sampled at time (i + 0.5) / fps. Opening = loudness of the
    100-4000 Hz band (dB relative to the clip's 95th-percentile speech level, a 24 dB ramp) times a
    factor growing with the F1 region's spectral centroid (open vowels have a high F1). Width = the
    pre-emphasised F2 region's centroid mapped to [-1, 1], times loudness. Both smoothed with a 25 ms Gaussian
    (articulators are slower than the spectrum). Deterministic, gain-invariant, no randomness.
    """
    if n_frames <= 0:
        z = np.zeros(0, np.float32)
        return MouthDrive(open=z, width=z, loudness=z)
    hop, win, n_fft = round(0.010 * sr), round(0.025 * sr), 1 << int(np.ceil(np.log2(0.025 * sr)))
    x = np.asarray(wav, np.float32).reshape(-1)
    # hop j's window is centred on sample j * hop; the clip is zero-padded to cover every frame
    length = max(x.size, int(np.ceil(n_frames / fps * sr)) + win)
    n_hops = (length - win + 2 * (win // 2)) // hop + 1
    window = np.hanning(win + 2)[1:-1]
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    band = (freqs >= 100) & (freqs <= 4000)
    db, c1, c2 = np.empty(n_hops), np.empty(n_hops), np.empty(n_hops)
    for a in range(0, n_hops, _HOPS_PER_CHUNK):  # in chunks: memory stays bounded for long audio
        b = min(n_hops, a + _HOPS_PER_CHUNK)
        s0, s1 = a * hop - win // 2, (b - 1) * hop - win // 2 + win  # samples under this chunk
        seg = np.zeros(s1 - s0, np.float64)
        lo, hi = max(s0, 0), min(s1, x.size)
        if hi > lo:
            seg[lo - s0 : hi - s0] = x[lo:hi]
        idx = np.arange(win)[None, :] + hop * np.arange(b - a)[:, None]
        spec = np.fft.rfft(seg[idx] * window, n=n_fft)
        power = spec.real**2 + spec.imag**2
        # Mean square of the band-limited signal (Parseval), in dB re full scale.
        ms = 2.0 * power[:, band].sum(axis=1) / (n_fft * (window**2).sum())
        db[a:b] = 10.0 * np.log10(ms + 1e-12)
        c1[a:b] = _band_centroid(power, freqs, 200, 1000)
        c2[a:b] = _band_centroid(power, freqs, 1000, 3000, tilt=2.0)
    ref = max(float(np.percentile(db, 95)), -45.0)  # a near-silent clip keeps the mouth closed
    loud = np.clip((db - ref + 28.0) / 24.0, 0.0, 1.0)
    # F1 region centroid: ~340 Hz for /i/, ~800 Hz for /a/; F2 region (pre-emphasised): ~1100 Hz
    # for /o u a/, ~2300-2800 Hz for /e i/.
    f1 = np.clip((c1 - 330.0) / 450.0, 0.0, 1.0)
    f2 = np.clip((c2 - 1450.0) / 700.0, -1.0, 1.0)
    opening = loud * (0.25 + 0.75 * f1)
    width = f2 * loud
    sigma = 0.025 / (hop / sr)
    t_hop = np.arange(n_hops) * hop / sr
    t_frame = (np.arange(n_frames) + 0.5) / fps

    def at_frames(v: np.ndarray) -> np.ndarray:
        return np.interp(t_frame, t_hop, gaussian_filter1d(v, sigma, mode="nearest")).astype(np.float32)

    return MouthDrive(open=at_frames(opening), width=at_frames(width), loudness=at_frames(loud))
