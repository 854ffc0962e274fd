from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from erlnet.errors import InputError
from erlnet.face import topology as tp
from erlnet.face.pose import normalise_canonical
from erlnet.face.representation import (
    LandmarkRepresentation,
    LandmarkRepresentationConfig,
    MotionRepresentation,
    estimate_neutral,
)
from erlnet.face.tracking import FaceTracker, TrackerConfig


@pytest.fixture(scope="module")
def neutral() -> np.ndarray:
    """Astronaut's MediaPipe landmarks in the canonical frame (metres), (478, 3)."""
    with FaceTracker(TrackerConfig(static_image=True)) as tracker:
        lms = tracker.process(data.astronaut()).landmarks
    assert lms is not None
    return normalise_canonical(lms)


def talking(neutral: np.ndarray, T: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(T, 478, 3) canonical clip with jaw opening (0 in ~40% of frames) and two blinks; + opening."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) / 25.0
    opening = np.clip(np.sin(2 * np.pi * 3.1 * t) + 0.5 * np.sin(2 * np.pi * 1.3 * t), 0.0, None)
    x = np.repeat(neutral[None].astype(np.float64), T, axis=0)
    below = neutral[:, 1] > neutral[[13, 14], 1].mean()
    x[:, below, 1] += 0.02 * opening[:, None]  # up to ~2 cm jaw drop
    for contour in (tp.RIGHT_EYE_CONTOUR, tp.LEFT_EYE_CONTOUR):
        up, low = contour[1:8], contour[15:8:-1]
        for a in (30, 70):
            x[a : a + 3, up] = neutral[low]
    return x + rng.normal(scale=2e-4, size=x.shape), opening


def test_round_trip_and_zero_on_neutral(neutral: np.ndarray) -> None:
    clip, _ = talking(neutral, 40)
    rep = LandmarkRepresentationConfig().setup()
    assert isinstance(rep, MotionRepresentation) and rep.name == "landmarks" and rep.dim == 478 * 3
    expr = rep.encode(clip, neutral)
    assert expr.shape == (40, rep.dim) and expr.dtype == np.float32
    assert np.abs(rep.decode(expr, neutral) - clip).max() < 1e-6
    assert np.abs(rep.encode(neutral[None], neutral)).max() == 0.0


def test_expressive_subset_round_trip(neutral: np.ndarray) -> None:
    clip, _ = talking(neutral, 20)
    rep = LandmarkRepresentation(LandmarkRepresentationConfig(points="expressive"))
    assert rep.dim == 3 * len(tp.EXPRESSIVE) < 478 * 3
    back = rep.decode(rep.encode(clip, neutral), neutral)
    assert np.abs(back[:, tp.EXPRESSIVE] - clip[:, tp.EXPRESSIVE]).max() < 1e-6
    rest = np.setdiff1d(np.arange(478), tp.EXPRESSIVE)
    assert np.allclose(back[:, rest], neutral[rest], atol=1e-7)
    # The subset still carries the mouth: its opening survives the round trip.
    assert np.allclose(tp.mouth_opening(back), tp.mouth_opening(clip), atol=1e-4)


def test_expressions_are_scale_invariant_and_transfer(neutral: np.ndarray) -> None:
    clip, _ = talking(neutral, 30)
    rep = LandmarkRepresentation()
    expr = rep.encode(clip, neutral)
    assert np.allclose(rep.encode(1.3 * clip, 1.3 * neutral), expr, atol=1e-6)
    # Transferred to a smaller face, the mouth opens by the same fraction of that face's eye distance.
    small = 0.8 * neutral
    moved = rep.decode(expr, small)
    assert np.allclose(tp.mouth_opening(moved), tp.mouth_opening(clip), atol=1e-4)


def test_estimate_neutral_ignores_speech_and_blinks(neutral: np.ndarray) -> None:
    clip, opening = talking(neutral, 150)
    assert (opening == 0).mean() > 0.3
    est = estimate_neutral(clip)
    assert est.shape == (478, 3) and est.dtype == np.float32
    assert np.abs(est - neutral).max() < 5e-4  # metres; the clip mean is off by centimetres
    assert np.abs(clip.mean(axis=0) - neutral).max() > 5e-3
    with pytest.raises(InputError, match="canonical landmarks"):
        estimate_neutral(np.zeros((0, 478, 3)))


def test_bad_inputs_raise(neutral: np.ndarray) -> None:
    rep = LandmarkRepresentation()
    with pytest.raises(InputError, match="points"):
        LandmarkRepresentation(LandmarkRepresentationConfig(points="some"))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="expressions"):
        rep.decode(np.zeros((2, 5)), neutral)
    with pytest.raises(InputError, match="neutral"):
        rep.encode(neutral[None], neutral[:468])
