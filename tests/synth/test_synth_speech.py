"""Speech sources and the audio -> mouth mapping of the synthetic subject."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import lfilter

from erlnet.errors import InputError
from erlnet.io.audio import save_wav
from erlnet.synth import speech as sp


def _vowel(formants: tuple[float, float, float], seconds: float = 0.6, sr: int = 16000) -> np.ndarray:
    """A steady synthetic vowel at 190 Hz through the synthesiser's resonators."""
    n = int(seconds * sr)
    pulses = np.diff(np.floor(np.cumsum(np.full(n, 190.0) / sr)), prepend=0.0)
    src = np.diff(lfilter([1.0], [1.0, -0.94], lfilter([1.0], [1.0, -0.94], pulses)), prepend=0.0)
    y = sp._resonate(src, np.tile(np.asarray(formants, float), (n // 80 + 1, 1)), sr)
    return (0.4 * y / np.abs(y).max()).astype(np.float32)


def test_builtin_speech_is_deterministic_per_seed_and_speech_like():
    a = sp.builtin_speech(3.0, np.random.default_rng(5))
    b = sp.builtin_speech(3.0, np.random.default_rng(5))
    c = sp.builtin_speech(3.0, np.random.default_rng(6))
    assert a.wav.shape == (48000,) and a.wav.dtype == np.float32 and a.source == "builtin"
    np.testing.assert_array_equal(a.wav, b.wav)
    assert not np.array_equal(a.wav, c.wav)
    assert np.abs(a.wav).max() <= 1.0
    # syllables and pauses: the 10 ms energy envelope has both loud and silent stretches
    env = np.sqrt((a.wav[: 48000 // 160 * 160].reshape(-1, 160) ** 2).mean(axis=1))
    assert (env < 1e-4).mean() > 0.1 and (env > 0.05).mean() > 0.2


def test_mouth_opens_more_for_open_vowels_and_spreads_for_front_vowels():
    drives = {}
    for name, f in {"a": (850, 1220, 2810), "i": (310, 2790, 3310), "u": (370, 950, 2670)}.items():
        wav = np.concatenate([np.zeros(8000, np.float32), _vowel(f), np.zeros(8000, np.float32)])
        d = sp.mouth_drive(wav, 16000, 25, int(wav.size / 16000 * 25))
        drives[name] = (d.open[15:25].mean(), d.width[15:25].mean(), d.open[:5].max())
    assert drives["a"][0] > 0.8 and drives["a"][0] > 2 * drives["i"][0]
    assert drives["i"][1] > 0.5 and drives["u"][1] < -0.2
    assert all(v[2] == 0.0 for v in drives.values())  # silence: lips closed


def test_mouth_drive_is_gain_invariant_and_frame_aligned():
    wav = sp.builtin_speech(2.0, np.random.default_rng(1)).wav
    d1 = sp.mouth_drive(wav, 16000, 25, 50)
    d2 = sp.mouth_drive(0.1 * wav, 16000, 25, 50)
    assert d1.open.shape == (50,) and d1.width.shape == (50,)
    np.testing.assert_allclose(d1.open, d2.open, atol=1e-4)
    # frame i describes time (i + 0.5) / fps: a vowel from 0.50 s to 0.70 s opens frames 12-17
    # (centres 0.50 ... 0.70 s; the two edge frames are half open)
    burst = np.zeros(16000, np.float32)
    burst[8000:11200] = _vowel((850, 1220, 2810), seconds=0.2)
    d3 = sp.mouth_drive(burst, 16000, 25, 30)  # the clip is shorter than 30 frames: zero-padded
    assert set(np.flatnonzero(d3.open > 0.5)) == set(range(12, 18))
    assert abs(d3.open[12] - d3.open[17]) < 0.05
    assert d3.open[:10].max() == 0.0 and d3.open[20:].max() == 0.0


def test_speech_from_file_is_trimmed_and_bad_paths_raise(tmp_path: Path):
    wav = sp.builtin_speech(1.5, np.random.default_rng(2)).wav
    save_wav(tmp_path / "s.wav", wav)
    got = sp.make_speech(1.0, np.random.default_rng(0), "auto", tmp_path / "s.wav")
    assert got.source.startswith("file:") and got.wav.size == 16000
    with pytest.raises(InputError, match="not found"):
        sp.make_speech(1.0, np.random.default_rng(0), "auto", tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all" * 10)
    with pytest.raises(InputError):
        sp.make_speech(1.0, np.random.default_rng(0), "file", tmp_path / "junk.wav")
    with pytest.raises(InputError, match="needs an audio path"):
        sp.make_speech(1.0, np.random.default_rng(0), "file")
    with pytest.raises(InputError, match="unknown speech source"):
        sp.make_speech(1.0, np.random.default_rng(0), "radio")


def _fake_tts(bin_dir: Path, ok: bool = True) -> None:
    """An 'espeak-ng' on PATH that writes 0.5 s of tone to the file after -w (or fails)."""
    body = (
        "import sys, wave\n"
        "import numpy as np\n"
        "out = sys.argv[sys.argv.index('-w') + 1]\n"
        "x = (0.3 * np.sin(2 * np.pi * 200 * np.arange(11025) / 22050) * 32767).astype('<i2')\n"
        "w = wave.open(out, 'wb'); w.setnchannels(1); w.setsampwidth(2); w.setframerate(22050)\n"
        "w.writeframes(x.tobytes()); w.close()\n"
    ) if ok else "import sys\nsys.exit(3)\n"
    import sys

    script = bin_dir / "espeak-ng"
    script.write_text(f"#!{sys.executable}\n{body}")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_tts_program_is_used_when_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _fake_tts(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    got = sp.make_speech(2.0, np.random.default_rng(0), "auto")
    assert got.source == "tts:espeak-ng" and got.wav.size == 32000
    # 0.5 s of speech then a 0.4 s pause, repeated to fill the clip
    assert np.abs(got.wav[:7000]).max() > 0.2 and np.abs(got.wav[8500:14000]).max() < 1e-3
    assert np.abs(got.wav[15000:21000]).max() > 0.2


def test_failing_tts_raises_when_asked_and_falls_back_in_auto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _fake_tts(tmp_path, ok=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # only the broken program is found
    with pytest.raises(InputError, match="text-to-speech with espeak-ng failed"):
        sp.make_speech(1.0, np.random.default_rng(0), "tts")
    assert sp.make_speech(1.0, np.random.default_rng(0), "auto").source == "builtin"
