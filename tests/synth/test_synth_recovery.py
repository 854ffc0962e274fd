"""`erlnet preprocess` on a synthetic clip recovers the generator's ground truth (issue: synthetic
subjects): head pose within 2 degrees median, the blinks, and the mouth opening (Pearson r >= 0.9)."""

from __future__ import annotations

import numpy as np
import pytest

from erlnet.face.blink import detect_blinks
from erlnet.face.pose import rotation_angle_deg
from erlnet.io.subject import Subject
from erlnet.preprocess.pipeline import PreprocessConfig, run_preprocess
from erlnet.synth import SynthConfig, generate


@pytest.fixture(scope="module")
def recovered(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("synth")
    res = generate(SynthConfig(seconds=8.0, size=256, seed=3, style="nodding"), root / "clip", progress=False)
    run_preprocess(res.video, root / "subject", PreprocessConfig(size=256), show_progress=False)
    with np.load(res.truth) as z:
        truth = {k: z[k] for k in z.files}
    return truth, Subject(root / "subject").tracking()


def _aligned_rotation_errors(r_true: np.ndarray, r_est: np.ndarray) -> np.ndarray:
    """Per-frame angle (deg) after removing the constant offset between the two canonical frames."""
    m = np.einsum("tji,tjk->ik", r_true, r_est)  # sum of R_true^T R_est
    u, _, vt = np.linalg.svd(m)
    offset = u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt
    return rotation_angle_deg(r_true @ offset, r_est)


def test_head_pose_is_recovered_within_two_degrees(recovered) -> None:
    truth, tr = recovered
    assert tr["valid"].mean() >= 0.98
    err = _aligned_rotation_errors(truth["R"].astype(np.float64), tr["rotation"].astype(np.float64))
    motion = rotation_angle_deg(truth["R"][0], truth["R"]).max()
    assert motion > 4.0, "the clip should move its head for this test to mean anything"
    assert np.median(err) <= 2.0, f"median rotation error {np.median(err):.2f} deg"


def test_generated_blinks_are_found(recovered) -> None:
    truth, tr = recovered
    true_blinks = detect_blinks(truth["blink"], 0.5)
    found = detect_blinks(tr["blink"], 0.5)
    assert len(true_blinks) >= 1
    for a, b in true_blinks:
        assert any(fa <= b + 2 and fb >= a - 2 for fa, fb in found), f"blink at {a}-{b} missed (found {found})"
    assert len(found) <= len(true_blinks) + 1


def test_tracked_mouth_opening_follows_the_generator(recovered) -> None:
    truth, tr = recovered
    r = np.corrcoef(truth["mouth_open"], tr["mouth_opening"])[0, 1]
    assert r >= 0.9, f"Pearson r = {r:.3f}"
