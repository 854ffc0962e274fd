"""Image metrics: CPBD against the reference implementation's numbers, PSNR/SSIM/band error on
hand-made images, the neck band, mouth LMD."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from erlnet.errors import InputError
from erlnet.eval.metrics import band_error, cpbd, mouth_lmd, neck_band, psnr, ssim, to_gray
from erlnet.face import topology as tp
from media import portrait_frames

# CPBD of the images made by `_cpbd_image`, computed by the reference implementation: the PyPI package
# `cpbd` 1.0.7 (Python port of Narvekar & Karam's code) with scikit-image 0.26, SciPy 1.17, NumPy 2.4,
# installed only in a throwaway venv:
#   python3 -m venv /tmp/cpbdref && /tmp/cpbdref/bin/pip install cpbd
#   .venv/bin/python -c "import sys; sys.path[:0] = ['tests', 'tests/eval']; import numpy as np, test_image_metrics as t; [np.save(f'/tmp/cpbd_{k}.npy', t._cpbd_image(k)) for k in t.CPBD_REFERENCE]"
#   /tmp/cpbdref/bin/python -c "import sys, numpy as np, scipy.ndimage; scipy.ndimage.imread = None; import cpbd; [print(k, cpbd.compute(np.load(f'/tmp/cpbd_{k}.npy'))) for k in sys.argv[1:]]" blur0 blur0.5 blur1.0 blur2.0 lowcontrast crop
# (`scipy.ndimage.imread` is only imported by the package's command line and no longer exists in SciPy.)
CPBD_REFERENCE = {
    "blur0": 0.487018,
    "blur0.5": 0.354750,
    "blur1.0": 0.125450,
    "blur2.0": 0.014593,
    "lowcontrast": 0.875171,  # contrast <= 50 in every block: the 5-pixel just-noticeable width
    "crop": 0.453496,  # 200 x 150: only whole 64 x 64 blocks count
}


def _cpbd_image(name: str) -> np.ndarray:
    """Deterministic gray test images: the first portrait frame of tests/media.py, blurred or cut."""
    g = to_gray(portrait_frames(1)[0])
    if name.startswith("blur"):
        s = float(name[4:])
        return g if s == 0 else cv2.GaussianBlur(g, (0, 0), s)
    if name == "lowcontrast":
        return (g // 6).astype(np.uint8)
    return np.ascontiguousarray(g[30:230, 40:190])


@pytest.mark.parametrize("name", list(CPBD_REFERENCE))
def test_cpbd_agrees_with_the_reference_implementation(name: str) -> None:
    assert cpbd(_cpbd_image(name)) == pytest.approx(CPBD_REFERENCE[name], abs=0.02)


def test_cpbd_falls_with_blur_and_reads_rgb_as_luma() -> None:
    values = [cpbd(_cpbd_image(f"blur{s}")) for s in ("0", "0.5", "1.0", "2.0")]
    assert values == sorted(values, reverse=True) and values[0] > values[-1] + 0.3
    rgb = portrait_frames(1)[0]
    assert cpbd(rgb) == cpbd(to_gray(rgb))
    assert cpbd(np.full((128, 128), 90, np.uint8)) == 0.0  # no edge block
    assert cpbd(np.zeros((40, 300), np.uint8)) == 0.0  # smaller than one block


def test_to_gray_uses_601_luma_rounded() -> None:
    px = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [10, 20, 30]]], np.uint8)
    assert to_gray(px).tolist() == [[76, 150, 29, 255, 18]]
    with pytest.raises(InputError):
        to_gray(np.zeros((4, 4, 4), np.uint8))


def test_psnr_ssim_and_band_error_on_known_images() -> None:
    a = portrait_frames(1)[0]
    b = np.clip(a.astype(np.int16) + 10, 0, 255).astype(np.uint8)
    mse = np.mean((a.astype(float) - b) ** 2)
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / mse))
    assert psnr(a, a) == float("inf") and ssim(a, a) == pytest.approx(1.0)
    noisy = np.clip(a + np.random.default_rng(0).normal(0, 25, a.shape), 0, 255).astype(np.uint8)
    assert 0.0 < ssim(a, noisy) < ssim(a, b) < 1.0
    mask = np.zeros(a.shape[:2], bool)
    mask[:10, :10] = True
    x = np.zeros((256, 256, 3), np.uint8)
    y = x.copy()
    y[:10, :10] = 6
    y[200:] = 100  # outside the mask: ignored
    assert band_error(y, x, mask) == (6.0, 36.0)
    assert np.isnan(band_error(y, x, np.zeros_like(mask))[0])
    with pytest.raises(InputError):
        psnr(a, a[:100])
    with pytest.raises(InputError):
        ssim(a[:5, :5], a[:5, :5])


def _face(y_mouth: float) -> np.ndarray:
    lms = np.zeros((478, 3), np.float32)
    lms[:, 0], lms[:, 1] = 64, 40
    lms[tp.MOUTH_CORNERS, 1] = y_mouth
    lms[tp.JAW, 0] = np.linspace(30, 98, len(tp.JAW))
    lms[tp.JAW, 1] = 70
    return lms


def test_neck_band_follows_the_seam_below_the_mouth_else_the_jaw() -> None:
    labels = np.zeros((128, 128), np.uint8)
    labels[20:90, 40:88] = 2  # head
    labels[90:, 20:108] = 1  # torso below it
    band = neck_band(labels, _face(60.0), scale=1.0)
    rows = np.flatnonzero(band.any(axis=1))
    assert rows.min() >= 90 - 5 and rows.max() <= 90 + 5  # 0.06 x 128 px wide around row 90
    assert band[90, 64] and not band[90, 5]  # on the seam, not beside the torso
    # the seam above the mouth corners is ignored: without another seam the band follows the jaw
    jaw = neck_band(labels, _face(100.0), scale=1.0)
    assert jaw[70, 64] and not jaw[90, 64]
    # landmarks of a 256 px crop, labels at 128: scaled by 0.5
    assert np.array_equal(neck_band(labels, _face(60.0) * 2, scale=0.5), band)


def test_mouth_lmd_counts_frames_with_a_face_in_both() -> None:
    rng = np.random.default_rng(0)
    truth = rng.normal(100, 10, (5, 478, 3)).astype(np.float32)
    pred = truth.copy()
    pred[..., 0] += 3
    pred[..., 1] += 4
    pred[..., 2] += 50  # depth is not compared (MediaPipe z is relative)
    pred[1] = np.nan  # no face in the rendered frame 1
    truth[3] = np.nan
    assert mouth_lmd(pred, truth) == (pytest.approx(5.0), 3)
    lmd, n = mouth_lmd(pred[[1]], truth[[1]])
    assert np.isnan(lmd) and n == 0
    with pytest.raises(InputError):
        mouth_lmd(pred[:, :400], truth[:, :400])
