"""Shared fixtures: tiny generated media, and the path of the real data (tests skip when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(os.environ.get("ERLNET_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA.resolve()


def tone(seconds: float, sr: int = 16000, hz: float = 220.0) -> np.ndarray:
    """A quiet sine tone (S,) float32."""
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture
def tiny_video(tmp_path: Path):
    """Factory writing a small mp4 whose frame i has brightness 4*i (and optional audio)."""
    from erlnet.io.video import VideoWriter

    def make(n: int = 20, size: int = 64, fps: int = 25, audio: bool = True, name: str = "v.mp4") -> Path:
        path = tmp_path / name
        wav = tone(n / fps) if audio else None
        with VideoWriter(path, fps=fps, audio=wav) as w:
            for i in range(n):
                w.write(np.full((size, size, 3), min(255, 4 * i), np.uint8))
        return path

    return make


@pytest.fixture
def one_thread():
    """One intra-op torch thread: tiny ops are dominated by thread hand-offs on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
