"""Small generated media shared by tests (importable: tests/ is on sys.path through its conftest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def portrait_frames(n: int) -> list[np.ndarray]:
    """n head-and-shoulders crops (256, 256, 3) uint8 of the astronaut photo drifting a few pixels,
    so every frame has one face."""
    from skimage import data

    img = data.astronaut()
    out = []
    for i in range(n):
        dx, dy = int(round(3 * np.sin(i / 3))), int(round(2 * np.cos(i / 4)))
        out.append(np.ascontiguousarray(img[10 + dy : 266 + dy, 110 + dx : 366 + dx]))
    return out


def talking_subject(base: Path, n_frames: int, size: int = 128) -> Path:
    """Preprocess `n_frames` portrait frames with a voiced, 3 Hz syllable-like tone as their audio
    into base/subject (returned); the clip is base/face.mp4."""
    from erlnet.io.video import VideoWriter
    from erlnet.preprocess.pipeline import PreprocessConfig, run_preprocess

    t = np.arange(int(n_frames / 25 * 16000)) / 16000
    wav = (0.3 * np.clip(np.sin(2 * np.pi * 3 * t), 0, None) * np.sin(2 * np.pi * 170 * t)).astype(np.float32)
    with VideoWriter(base / "face.mp4", fps=25, audio=wav) as w:
        for f in portrait_frames(n_frames):
            w.write(f)
    run_preprocess(base / "face.mp4", base / "subject", PreprocessConfig(size=size), show_progress=False)
    return base / "subject"
