"""Static background plate: masked median over a bounded subsample, hole filling."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from erlnet.errors import InputError
from erlnet.preprocess.background import BackgroundPlate, _masked_median, harmonic_fill

H, W = 72, 96
BLOCK = (slice(50, 72), slice(36, 60))  # always occluded (a static torso): never background


def textured_background(seed: int = 0) -> np.ndarray:
    """Smooth gradient plus fine texture (+-10). (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    base = np.stack([60 + 1.2 * xx, 50 + 1.5 * yy, 180 - 0.8 * xx - 0.5 * yy], axis=-1)
    return np.clip(base + rng.uniform(-10, 10, (H, W, 3)), 0, 255).astype(np.uint8)


def occluded_frames(n: int, seed: int = 1) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Background + a disk moving across the frame + the static block; labels mark the occluders."""
    rng = np.random.default_rng(seed)
    bg = textured_background()
    frames, labels = [], []
    for i in range(n):
        frame = bg.copy()
        lab = np.zeros((H, W), np.uint8)
        centre = (int(10 + (W - 20) * i / max(n - 1, 1)), 28)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(frame, centre, 16, colour, -1)
        cv2.circle(lab, centre, 16, 2, -1)
        frame[BLOCK] = rng.integers(0, 256, 3, dtype=np.uint8)
        lab[BLOCK] = 1
        frames.append(frame)
        labels.append(lab)
    return bg, frames, labels


def build(frames: list[np.ndarray], labels: list[np.ndarray], **kwargs: object) -> BackgroundPlate:
    plate = BackgroundPlate((H, W), **kwargs)  # type: ignore[arg-type]
    for f, lab in zip(frames, labels, strict=True):
        plate.add(f, lab)
    return plate


def test_plate_recovers_background_where_visible() -> None:
    bg, frames, labels = occluded_frames(40)
    plate, hole = build(frames, labels, n_frames_expected=40, max_samples=16).result()
    assert plate.dtype == np.uint8 and plate.shape == (H, W, 3) and hole.shape == (H, W)
    seen = ~hole
    assert seen.mean() > 0.8
    err = np.abs(plate.astype(float) - bg.astype(float))[seen]
    assert err.mean() <= 2.0
    # The moving disk's path is fully recovered (it was background in most samples).
    assert not hole[20:36].any()


def test_never_visible_region_is_a_filled_hole() -> None:
    bg, frames, labels = occluded_frames(30)
    accumulator = build(frames, labels, max_samples=16)
    plate, hole = accumulator.result()
    assert accumulator.hole_fraction == pytest.approx(hole.mean())
    block = np.zeros((H, W), bool)
    block[BLOCK] = True
    assert hole[block].all()
    grown = cv2.dilate(block.astype(np.uint8), np.ones((13, 13), np.uint8)).astype(bool)
    assert not hole[~grown].any()  # the hole is the block plus the dilation margin, no more
    # Filled from its surroundings: close to the smooth underlying gradient, nowhere black.
    filled = plate[hole].astype(float)
    truth = bg[hole].astype(float)
    assert np.abs(filled - truth).mean() < 8.0
    assert filled.min() > 20


def test_person_dilation_keeps_halos_out() -> None:
    # A nearly static occluder whose labels miss a 3 px halo (hair the segmenter did not catch):
    # the halo is in every sample, so only the dilation of the person region keeps it out.
    rng = np.random.default_rng(5)
    bg = textured_background()
    frames, labels = [], []
    for i in range(12):
        frame, lab = bg.copy(), np.zeros((H, W), np.uint8)
        centre = (48 + i % 2, 30)
        cv2.circle(frame, centre, 16, tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
        cv2.circle(lab, centre, 13, 2, -1)
        frames.append(frame)
        labels.append(lab)
    errors = []
    for dilate in (0, 5):
        plate, hole = build(frames, labels, dilate_px=dilate).result()
        errors.append(np.abs(plate.astype(float) - bg.astype(float))[~hole].mean())
    assert errors[1] <= 2.0
    assert errors[0] > errors[1] + 1.0


@pytest.mark.parametrize("expected", [None, 1000, 100])
def test_memory_is_bounded_and_samples_evenly_spread(expected: int | None) -> None:
    plate = BackgroundPlate((4, 5), n_frames_expected=expected, max_samples=16)
    frame = np.zeros((4, 5, 3), np.uint8)
    labels = np.zeros((4, 5), np.uint8)
    for _ in range(1000):
        plate.add(frame, labels)
    idx = np.array(plate.sample_indices)
    assert plate.n_frames_seen == 1000
    assert 8 <= plate.n_samples <= 16
    assert idx[0] == 0
    steps = np.diff(idx)
    assert (steps == steps[0]).all()  # evenly spread
    assert idx[-1] + 2 * steps[0] >= 1000  # reaching the end of the video
    assert plate._frames.shape[0] == 16  # storage never grows


def test_known_length_uses_fixed_stride() -> None:
    plate = BackgroundPlate((2, 2), n_frames_expected=1000, max_samples=64)
    for i in range(1000):
        plate.add(np.full((2, 2, 3), i % 256, np.uint8), np.zeros((2, 2), np.uint8))
    assert plate.sample_indices == list(range(0, 1000, 16))


def test_masked_median_matches_nanmedian() -> None:
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (7, 5, 6, 3), dtype=np.uint8)
    valid = rng.random((7, 5, 6)) < 0.6
    valid[:, 0, 0] = False
    median, count = _masked_median(frames, valid, rows_per_chunk=2)
    ref = frames.astype(float)
    ref[~np.broadcast_to(valid[..., None], ref.shape)] = np.nan
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanmedian(ref, axis=0)
    ok = count > 0
    np.testing.assert_allclose(median[ok], expected[ok])
    assert count[0, 0] == 0 and (median[0, 0] == 0).all()
    np.testing.assert_array_equal(count, valid.sum(axis=0))


def test_harmonic_fill_reproduces_linear_ramp() -> None:
    yy, xx = np.mgrid[0:40, 0:50].astype(float)
    ramp = 3.0 + 2.0 * xx - 1.5 * yy  # harmonic: the discrete Laplace solution is exact
    hole = np.zeros((40, 50), bool)
    hole[10:30, 15:35] = True
    damaged = ramp.copy()
    damaged[hole] = 0.0
    filled = harmonic_fill(damaged, hole)
    np.testing.assert_allclose(filled, ramp, atol=1e-8)


def test_all_hole_gives_grey_plate() -> None:
    plate = BackgroundPlate((6, 8))
    plate.add(np.zeros((6, 8, 3), np.uint8), np.ones((6, 8), np.uint8))
    image, hole = plate.result()
    assert hole.all() and (image == 127).all()


def test_bad_inputs_are_reported() -> None:
    plate = BackgroundPlate((H, W))
    with pytest.raises(InputError, match="no frame"):
        plate.result()
    with pytest.raises(InputError, match="uint8 frame"):
        plate.add(np.zeros((H, W + 1, 3), np.uint8), np.zeros((H, W), np.uint8))
    with pytest.raises(InputError, match="labels"):
        plate.add(np.zeros((H, W, 3), np.uint8), np.zeros((H, 1), np.uint8))
    with pytest.raises(InputError, match="n_frames_expected"):
        BackgroundPlate((H, W), n_frames_expected=0)
