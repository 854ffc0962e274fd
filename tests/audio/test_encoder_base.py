"""AudioEncoder input checks, configs, manifest round trip and cache keys."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from erlnet.audio import AudioEncoder, MelFormantConfig, config_from_dict, encoder_from_dict
from erlnet.audio.base import check_audio, fit_length
from erlnet.audio.melformant import MelFormantEncoder
from erlnet.errors import FormatError, InputError

SR = 16000


def test_check_audio_frame_count_and_dtype() -> None:
    wav, n = check_audio(np.zeros(SR, np.float64), SR, 25.0)
    assert wav.dtype == np.float32 and wav.flags.c_contiguous
    assert n == 25
    assert check_audio(np.zeros(SR + 639, np.float32), SR, 25.0)[1] == 25  # floor, not round
    assert check_audio(np.zeros(640, np.float32), SR, 25.0)[1] == 1  # exactly one frame
    assert check_audio(np.zeros(SR, np.float32), SR, 25.0, n_frames=40)[1] == 40


@pytest.mark.parametrize(("wav", "sr", "n_frames", "message"), [
    (np.zeros(0, np.float32), SR, None, "empty"),
    (np.zeros(639, np.float32), SR, None, "shorter than one video frame"),
    (np.array([0.0, np.nan] * 1000, np.float32), SR, None, "NaN"),
    (np.array([0.0, np.inf] * 1000, np.float32), SR, None, "infinite"),
    (np.zeros(SR, np.int16), SR, None, "int16 PCM by 32768"),
    (np.zeros((SR, 2), np.float32), SR, None, r"shape \(S,\)"),
    ([0.0] * SR, SR, None, "numpy array"),
    (np.zeros(SR, np.float32), 0, None, "sample rate"),
    (np.zeros(SR, np.float32), 16000.0, None, "sample rate"),
    (np.zeros(SR, np.float32), SR, 0, "n_frames"),
    (np.zeros(SR, np.float32), SR, 2.5, "n_frames"),
])
def test_check_audio_rejects_bad_input(wav: object, sr: object, n_frames: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_audio(wav, sr, 25.0, n_frames)


def test_fit_length_pads_with_silence_and_crops() -> None:
    wav = np.ones(5, np.float32)
    assert fit_length(wav, 3).tolist() == [1, 1, 1]
    assert fit_length(wav, 7).tolist() == [1, 1, 1, 1, 1, 0, 0]


def test_config_dict_round_trip_builds_same_encoder() -> None:
    cfg = MelFormantConfig(n_mels=40, sub_frames=3, max_formant_hz=5000.0)
    d = cfg.to_dict()
    assert d["type"] == "melformant" and d["n_mels"] == 40
    assert config_from_dict(d) == cfg
    enc = encoder_from_dict(d)
    assert isinstance(enc, AudioEncoder) and isinstance(enc, MelFormantEncoder)
    assert enc.cache_key == cfg.setup().cache_key
    assert config_from_dict({"type": "melformant"}) == MelFormantConfig()  # missing fields -> defaults


def test_config_from_dict_errors_are_format_errors() -> None:
    with pytest.raises(FormatError, match="unknown audio encoder type 'wavlm'"):
        config_from_dict({"type": "wavlm"})
    with pytest.raises(FormatError, match="unknown fields .*n_bins"):
        config_from_dict({"type": "melformant", "n_bins": 3})
    with pytest.raises(FormatError, match="'type' key"):
        config_from_dict({"n_mels": 3})
    with pytest.raises(FormatError, match="n_mels must be a positive"):
        config_from_dict({"type": "melformant", "n_mels": -1})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_mels": 0}, "n_mels must be a positive"),
    ({"sub_frames": 1.5}, "sub_frames must be an integer"),
    ({"fps": float("nan")}, "fps must be a positive finite"),
    ({"fps": True}, "fps must be a number"),
    ({"f_max": 9000.0}, "f_max <= sample_rate/2"),
    ({"n_fft": 256}, "n_fft=256 is shorter"),
    ({"hop_ms": 30.0}, "hop_ms must not exceed win_ms"),
    ({"pitch_floor_hz": 600.0}, "pitch_floor_hz must be below"),
])
def test_invalid_config_is_input_error(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        MelFormantConfig(**kwargs)


def test_cache_key_changes_with_every_config_field() -> None:
    base = MelFormantConfig()
    keys = {base.setup().cache_key}
    changes = {"sample_rate": 20000, "fps": 30.0, "n_mels": 64, "win_ms": 20.0, "hop_ms": 5.0, "n_fft": 1024,
               "f_min": 20.0, "f_max": 7600.0, "sub_frames": 4, "max_formant_hz": 5000.0, "n_lpc_formants": 4,
               "formant_window_ms": 20.0, "pitch_floor_hz": 60.0, "pitch_ceiling_hz": 400.0}
    assert set(changes) == {f.name for f in dataclasses.fields(MelFormantConfig)}
    for name, value in changes.items():
        keys.add(dataclasses.replace(base, **{name: value}).setup().cache_key)
    assert len(keys) == len(changes) + 1
    assert base.setup().cache_key.startswith("MelFormantEncoder-v1-")
    # Equal configs spelled differently (25 vs 25.0) share a key.
    assert MelFormantConfig(fps=25).setup().cache_key == base.setup().cache_key


def test_cache_key_is_stable_across_processes() -> None:
    code = "from erlnet.audio.base import MelFormantConfig; print(MelFormantConfig(n_mels=64).setup().cache_key)"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == MelFormantConfig(n_mels=64).setup().cache_key
