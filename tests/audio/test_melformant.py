"""MelFormantEncoder: shapes, frame timing, pitch, formants, silence and bad input, on synthetic audio."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from erlnet.audio import MelFormantConfig
from erlnet.audio.melformant import MelFormantEncoder, mel_filterbank, pool_by_time
from erlnet.errors import InputError
from erlnet.io.audio import load_audio, resample

SR = 16000


@pytest.fixture(scope="module")
def enc() -> MelFormantEncoder:
    return MelFormantEncoder()


def harmonic_pulses(f0: float, seconds: float, sr: int = SR) -> np.ndarray:
    """Band-limited impulse train (equal harmonics up to 7.9 kHz), peak 1 -> (S,) float64.

    Band-limited so the period is exact; a sample-quantised pulse train at 150 Hz has a 50 Hz jitter
    pattern that makes any pitch tracker pick subharmonics.
    """
    t = np.arange(int(seconds * sr)) / sr
    x = np.cos(2 * np.pi * f0 * np.outer(t, np.arange(1, int(7900 / f0) + 1))).sum(axis=1)
    return x / np.abs(x).max()


def vowel(formants_hz: tuple[float, ...], f0: float = 120.0, seconds: float = 1.0) -> np.ndarray:
    """Source-filter vowel: pulses with a -6 dB/octave glottal tilt through 2-pole resonators -> (S,) float32.

    F4 and F5 are included as in real speech, so Praat's 5-formant LPC has no spare poles to place
    spuriously between F2 and F3.
    """
    x = lfilter([1.0], [1.0, -0.9], harmonic_pulses(f0, seconds))
    bandwidths = (80.0, 90.0, 120.0, 200.0, 250.0)
    for f, b in zip((*formants_hz, 3500.0, 4500.0), bandwidths, strict=True):
        r, th = np.exp(-np.pi * b / SR), 2 * np.pi * f / SR
        a = [1.0, -2 * r * np.cos(th), r * r]
        x = lfilter([sum(a)], a, x)  # unity gain at DC
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def test_shape_layout_and_exact_frame_count(enc: MelFormantEncoder) -> None:
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(int(1.03 * SR))).astype(np.float32)
    feats = enc.encode(wav, SR)
    assert feats.shape == (25, enc.feature_dim) and feats.dtype == np.float32  # floor(1.03 s * 25)
    assert enc.feature_dim == 2 * 80 + 2 + 9 == 171
    layout = enc.feature_layout
    assert sum(s.stop - s.start for s in layout.values()) == enc.feature_dim
    assert list(layout.values())[-1].stop == enc.feature_dim
    assert enc.encode(wav, SR, n_frames=7).shape == (7, 171)
    assert enc.encode(wav, SR, n_frames=40).shape == (40, 171)
    small = MelFormantEncoder(MelFormantConfig(n_mels=40, sub_frames=4, fps=30.0))
    out = small.encode(wav, SR)
    assert out.shape == (30, 4 * 41 + 9) == (30, small.feature_dim)


def test_padding_is_silence_and_cropping_keeps_rows(enc: MelFormantEncoder) -> None:
    wav = (0.3 * np.sin(2 * np.pi * 300 * np.arange(SR) / SR)).astype(np.float32)
    full = enc.encode(wav, SR)
    layout = enc.feature_layout
    spectral = np.r_[layout["mel"], layout["energy"]]
    cropped = enc.encode(wav, SR, n_frames=10)
    np.testing.assert_allclose(cropped[:, spectral], full[:10, spectral], atol=1e-5)
    padded = enc.encode(wav, SR, n_frames=35)
    np.testing.assert_allclose(padded[:24, spectral], full[:24, spectral], atol=1e-5)
    assert np.all(padded[26:, layout["energy"]] == -1.0)  # beyond the audio: silence
    assert np.all(np.isfinite(padded))


def test_tone_burst_raises_energy_only_in_its_frames(enc: MelFormantEncoder) -> None:
    t = np.arange(2 * SR) / SR
    wav = (0.5 * np.sin(2 * np.pi * 1000 * t) * ((t >= 1.0) & (t < 1.1))).astype(np.float32)
    feats = enc.encode(wav, SR)
    layout = enc.feature_layout
    energy = feats[:, layout["energy"]]  # (T, 2): sub-frames [0, 20) and [20, 40) ms of each frame
    loud = energy.max(axis=1) > 0.0
    assert np.flatnonzero(loud).tolist() == [25, 26, 27]
    assert np.all(energy[~loud] == -1.0)
    # Sub-frame timing: the burst ends at 1.10 s, the middle of frame 27 (1.08-1.12 s).
    assert energy[27, 0] > 0.0 and energy[27, 1] == -1.0
    # Mel energy peaks in the same frames; the 25 ms window leaks at most into the neighbours.
    mel = feats[:, layout["mel"]].max(axis=1)
    assert set(np.flatnonzero(mel > 0.0)) >= {25, 26, 27}
    assert np.all(mel[np.r_[:24, 29:50]] == pytest.approx(-1.0, abs=1e-3))


@pytest.mark.parametrize("f0", [150.0, 230.0])
def test_pitch_of_pulse_train(enc: MelFormantEncoder, f0: float) -> None:
    feats = enc.encode(harmonic_pulses(f0, 1.0).astype(np.float32) * 0.8, SR)
    layout = enc.feature_layout
    voiced = feats[:, layout["voiced"]].ravel()
    est = 200.0 * 2.0 ** feats[:, layout["log_f0"]].ravel()
    assert voiced[2:-2].min() == 1.0
    np.testing.assert_allclose(est[2:-2], f0, rtol=0.05)


def test_voicing_is_aligned_to_frames(enc: MelFormantEncoder) -> None:
    wav = harmonic_pulses(150.0, 2.0) * 0.8
    t = np.arange(wav.size) / SR
    wav = (wav * ((t >= 1.0) & (t < 1.4))).astype(np.float32)  # voiced during frames 25..34 exactly
    feats = enc.encode(wav, SR)
    # Praat's pitch window (3 periods of the 75 Hz floor = 40 ms) is one frame long, so the
    # neighbouring frames 24 and 35 (centres 20 ms from the voicing edges) see no voice.
    assert np.flatnonzero(feats[:, enc.feature_layout["voiced"]].ravel() > 0.5).tolist() == list(range(25, 35))


def test_noise_is_unvoiced(enc: MelFormantEncoder) -> None:
    wav = (0.2 * np.random.default_rng(1).standard_normal(SR)).astype(np.float32)
    feats = enc.encode(wav, SR)
    assert feats[:, enc.feature_layout["voiced"]].mean() < 0.2


def test_formants_of_synthetic_vowel(enc: MelFormantEncoder) -> None:
    layout = enc.feature_layout
    a = enc.encode(vowel((700.0, 1220.0, 2600.0)), SR)
    f_hz = 1000.0 * np.median(a[3:-3, layout["formants"]], axis=0)
    np.testing.assert_allclose(f_hz[:2], [700.0, 1220.0], rtol=0.10)
    assert np.all(a[3:-3, layout["formant_defined"]] == 1.0)
    bw = 100.0 * 10.0 ** np.median(a[3:-3, layout["bandwidths"]], axis=0)
    assert np.all(bw < 400.0)  # sharp resonances, not noise
    # /i/ (F2 ~2290 Hz) must be told apart from /a/.
    i = enc.encode(vowel((270.0, 2290.0, 3010.0)), SR)
    f2_i = 1000.0 * np.median(i[3:-3, layout["formants"]][:, 1])
    assert f2_i == pytest.approx(2290.0, rel=0.10)


def test_silence_gives_finite_neutral_features(enc: MelFormantEncoder) -> None:
    feats = enc.encode(np.zeros(SR, np.float32), SR)
    layout = enc.feature_layout
    assert np.all(np.isfinite(feats))
    assert np.all(feats[:, layout["energy"]] == -1.0)
    assert np.all(feats[:, layout["voiced"]] == 0.0)
    assert np.all(feats[:, layout["formant_defined"]] == 0.0)
    assert np.all(feats[:, layout["log_f0"]] == 0.0)


def test_other_sample_rates_are_resampled(enc: MelFormantEncoder) -> None:
    wav16 = vowel((700.0, 1220.0, 2600.0))
    wav44 = resample(wav16, SR, 44100)
    a, b = enc.encode(wav16, SR), enc.encode(wav44, 44100)
    assert a.shape == b.shape
    layout = enc.feature_layout
    np.testing.assert_allclose(b[3:-3, layout["formants"]], a[3:-3, layout["formants"]], atol=0.03)
    np.testing.assert_allclose(b[3:-3, layout["energy"]], a[3:-3, layout["energy"]], atol=0.01)


@pytest.mark.parametrize(("wav", "message"), [
    (np.zeros(0, np.float32), "empty"),
    (np.zeros(320, np.float32), "shorter than one video frame"),
    (np.full(SR, np.nan, np.float32), "NaN"),
    (np.zeros(SR, np.int16), "dtype int16"),
    (np.zeros((2, SR), np.float32), "mono"),
])
def test_bad_input_is_input_error(enc: MelFormantEncoder, wav: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        enc.encode(wav, SR)


def test_mel_filterbank_covers_spectrum() -> None:
    fb = mel_filterbank(SR, 512, 80, 0.0, 8000.0)
    assert fb.shape == (80, 257)
    assert np.all(fb.max(axis=1) > 0.3)  # no empty band
    centres = np.argmax(fb, axis=1)
    assert np.all(np.diff(centres) >= 0) and centres[-1] > 240


def test_pool_by_time_averages_and_fills_empty_bins() -> None:
    values = np.arange(6, dtype=np.float32)[:, None]
    times = np.array([0.01, 0.02, 0.05, 0.06, 0.07, 0.31])
    out = pool_by_time(values, times, rate=10.0, n_bins=4)  # bins of 0.1 s
    # Bin 0 holds rows 0-4; bins 1-2 are empty and take the nearest row; row 5 is in bin 3.
    assert out.ravel().tolist() == pytest.approx([2.0, 4.0, 5.0, 5.0])


@pytest.mark.realdata
def test_real_speech_energy_and_voicing_follow_word_timings(enc: MelFormantEncoder, shared_data) -> None:
    clip = shared_data / "grid_s1" / "video" / "bbaf2n.mpg"
    align = shared_data / "grid_s1" / "align" / "bbaf2n.align"
    if not clip.is_file() or not align.is_file():
        pytest.skip("GRID clip bbaf2n not in the shared data")
    wav = load_audio(clip)
    feats = enc.encode(wav, SR, n_frames=75)
    layout = enc.feature_layout
    energy, voiced = feats[:, layout["energy"]].mean(axis=1), feats[:, layout["voiced"]].ravel()
    speech = np.zeros(75, bool)
    for line in align.read_text().split("\n"):
        if line.strip() and line.split()[2] != "sil":
            start, end = (int(v) // 1000 for v in line.split()[:2])
            speech[start:end] = True
    assert energy[speech].mean() > energy[~speech].mean() + 0.25
    assert voiced[speech].mean() > 0.4 and voiced[~speech].mean() < 0.1
    f0 = 200.0 * 2.0 ** feats[voiced > 0.5, layout["log_f0"]]
    assert 70.0 < np.median(f0) < 200.0  # GRID s1 is an adult male voice
