"""`erlnet render`: drive an avatar with a motion sequence and write an mp4 (with audio).

Frames are rendered a few at a time and streamed into the encoder, so memory stays bounded for any
length. No Lightning here: rendering needs only torch.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from erlnet.errors import InputError
from erlnet.io.audio import load_audio
from erlnet.io.subject import Subject
from erlnet.io.video import VideoWriter
from erlnet.progress import progress as progress_bar
from erlnet.render.avatar import Avatar, subject_representation, to_uint8_frames
from erlnet.types import Motion

log = logging.getLogger(__name__)

AUDIO_SR = 16000


def _audio(audio: np.ndarray | str | Path | None) -> np.ndarray | None:
    """A 16 kHz mono waveform (S,) float32 from an array or an audio/video file (None: silent)."""
    if audio is None:
        return None
    if isinstance(audio, (str, Path)):
        wav = load_audio(audio, sr=AUDIO_SR)
        if wav is None:
            raise InputError(f"{audio}: has no audio stream")
        return wav
    wav = np.asarray(audio, dtype=np.float32).reshape(-1)
    if not np.isfinite(wav).all():
        raise InputError("audio holds NaN or infinite samples")
    return wav


def motion_frames(avatar: Avatar, motion: Motion, batch_size: int = 4):
    """Yield the rendered frames of `motion` in order, as (b, S, S, 3) uint8 batches."""
    avatar.check_motion(motion)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(motion), batch_size):
        out = avatar.render(motion, start, min(len(motion), start + batch_size))
        yield to_uint8_frames(out.rgb)


def render_motion(
    avatar: Avatar,
    motion: Motion,
    out_path: str | Path,
    audio: np.ndarray | str | Path | None = None,
    batch_size: int = 4,
    progress: bool = True,
) -> Path:
    """Render every frame of `motion` with `avatar` into the mp4 `out_path` at the motion's frame rate,
    with `audio` (16 kHz waveform (S,) or a file) muxed in. Returns the written path.

    Frame rate: H.264 in mp4 needs an integer rate here, so a fractional `motion.fps` is rounded.
    A `motion` of another representation or expression width gives an `InputError`.
    """
    avatar.check_motion(motion)
    fps = int(round(motion.fps))
    if fps < 1 or not math.isfinite(motion.fps):
        raise InputError(f"motion frame rate {motion.fps} is not usable")
    wav = _audio(audio)
    if wav is not None:
        seconds_audio, seconds_video = wav.size / AUDIO_SR, len(motion) / fps
        if abs(seconds_audio - seconds_video) > 1.0:
            log.warning("audio is %.1f s long, the motion %.1f s: the video ends with the longer one",
                        seconds_audio, seconds_video)
    s = avatar.image_size
    frames = (f for batch in motion_frames(avatar, motion, batch_size) for f in batch)
    with torch.inference_mode(), VideoWriter(out_path, fps=fps, size=(s, s), audio=wav, sample_rate=AUDIO_SR) as w:
        for frame in progress_bar(frames, total=len(motion), desc="render", enabled=progress):
            w.write(frame)
    return Path(out_path)


def motion_from_subject(subject: Subject, split: str | tuple[int, int] = "all") -> Motion:
    """The tracked motion of a subject's frames: a split name ("train", "val", "test"), "all", or a
    [start, stop) frame range. Drives an avatar with its own (e.g. held-out) motion."""
    n = len(subject)
    if isinstance(split, str):
        idx = np.arange(n) if split == "all" else subject.split_indices(split)
    else:
        start, stop = int(split[0]), int(split[1])
        if not 0 <= start < stop <= n:
            raise InputError(f"frame range [{start}, {stop}) is outside the subject's {n} frames")
        idx = np.arange(start, stop)
    if len(idx) == 0:
        raise InputError(f"{subject.root}: split {split!r} holds no frame")
    tr = subject.tracking()
    return Motion(
        expression=tr["expression"][idx].astype(np.float32),
        blink=tr["blink"][idx].astype(np.float32),
        rotation=tr["rotation"][idx].astype(np.float32),
        translation=tr["translation"][idx].astype(np.float32),
        fps=float(subject.fps),
        representation=subject_representation(subject),
    )
