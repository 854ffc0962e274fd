"""Video decoding and encoding with PyAV: streamed, constant frame rate, audio muxed.

No system ffmpeg is needed: PyAV's wheels carry their own libraries (H.264 and AAC included).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from erlnet.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, as read from its container (no frame is decoded)."""

    path: Path
    width: int
    height: int
    fps: float  # source frame rate
    duration: float  # seconds (0.0 when the container does not know)
    codec: str
    has_audio: bool

    def n_frames_at(self, fps: float) -> int:
        """Frames the video yields once resampled to `fps` (an estimate from the container)."""
        return int(round(self.duration * fps))


def _open(path: Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a video file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (zero length)")
    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not a readable video ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.strip().rstrip(".") or type(exc).__name__


def probe(path: str | Path) -> VideoInfo:
    """Read the container header of a video. Raises `InputError` when it is not a video."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise InputError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if container.duration:
            duration = container.duration / av.time_base
        elif stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif stream.frames and fps:
            duration = stream.frames / fps
        else:
            duration = 0.0
        if not ctx.width or not ctx.height:
            raise InputError(f"{path}: video stream has no frame size (corrupt header?)")
        return VideoInfo(
            path=path,
            width=int(ctx.width),
            height=int(ctx.height),
            fps=fps,
            duration=float(duration),
            codec=ctx.name,
            has_audio=bool(container.streams.audio),
        )


def iter_frames(path: str | Path, fps: float = 25.0, prefetch: int = 4) -> Iterator[np.ndarray]:
    """Decode a video as RGB frames resampled to a constant `fps`, one at a time.

    Output frame i shows the source frame nearest to time i / fps (like ffmpeg's fps filter), so a
    30 fps source drops frames and a 15 fps source repeats them. Yields `(H, W, 3) uint8` arrays.
    With `prefetch` > 0, decoding runs in a background thread up to that many frames ahead (PyAV
    releases the GIL), so it overlaps with the consumer's work. Raises `InputError` when the file
    cannot be decoded or holds no frame.
    """
    frames = _decode_frames(Path(path), fps)
    return _prefetched(frames, prefetch) if prefetch > 0 else frames


_DONE = object()


def _prefetched(items: Iterator[np.ndarray], depth: int) -> Iterator[np.ndarray]:
    """Run `items` in a daemon thread, `depth` items ahead; errors are re-raised in the consumer."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            q.put(exc)
        finally:
            if stop.is_set() and hasattr(items, "close"):
                items.close()

    worker = threading.Thread(target=produce, name="erlnet-decode", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join(timeout=5)


def _decode_frames(path: Path, fps: float) -> Iterator[np.ndarray]:
    step = 1.0 / fps
    container = _open(path)
    try:
        if not container.streams.video:
            raise InputError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame/slice threads in libavcodec: decode uses both cores
        src_rate = stream.average_rate or stream.guessed_rate
        src_step = 1.0 / float(src_rate) if src_rate else step
        t0: float | None = None
        prev: np.ndarray | None = None
        prev_t = 0.0
        out_i = 0
        n_src = 0
        try:
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else n_src * src_step
                n_src += 1
                if t0 is None:
                    t0 = t
                t -= t0
                image = frame.to_ndarray(format="rgb24")
                if prev is None:
                    prev, prev_t = image, t
                    continue
                # emit `prev` for every output time that is nearer to it than to this frame
                boundary = 0.5 * (prev_t + t)
                while out_i * step < boundary - 1e-9:
                    yield prev
                    out_i += 1
                prev, prev_t = image, t
        except av.error.FFmpegError as exc:
            raise InputError(f"{path}: corrupt video stream after {n_src} frames ({_reason(exc)})") from None
        if prev is None:
            raise InputError(f"{path}: video stream holds no decodable frame")
        end = prev_t + src_step
        while out_i * step < end - 0.5 * step - 1e-9 or out_i == 0:
            yield prev
            out_i += 1
    finally:
        container.close()


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class VideoWriter:
    """Streamed H.264 mp4 writer with an optional AAC audio track.

    Frames are encoded as they arrive (memory stays bounded for any length); audio, if given, is
    interleaved with the video up to each frame's time. The file is written under a temporary name and
    renamed on a clean close, so an interrupted write never leaves a file that looks finished.

    >>> with VideoWriter("out.mp4", fps=25, size=(256, 256), audio=wav, sample_rate=16000) as w:
    ...     for frame in frames:  # (H, W, 3) uint8 RGB
    ...         w.write(frame)
    """

    def __init__(
        self,
        path: str | Path,
        fps: int = 25,
        size: tuple[int, int] | None = None,
        audio: np.ndarray | None = None,
        sample_rate: int = 16000,
        crf: int = 18,
        preset: str = "veryfast",
    ) -> None:
        self.path = Path(path)
        self.fps = int(fps)
        self.size = size  # (W, H); taken from the first frame when None
        self.audio = None if audio is None else np.asarray(audio, dtype=np.float32).reshape(-1)
        self.sample_rate = int(sample_rate)
        self.crf = crf
        self.preset = preset
        self.frames_written = 0
        self._tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self._container: av.container.OutputContainer | None = None
        self._vstream = None
        self._astream = None
        self._audio_pos = 0

    def _open(self, width: int, height: int) -> None:
        if width % 2 or height % 2:
            raise InputError(f"frame size {width}x{height} must be even for H.264 (yuv420p)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        vs = self._container.add_stream("libx264", rate=self.fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"crf": str(self.crf), "preset": self.preset}
        vs.codec_context.time_base = Fraction(1, self.fps)
        self._vstream = vs
        if self.audio is not None and self.audio.size:
            a = self._container.add_stream("aac", rate=self.sample_rate)
            a.layout = "mono"
            a.bit_rate = 96_000
            self._astream = a

    def write(self, frame: np.ndarray) -> None:
        """Encode one `(H, W, 3) uint8` RGB frame."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InputError(f"expected an (H, W, 3) uint8 frame, got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        if self._container is None:
            if self.size is None:
                self.size = (w, h)
            self._open(*self.size)
        if (w, h) != tuple(self.size):
            raise InputError(f"frame {self.frames_written} is {w}x{h}, the video is {self.size[0]}x{self.size[1]}")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.frames_written
        for packet in self._vstream.encode(vf):
            self._container.mux(packet)
        self.frames_written += 1
        self._write_audio_until(self.frames_written / self.fps)

    def _write_audio_until(self, seconds: float) -> None:
        if self._astream is None:
            return
        end = self.audio.size if math.isinf(seconds) else min(self.audio.size, math.ceil(seconds * self.sample_rate))
        if end <= self._audio_pos:
            return
        chunk = self.audio[self._audio_pos : end]
        af = av.AudioFrame.from_ndarray(np.clip(chunk, -1.0, 1.0)[None, :], format="flt", layout="mono")
        af.sample_rate = self.sample_rate
        af.pts = self._audio_pos
        af.time_base = Fraction(1, self.sample_rate)
        for packet in self._astream.encode(af):
            self._container.mux(packet)
        self._audio_pos = end

    def close(self) -> Path:
        """Flush encoders, write the rest of the audio, and move the file into place."""
        if self._container is None:
            raise InputError(f"{self.path}: no frame was written")
        self._write_audio_until(float("inf"))
        for stream in (self._vstream, self._astream):
            if stream is not None:
                for packet in stream.encode(None):
                    self._container.mux(packet)
        self._container.close()
        self._container = None
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop a partial file (after an error or an interrupt)."""
        if self._container is not None:
            try:
                self._container.close()
            except av.error.FFmpegError:
                pass
            self._container = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass(frozen=True)
class StreamCounts:
    """What an encoded file holds, counted by decoding it (for tests and reports)."""

    video_frames: int
    width: int
    height: int
    audio_seconds: float  # 0.0 when there is no audio stream


def count_streams(path: str | Path) -> StreamCounts:
    """Decode a file fully and count its video frames and seconds of audio."""
    with _open(Path(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(v))
        w, h = v.codec_context.width, v.codec_context.height
    audio_s = 0.0
    with _open(Path(path)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            samples = sum(f.samples for f in c.decode(a))
            audio_s = samples / float(a.codec_context.sample_rate)
    return StreamCounts(frames, w, h, audio_s)
