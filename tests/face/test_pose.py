from __future__ import annotations

import numpy as np
import pytest

from erlnet.errors import InputError
from erlnet.face import pose as P
from erlnet.face import topology as tp


def face_like_shape(seed: int = 0) -> np.ndarray:
    """A (478, 3) metre-scale point cloud with the anchor points of the canonical frame in place."""
    rng = np.random.default_rng(seed)
    shape = rng.uniform([-0.08, -0.1, -0.03], [0.08, 0.12, 0.05], size=(478, 3))
    shape[33], shape[263] = (-0.0475, 0.0, 0.01), (0.0475, 0.0, 0.01)
    shape[tp.FOREHEAD_TOP], shape[tp.CHIN] = (0.0, -0.09, 0.0), (0.0, 0.11, 0.01)
    return shape


def random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    return P.matrix_from_axis_angle(axis * np.radians(rng.uniform(0.3, 1.0) * max_deg))


def test_umeyama_exact_and_never_reflects() -> None:
    rng = np.random.default_rng(0)
    src = rng.normal(size=(30, 3))
    R = random_rotation(rng, 40)
    sim = P.umeyama(src, 2.5 * src @ R.T + [1.0, -2.0, 3.0])
    assert sim.s == pytest.approx(2.5, rel=1e-9)
    assert np.allclose(sim.R, R, atol=1e-9) and np.allclose(sim.t, [1.0, -2.0, 3.0], atol=1e-9)
    assert np.allclose(sim.inverse().apply(sim.apply(src)), src, atol=1e-9)
    mirrored = src * [-1.0, 1.0, 1.0]
    assert np.linalg.det(P.umeyama(src, mirrored).R) == pytest.approx(1.0)


def test_robust_similarity_ignores_ten_percent_outliers() -> None:
    rng = np.random.default_rng(1)
    src = face_like_shape()[tp.RIGID]
    worst_robust, worst_ls = 0.0, 0.0
    for _ in range(20):
        R = random_rotation(rng, 40)
        dst = 1200.0 * src @ R.T + rng.uniform(100, 400, 3) + rng.normal(scale=0.5, size=src.shape)
        out = rng.choice(len(src), size=max(1, len(src) // 10), replace=False)
        dst[out] += rng.normal(scale=30.0, size=(len(out), 3))
        worst_robust = max(worst_robust, P.rotation_angle_deg(P.robust_similarity(src, dst).R, R))
        worst_ls = max(worst_ls, P.rotation_angle_deg(P.umeyama(src, dst).R, R))
    assert worst_robust < 1.0
    assert worst_ls > 2 * worst_robust  # the outliers do matter for plain least squares


def test_fit_canonical_recovers_shape_in_canonical_frame() -> None:
    rng = np.random.default_rng(2)
    shape = face_like_shape(3)
    truth = P.normalise_canonical(shape)
    assert np.linalg.norm(truth[263] - truth[33]) == pytest.approx(P.EYE_DISTANCE_M)
    assert np.allclose(truth[tp.RIGID].mean(axis=0), 0.0, atol=1e-12)
    frames = []
    for _ in range(40):
        R = random_rotation(rng, 30)
        frames.append(rng.uniform(800, 1500) * shape @ R.T + rng.uniform(100, 400, 3))
    lms = np.stack(frames) + rng.normal(scale=0.3, size=(40, 478, 3))
    lms[5] = np.nan  # a lost frame is skipped
    canon = P.fit_canonical(lms)
    assert canon.shape == (478, 3) and np.isfinite(canon).all()
    assert np.abs(canon - truth).max() < 1e-3  # below 1 mm


def test_canonical_axes_identity_for_frontal_face() -> None:
    truth = P.normalise_canonical(face_like_shape())
    assert np.allclose(P.canonical_axes(truth), np.eye(3), atol=1e-9)
    K = P.default_intrinsics(512)
    lms = (1000.0 * truth + [256, 256, 0.0])[None]
    poses = P.solve_poses(lms, truth, K)
    assert P.rotation_angle_deg(poses.R[0], np.eye(3)) < 0.01
    # Centred in the crop at 1000 px/m: t = (0, 0, f / s) = (0, 0, 1024 / 1000).
    assert np.allclose(poses.t[0], [0.0, 0.0, 1.024], atol=1e-5)


def test_solve_poses_and_to_canonical_round_trip() -> None:
    rng = np.random.default_rng(4)
    canon = P.normalise_canonical(face_like_shape(5))
    K = P.default_intrinsics(512)
    T = 50
    Rs = np.stack([random_rotation(rng, 40) for _ in range(T)])
    s = rng.uniform(900, 1600, T)
    offset = np.stack([rng.uniform(150, 350, T), rng.uniform(150, 350, T), rng.uniform(-20, 20, T)], 1)
    lms = s[:, None, None] * np.einsum("tij,nj->tni", Rs, canon) + offset[:, None]
    lms[:, tp.RIGID[:3]] += 25.0  # three corrupted rigid points per frame
    lms[7] = np.nan
    poses = P.solve_poses(lms, canon, K)
    good = np.arange(T) != 7
    assert np.isnan(poses.R[7]).all() and np.isfinite(poses.R[good]).all()
    assert P.rotation_angle_deg(poses.R[good], Rs[good]).max() < 0.5
    assert np.allclose(poses.scale[good], s[good], rtol=1e-3)
    assert np.allclose(poses.t[good, 2], 1024.0 / s[good], rtol=1e-3)
    back = P.to_canonical(lms[good], _subset(poses, good), K)
    assert np.abs(np.delete(back, tp.RIGID[:3], axis=1) - np.delete(canon, tp.RIGID[:3], axis=0)).max() < 2e-4
    reproj = P.project(back, _subset(poses, good), K)
    assert np.abs(reproj - lms[good]).max() < 1e-2  # pixels
    assert poses.matrices().shape == (T, 4, 4)


def _subset(poses: P.HeadPoses, mask: np.ndarray) -> P.HeadPoses:
    return P.HeadPoses(R=poses.R[mask], t=poses.t[mask], scale=poses.scale[mask], z_offset=poses.z_offset[mask])


def test_perspective_projection_agrees_at_the_origin() -> None:
    canon = P.normalise_canonical(face_like_shape())
    K = P.default_intrinsics(256)
    lms = (700.0 * canon + [100, 140, 5.0])[None]
    poses = P.solve_poses(lms, canon, K, robust=False)
    origin = np.zeros((1, 3))
    assert np.allclose(P.project(origin, poses, K, perspective=True)[0, 0, :2], [100, 140], atol=1e-3)
    # Off-origin points nearer the camera (z < 0) spread further out under true perspective.
    near = np.array([[0.05, 0.0, -0.05]])
    weak, persp = P.project(near, poses, K)[0, 0, 0], P.project(near, poses, K, perspective=True)[0, 0, 0]
    assert persp - 100 > weak - 100 > 0


def test_euler_order_and_round_trip() -> None:
    pitch = P.matrix_from_euler([0.3, 0.0, 0.0])
    assert np.allclose(pitch[0], [1, 0, 0]) and pitch[2, 1] == pytest.approx(np.sin(0.3))
    angles = np.array([[0.1, -0.2, 0.3], [-0.4, 0.5, 0.05]])
    R = P.matrix_from_euler(angles)
    rx, ry, rz = (P.matrix_from_euler(np.eye(3)[k] * angles[0, k]) for k in range(3))
    assert np.allclose(R[0], rz @ ry @ rx)
    assert np.allclose(P.euler_from_matrix(R), angles)
    assert np.allclose(P.axis_angle_from_matrix(P.matrix_from_axis_angle(angles)), angles)
    assert P.rotation_angle_deg(np.eye(3), P.matrix_from_axis_angle([0, 0, np.radians(25)])) == pytest.approx(25)


def test_bad_inputs_raise() -> None:
    with pytest.raises(InputError, match="intrinsics"):
        P.solve_poses(np.zeros((2, 478, 3)), np.zeros((478, 3)), np.eye(2))
    with pytest.raises(InputError, match="no frame"):
        P.fit_canonical(np.full((3, 478, 3), np.nan))
    with pytest.raises(ValueError, match="point sets"):
        P.umeyama(np.zeros((5, 3)), np.zeros((4, 3)))
