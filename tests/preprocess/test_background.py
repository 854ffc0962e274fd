"""Static background plate: masked median over a bounded subsample, hole filling."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from erlnet.errors import InputError
from erlnet.preprocess.background import (
    BackgroundPlate,
    _masked_median,
    _prune_network,
    _sorting_network,
    harmonic_fill,
)

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


# ---------------------------------------------------------------- fast paths (sorting network, multigrid)


@pytest.mark.parametrize("n", range(1, 11))
def test_sorting_network_sorts_every_binary_input(n: int) -> None:
    # 0-1 principle: a comparator network that sorts all 2^n binary inputs sorts every input.
    bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1  # (2^n, n)
    planes = [bits[:, i].copy() for i in range(n)]
    for i, j in _sorting_network(n):
        assert i < j
        planes[i], planes[j] = np.minimum(planes[i], planes[j]), np.maximum(planes[i], planes[j])
    np.testing.assert_array_equal(np.stack(planes, axis=1), np.sort(bits, axis=1))


@pytest.mark.parametrize("n", [16, 25, 50, 64])
def test_pruned_network_gives_the_lower_ranks(n: int) -> None:
    x = np.random.default_rng(n).integers(0, 256, (n, 500))
    keep = range(n // 2 + 1)
    network = _prune_network(_sorting_network(n), keep)
    assert len(network) < len(_sorting_network(n))
    planes = list(x.copy())
    for i, j in network:
        planes[i], planes[j] = np.minimum(planes[i], planes[j]), np.maximum(planes[i], planes[j])
    np.testing.assert_array_equal(np.stack(planes)[: n // 2 + 1], np.sort(x, axis=0)[: n // 2 + 1])


@pytest.mark.parametrize("workers", [1, 2])
def test_masked_median_many_samples_with_hole_columns(workers: int) -> None:
    # 50 samples (the real clip's count); a band of columns that is never valid is skipped, not wrong.
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, (50, 21, 90, 3), dtype=np.uint8)
    valid = rng.random((50, 21, 90)) < rng.random((1, 21, 90))  # per-pixel rates 0..1: counts 0..50
    valid[:, :, 40:75] = False
    valid[:, 3, 10] = True  # a pixel valid in every sample
    median, count = _masked_median(frames, valid, rows_per_chunk=4, workers=workers)
    ref = np.where(valid[..., None], frames.astype(float), np.nan)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanmedian(ref, axis=0)
    ok = count > 0
    assert ok.mean() > 0.5 and count.max() == 50
    np.testing.assert_array_equal(median[ok], expected[ok])
    assert (median[~ok] == 0).all()


def _smooth_scene(h: int, w: int, c: int = 3) -> np.ndarray:
    """Smooth colour gradients plus a sharp edge and texture along it: (h, w, c) float in 0..255."""
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    base = [80 + 60 * np.sin(xx / 37 + k) + 0.3 * yy for k in range(c)]
    img = np.stack(base, axis=-1)
    img[: h // 3] += 40.0  # a picture-frame edge the hole cuts through
    img += np.random.default_rng(0).uniform(-6, 6, img.shape)
    return np.clip(img, 0, 255)


def _person_hole(h: int, w: int) -> np.ndarray:
    """Head-and-shoulders blob touching the bottom border, ~45% of the frame."""
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    head = ((yy - 0.42 * h) / (0.3 * h)) ** 2 + ((xx - 0.5 * w) / (0.2 * w)) ** 2 < 1
    body = (yy > 0.65 * h) & (np.abs(xx - 0.5 * w) < 0.38 * w)
    return head | body


def _roughness(image: np.ndarray, hole: np.ndarray) -> float:
    """Largest |Laplacian| strictly inside the hole (a harmonic fill has ~0 there)."""
    inner = cv2.erode(hole.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    lap = cv2.Laplacian(image.astype(np.float32), cv2.CV_32F)
    return float(np.abs(lap[inner]).max())


@pytest.mark.parametrize("shape", [(128, 128), (97, 131)])
def test_multigrid_fill_matches_exact_solve(shape: tuple[int, int]) -> None:
    h, w = shape
    img, hole = _smooth_scene(h, w), _person_hole(h, w)
    damaged = np.where(hole[..., None], 0.0, img)
    exact = harmonic_fill(damaged, hole, direct_max_pixels=h * w)  # one sparse LU
    fast = harmonic_fill(damaged, hole, direct_max_pixels=64)  # 4+ grid levels, default tolerance
    tight = harmonic_fill(damaged, hole, direct_max_pixels=64, tol=0.01)
    assert hole.mean() > 0.35
    np.testing.assert_array_equal(fast[~hole], damaged[~hole])  # known pixels untouched
    err = np.abs(fast - exact)[hole]
    assert err.max() < 1.0 and err.mean() < 0.1  # below 8-bit rounding
    assert np.abs(tight - exact)[hole].max() < 0.02
    # Smooth: no seams or speckle inside the hole (the exact fill's own local variation, no more).
    assert _roughness(fast, hole) < _roughness(exact, hole) + 1.0


def test_multigrid_fill_reproduces_ramp_in_large_hole() -> None:
    # A linear ramp is discrete-harmonic: the fill of a hole covering most of the image must return it.
    yy, xx = np.mgrid[0:150, 0:170].astype(float)
    ramp = 20.0 + 1.1 * xx + 0.6 * yy
    hole = np.zeros(ramp.shape, bool)
    hole[6:144, 5:160] = True  # 87% of the image, away from the (reflecting) borders
    damaged = np.where(hole, 0.0, ramp)
    filled = harmonic_fill(damaged, hole)  # 2-D input, default settings: multigrid path
    assert filled.shape == ramp.shape and hole.sum() > 4096
    assert np.abs(filled - ramp).max() < 0.5
    filled5 = harmonic_fill(np.repeat(damaged[..., None], 5, axis=-1), hole, tol=0.05)  # > 4 channels
    assert np.abs(filled5 - ramp[..., None]).max() < 0.05


def test_thin_holes_use_a_single_grid() -> None:
    # 1 px wide scratches have no 2x2 hole block to coarsen into: solved directly, still exact.
    img = _smooth_scene(64, 80)
    hole = np.zeros((64, 80), bool)
    hole[::3] = True
    hole[:, ::4] = True
    exact = harmonic_fill(img, hole, direct_max_pixels=hole.size)
    np.testing.assert_allclose(harmonic_fill(img, hole, direct_max_pixels=16), exact, atol=1e-3)


def test_plate_with_large_hole_is_filled_smoothly() -> None:
    # End to end through the multigrid path: a static person covering ~45% of a 128x128 clip.
    h = w = 128
    bg = _smooth_scene(h, w).astype(np.uint8)
    person = _person_hole(h, w)
    plate = BackgroundPlate((h, w), n_frames_expected=8, dilate_px=0)
    rng = np.random.default_rng(2)
    for _ in range(8):
        frame = bg.copy()
        frame[person] = rng.integers(0, 256, 3, dtype=np.uint8)
        plate.add(frame, person.astype(np.uint8))
    image, hole = plate.result()
    np.testing.assert_array_equal(hole, person)
    np.testing.assert_array_equal(image[~hole], bg[~hole])
    exact = harmonic_fill(bg.astype(float), hole, direct_max_pixels=hole.size)
    assert np.abs(image.astype(float) - exact)[hole].max() <= 1.5  # 1.0 tolerance + uint8 rounding
    assert image[hole].min() > 20  # no black holes
