"""Audio decoding from containers, WAV writing and resampling, on files the tests generate."""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np
import pytest

from erlnet.errors import InputError
from erlnet.io.audio import load_audio, resample, save_wav

SR = 16000


def _burst(sr: int = SR, dur: float = 1.0, start: float = 0.5, length: float = 0.1, freq: float = 440.0) -> np.ndarray:
    """Silence with a sine burst of `length` s at `start` s -> (S,) float32."""
    t = np.arange(int(sr * dur)) / sr
    on = (t >= start) & (t < start + length)
    return (0.5 * np.sin(2 * np.pi * freq * t) * on).astype(np.float32)


def _onset(wav: np.ndarray, sr: int = SR) -> float:
    return float(np.argmax(np.abs(wav) > 0.1)) / sr


def _peak_hz(wav: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(wav * np.hanning(wav.size)))
    return float(np.fft.rfftfreq(wav.size, 1.0 / sr)[np.argmax(spec)])


def _write_audio(path: Path, wav: np.ndarray, codec: str, sr: int = SR, frame_size: int = 1024,
                 with_video: bool = False) -> None:
    """Encode mono `wav` with PyAV (optionally muxed with a tiny 25 fps video stream)."""
    with av.open(str(path), "w") as c:
        if with_video:
            v = c.add_stream("mpeg4", rate=25)
            v.width, v.height, v.pix_fmt = 64, 64, "yuv420p"
        a = c.add_stream(codec, rate=sr, layout="mono")
        fmt = a.codec_context.format.name
        for i in range(0, wav.size, frame_size):
            chunk = wav[None, i : i + frame_size]
            if fmt.startswith("s32"):
                chunk = (chunk * (2**31 - 1)).astype(np.int32)
            elif fmt.startswith("s16"):
                chunk = (chunk * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt, layout="mono")
            frame.sample_rate, frame.pts = sr, i
            c.mux(a.encode(frame))
        c.mux(a.encode(None))
        if with_video:
            for k in range(int(25 * wav.size / sr)):
                img = np.full((64, 64, 3), 8 * k % 256, np.uint8)
                c.mux(v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            c.mux(v.encode(None))


def _write_video_only(path: Path, n: int = 10) -> None:
    with av.open(str(path), "w") as c:
        v = c.add_stream("mpeg4", rate=25)
        v.width, v.height, v.pix_fmt = 64, 64, "yuv420p"
        for k in range(n):
            c.mux(v.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), k, np.uint8), format="rgb24")))
        c.mux(v.encode(None))


def test_wav_roundtrip_is_exact_to_16_bit(tmp_path: Path) -> None:
    wav = _burst()
    path = tmp_path / "sub" / "a.wav"
    save_wav(path, wav)
    assert [p.name for p in path.parent.iterdir()] == ["a.wav"]  # no temp file left behind
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SR)
    back = load_audio(path)
    assert back.dtype == np.float32 and back.shape == wav.shape
    assert np.max(np.abs(back - wav)) < 2.0 / 32767


def test_stereo_44k_wav_is_downmixed_by_mean_and_resampled(tmp_path: Path) -> None:
    sr, dur = 44100, 0.5
    t = np.arange(int(sr * dur)) / sr
    left, right = 0.9 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 440 * t)
    pcm = (np.stack([left, right], 1) * 32767).astype("<i2")
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    wav = load_audio(path)
    assert abs(wav.size - SR * dur) <= 1
    assert abs(_peak_hz(wav, SR) - 440) < 3
    mid = wav[1000:-1000]
    assert np.max(np.abs(mid)) == pytest.approx(0.6, abs=0.01)  # mean of 0.9 and 0.3, not their sum


@pytest.mark.parametrize(("suffix", "codec", "frame_size"), [
    (".flac", "flac", 1024),
    (".mp3", "libmp3lame", 1152),
    (".m4a", "aac", 1024),
])
def test_compressed_audio_keeps_timing(tmp_path: Path, suffix: str, codec: str, frame_size: int) -> None:
    path = tmp_path / f"a{suffix}"
    _write_audio(path, _burst(), codec, frame_size=frame_size)
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert np.all(np.abs(wav) <= 1.0)
    assert 0.99 * SR <= wav.size <= 1.1 * SR  # encoder padding may add a frame
    assert _onset(wav) == pytest.approx(0.5, abs=0.005)  # codec priming delay is removed


def test_mp4_with_aac_audio_and_video(tmp_path: Path) -> None:
    path = tmp_path / "talk.mp4"
    _write_audio(path, _burst(sr=48000, freq=1000.0), "aac", sr=48000, with_video=True)
    wav = load_audio(path, sr=SR)
    assert _onset(wav) == pytest.approx(0.5, abs=0.005)
    assert abs(_peak_hz(wav[int(0.5 * SR) : int(0.6 * SR)], SR) - 1000) < 15


def test_video_without_audio_returns_none(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    _write_video_only(path)
    assert load_audio(path) is None


def test_text_file_is_input_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not audio\n" * 20)
    with pytest.raises(InputError, match="cannot decode audio from .*notes.txt"):
        load_audio(path)


def test_corrupt_mp4_is_input_error(tmp_path: Path) -> None:
    path = tmp_path / "talk.mp4"
    _write_audio(path, _burst(), "aac")
    data = path.read_bytes()
    path.write_bytes(data[:16] + bytes(np.random.default_rng(0).integers(0, 256, len(data) - 16, np.uint8)))
    with pytest.raises(InputError, match="corrupt"):
        load_audio(path)


def test_missing_file_and_directory_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(InputError, match="not a file"):
        load_audio(tmp_path)


def test_save_wav_clips_and_rejects_bad_audio(tmp_path: Path) -> None:
    path = tmp_path / "c.wav"
    save_wav(path, np.array([2.0, -3.0, 0.5], np.float32))
    assert load_audio(path) is not None  # 3 samples decode fine
    with wave.open(str(path)) as w:
        pcm = np.frombuffer(w.readframes(3), "<i2")
    assert pcm.tolist() == [32767, -32767, 16384]
    with pytest.raises(InputError, match="1-D"):
        save_wav(path, np.zeros((10, 2), np.float32))
    with pytest.raises(InputError, match="NaN"):
        save_wav(path, np.array([0.0, np.nan], np.float32))
    with pytest.raises(InputError, match="sample rate"):
        save_wav(path, np.zeros(10, np.float32), sr=0)


def test_resample_keeps_frequency_and_length() -> None:
    sr_in, sr_out = 16000, 44100
    t = np.arange(sr_in) / sr_in
    wav = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    up = resample(wav, sr_in, sr_out)
    assert up.dtype == np.float32 and up.size == sr_out
    assert abs(_peak_hz(up, sr_out) - 440) < 2
    same = resample(wav, sr_in, sr_in)
    assert same is not wav and np.array_equal(same, wav)
    with pytest.raises(InputError, match="sr_out"):
        resample(wav, sr_in, -1)
