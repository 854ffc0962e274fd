"""Face pipeline on a real talking-head clip (skips when ../shared/data is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from erlnet.face import pose as P
from erlnet.face import topology as tp
from erlnet.face.blink import blink_signal, detect_blinks, eye_aspect_ratio
from erlnet.face.representation import LandmarkRepresentation, estimate_neutral
from erlnet.face.smoothing import lag_frames, smooth_landmarks
from erlnet.face.tracking import track_frames

pytestmark = pytest.mark.realdata


def test_real_clip_tracks_smooths_and_poses(shared_data: Path) -> None:
    import av

    clip = shared_data / "sadtalker" / "WDA_AlexandriaOcasioCortez_000.mp4"
    if not clip.exists():
        pytest.skip(f"real data clip not found: {clip}")
    with av.open(str(clip)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == 100:
                break
    size = frames[0].shape[1]
    lms, valid, n_faces = track_frames(frames)
    assert valid.all() and (n_faces == 1).all()

    smooth = smooth_landmarks(lms, valid, 25.0)
    raw_m, smooth_m = tp.mouth_opening(lms), tp.mouth_opening(smooth)
    assert lag_frames(raw_m, smooth_m, 5) == 0 and np.corrcoef(raw_m, smooth_m)[0, 1] > 0.98
    # This speaker blinks often (5 blinks in the first 100 frames); smoothing must keep every one.
    raw_blinks = detect_blinks(blink_signal(eye_aspect_ratio(lms)))
    assert len(raw_blinks) >= 4
    assert len(detect_blinks(blink_signal(eye_aspect_ratio(smooth)))) == len(raw_blinks)

    K = P.default_intrinsics(size)
    canon = P.fit_canonical(smooth)
    poses = P.solve_poses(smooth, canon, K)
    # She faces the camera: the median head rotation is near the canonical (frontal) one.
    assert np.all(np.abs(np.median(P.euler_from_matrix(poses.R, degrees=True), axis=0)) < 10)
    reproj = np.linalg.norm(P.project(canon, poses, K) - smooth, axis=-1)
    assert np.median(reproj[:, tp.RIGID]) < 3.0  # pixels: the rigid points really are rigid

    head = P.to_canonical(smooth, poses, K)
    neutral = estimate_neutral(head)
    expr = LandmarkRepresentation().encode(head, neutral)
    assert np.isfinite(expr).all()
    # The neutral has a closed-ish mouth; rigid points barely move (expression units = eye distances).
    assert tp.mouth_opening(neutral) <= np.quantile(tp.mouth_opening(head), 0.3)
    rigid_disp = np.linalg.norm(expr.reshape(len(expr), -1, 3)[:, tp.RIGID], axis=-1)
    mouth_disp = np.linalg.norm(expr.reshape(len(expr), -1, 3)[:, tp.MOUTH], axis=-1)
    assert np.median(rigid_disp) < 0.02 and np.median(mouth_disp) > 2 * np.median(rigid_disp)
