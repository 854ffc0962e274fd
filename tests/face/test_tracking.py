from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from erlnet.errors import InputError
from erlnet.face import topology as tp
from erlnet.face.tracking import FaceTracker, TrackerConfig, _pick_face, track_frames


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


def test_astronaut_has_478_landmarks_in_plausible_places(astronaut: np.ndarray) -> None:
    with FaceTracker(TrackerConfig(static_image=True)) as tracker:
        tr = tracker.process(astronaut)
    assert tr.landmarks is not None and tr.landmarks.shape == (478, 3)
    assert tr.landmarks.dtype == np.float32 and tr.n_faces == 1
    lm = tr.landmarks
    # The face is in the upper middle of the photo (x ~ 175-270, y ~ 65-180 px).
    x0, y0, x1, y1 = tr.box
    assert 150 < x0 < x1 < 300 and 40 < y0 < y1 < 210
    # Anatomy: brows above eyes above nose tip above mouth above chin; subject's left eye on image right.
    assert lm[tp.BROWS, 1].mean() < lm[tp.EYES, 1].mean() < lm[tp.NOSE_TIP, 1] < lm[tp.MOUTH, 1].mean()
    assert lm[tp.MOUTH, 1].mean() < lm[tp.CHIN, 1]
    assert lm[tp.LEFT_EYE, 0].mean() > lm[tp.RIGHT_EYE, 0].mean()
    # z shares the x unit: the nose tip is clearly nearer than the face sides (tens of pixels).
    assert lm[tp.NOSE_TIP, 2] < lm[[234, 454], 2].mean() - 20


def test_blank_and_noise_frames_have_no_face() -> None:
    rng = np.random.default_rng(0)
    with FaceTracker() as tracker:
        blank = tracker.process(np.full((256, 256, 3), 127, np.uint8))
        noise = tracker.process(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    for tr in (blank, noise):
        assert tr.landmarks is None and tr.n_faces == 0 and tr.box is None


def test_downscaled_tracking_reports_input_pixels(astronaut: np.ndarray) -> None:
    with FaceTracker(TrackerConfig(static_image=True)) as tracker:
        full = tracker.process(astronaut).landmarks
    with FaceTracker(TrackerConfig(static_image=True, max_side=256)) as tracker:
        half = tracker.process(astronaut).landmarks
    assert full is not None and half is not None
    # Same pixel frame despite the 2x downscale (a unit error would be off by ~100 px).
    assert np.median(np.linalg.norm(full[:, :2] - half[:, :2], axis=1)) < 3.0


def test_track_frames_marks_missing_frames(astronaut: np.ndarray) -> None:
    blank = np.zeros_like(astronaut)
    lms, valid, n_faces = track_frames([astronaut, blank, astronaut])
    assert lms.shape == (3, 478, 3)
    assert valid.tolist() == [True, False, True] and n_faces.tolist() == [1, 0, 1]
    assert np.isnan(lms[1]).all() and np.isfinite(lms[[0, 2]]).all()


def test_bad_frame_raises_input_error() -> None:
    with FaceTracker() as tracker:
        with pytest.raises(InputError, match="RGB uint8"):
            tracker.process(np.zeros((64, 64), np.uint8))
        with pytest.raises(InputError, match="RGB uint8"):
            tracker.process(np.zeros((64, 64, 3), np.float32))


def test_pick_face_prefers_continuity_then_size() -> None:
    def square(cx: float, half: float) -> np.ndarray:
        pts = np.array([[cx - half, 100 - half, 0], [cx + half, 100 + half, 0]], np.float32)
        return np.repeat(pts, 3, axis=0)

    small_left, big_right = square(50, 10), square(300, 40)
    assert _pick_face([small_left, big_right], previous=None) is big_right
    assert _pick_face([small_left, big_right], previous=square(60, 10)) is small_left


def test_competing_faces_are_counted() -> None:
    face = data.astronaut()[0:256, 128:384]
    two = np.ascontiguousarray(np.concatenate([face, face], axis=1))
    with FaceTracker(TrackerConfig(count_faces_every=2)) as tracker:
        tracks = [tracker.process(two) for _ in range(4)]
    assert [t.counted for t in tracks] == [True, False, True, False]
    assert all(t.n_faces == 2 for t in tracks if t.counted)
    assert all(t.landmarks is not None for t in tracks)
