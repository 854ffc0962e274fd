from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from erlnet.errors import InputError
from erlnet.io.video import VideoWriter, count_streams, iter_frames, probe


def test_writer_roundtrip_has_frames_and_audio(tiny_video) -> None:
    path = tiny_video(n=50, size=64)
    counts = count_streams(path)
    assert counts.video_frames == 50
    assert (counts.width, counts.height) == (64, 64)
    assert counts.audio_seconds == pytest.approx(2.0, abs=0.07)  # AAC pads to whole 1024-sample frames
    info = probe(path)
    assert info.fps == pytest.approx(25.0) and info.has_audio


@pytest.mark.parametrize(("src_fps", "n_src"), [(25, 50), (30, 60), (15, 30), (50, 100)])
def test_resampling_to_25fps_keeps_duration_and_order(tmp_path: Path, src_fps: int, n_src: int) -> None:
    path = tmp_path / "v.mp4"
    with VideoWriter(path, fps=src_fps) as w:
        for i in range(n_src):
            w.write(np.full((32, 32, 3), int(i * 250 / n_src), np.uint8))
    frames = list(iter_frames(path, fps=25))
    assert len(frames) == 50  # 2 s at 25 fps, whatever the source rate
    means = np.array([f.mean() for f in frames])
    assert np.all(np.diff(means) >= -2.0)  # time runs forward
    # frame k shows the source frame nearest to k/25 s
    for k in (0, 17, 49):
        expected = int(round(k / 25 * src_fps)) * 250 / n_src
        assert abs(means[k] - expected) <= 12


def test_writer_is_atomic_on_error(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError), VideoWriter(path) as w:
        w.write(np.zeros((32, 32, 3), np.uint8))
        raise RuntimeError("boom")
    assert not path.exists()
    assert not list(tmp_path.iterdir())


def test_writer_rejects_bad_frames(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "o.mp4") as w:
        w.write(np.zeros((32, 32, 3), np.uint8))
        with pytest.raises(InputError, match="uint8"):
            w.write(np.zeros((32, 32, 3), np.float32))
        with pytest.raises(InputError, match="32x32"):
            w.write(np.zeros((16, 16, 3), np.uint8))


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b"", "zero length"), (b"hello, I am text\n" * 50, "not a readable video")],
)
def test_bad_inputs_give_clear_errors(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "bad.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        probe(path)
    with pytest.raises(InputError, match=message):
        list(iter_frames(path))


def test_truncated_stream_is_reported(tmp_path: Path, tiny_video) -> None:
    good = tiny_video(n=40, size=64)
    data = good.read_bytes()
    bad = tmp_path / "cut.mp4"
    bad.write_bytes(data[: len(data) // 3])  # moov atom at the end is lost
    with pytest.raises(InputError):
        probe(bad)
        list(iter_frames(bad))
