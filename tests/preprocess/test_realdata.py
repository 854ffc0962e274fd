"""Preprocessing of real clips from ../shared/data (skipped when the folder is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from erlnet.io.subject import Subject
from erlnet.preprocess.pipeline import PreprocessConfig, run_preprocess

pytestmark = pytest.mark.realdata


@pytest.mark.parametrize("clip", ["grid_s1/video/bbaf2n.mpg", "retalking/face_3.mp4"])
def test_real_clip_is_tracked(clip: str, shared_data: Path, tmp_path: Path) -> None:
    video = shared_data / clip
    if not video.exists():
        pytest.skip(f"{video} not found")
    results = run_preprocess(video, tmp_path / "s", PreprocessConfig(size=256), show_progress=False)
    track = next(r.info for r in results if r.name == "track")
    assert track["tracked_fraction"] >= 0.98
    s = Subject(tmp_path / "s")
    tr = s.tracking()
    assert s.manifest.has_audio and len(s) == track["n_frames"]
    # the crop keeps the face inside the frame and the head pose stays plausible for a talking person
    xy = tr["landmarks"][:, :, :2]
    assert xy.min() > -0.05 * 256 and xy.max() < 1.05 * 256
    yaw_pitch = np.degrees(np.arcsin(np.clip(np.abs(tr["rotation"][:, [0, 1], 2]), 0, 1)))
    assert np.median(yaw_pitch) < 30
