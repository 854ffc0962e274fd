"""Piecewise-affine mesh warp."""

from __future__ import annotations

import cv2
import numpy as np

from erlnet.synth.warp import Mesh, MeshWarper, affine_maps, label_inside, signed_areas, triangulate


def _grid_mesh(size: int, n: int = 7) -> np.ndarray:
    g = np.linspace(0, size, n)
    return np.stack(np.meshgrid(g, g), axis=-1).reshape(-1, 2)


def _texture(size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (size, size, 3)).astype(np.uint8), (0, 0), 2.0)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)


def test_affine_maps_are_exact_and_survive_degenerate_triangles():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (30, 2))
    a = np.array([[1.1, 0.2], [-0.1, 0.9]])
    dst = src @ a.T + [3.0, -2.0]
    tri = triangulate(src).triangles
    maps = affine_maps(dst, src, tri)
    back = np.einsum("mi,mij->mj", np.c_[dst[tri[:, 0]], np.ones(len(tri))], maps)
    np.testing.assert_allclose(back, src[tri[:, 0]], atol=1e-9)
    flat = dst.copy()
    flat[tri[0]] = flat[tri[0, 0]]  # collapse one triangle to a point
    assert np.isfinite(affine_maps(flat, src, tri)).all()


def test_triangulation_keeps_required_contours():
    # a thin slot whose long edges Delaunay would cut across without the constraint
    slot = np.array([[10, 50], [30, 49], [50, 48.5], [70, 49], [90, 50], [70, 51], [50, 51.5], [30, 51]], float)
    pts = np.concatenate([slot, [[50, 40], [50, 60], [0, 0], [100, 0], [0, 100], [100, 100]]])
    t = triangulate(pts, chains=[np.arange(8)])
    edges = {tuple(sorted(e)) for s in t.triangles for e in ((s[0], s[1]), (s[1], s[2]), (s[2], s[0]))}
    loop = t.chains[0].tolist()
    assert all(tuple(sorted(e)) in edges for e in zip(loop, loop[1:] + loop[:1], strict=True))
    assert len(t.parents) == len(t.points) - len(pts)
    assert (signed_areas(t.points, t.triangles) > 0).all()
    inside = label_inside(t.points, t.triangles, t.chains[0])
    centroids = t.points[t.triangles[inside]].mean(axis=1)
    assert inside.any() and (np.abs(centroids[:, 1] - 50) < 1.5).all()


def test_warp_identity_and_global_affine_match_opencv():
    size = 96
    img = _texture(size)
    pts = _grid_mesh(size)
    tri = triangulate(pts).triangles
    static = np.zeros(len(pts), bool)
    warper = MeshWarper(img, Mesh(points=pts, triangles=tri, labels=np.zeros(len(tri), np.int8)), static)
    np.testing.assert_array_equal(warper.render(pts).image, img)
    # a small rotation + shift of every vertex is one global affine map
    theta, shift = np.radians(4.0), np.array([2.5, -1.5])
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    c = np.array([size / 2, size / 2])
    dst = (pts - c) @ rot.T + c + shift
    got = warper.render(dst).image.astype(float)
    # the same map in OpenCV's pixel-centre indices (continuous coordinate = index + 0.5)
    m = np.c_[rot, c + shift - rot @ c + (rot - np.eye(2)) @ np.array([0.5, 0.5])]
    ref = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(float)
    inner = (slice(12, size - 12), slice(12, size - 12))
    assert np.abs(got[inner] - ref[inner]).mean() < 0.1


def test_depth_order_lets_the_nearer_triangle_win():
    size = 64
    img = np.zeros((size, size, 3), np.uint8)
    img[:, : size // 2] = 200  # left half bright
    pts = np.array([[0, 0], [32, 0], [64, 0], [0, 64], [32, 64], [64, 64]], float)
    tri = triangulate(pts).triangles
    warper = MeshWarper(img, Mesh(points=pts, triangles=tri, labels=np.zeros(len(tri), np.int8)), np.zeros(6, bool))
    dst = pts.copy()
    dst[[2, 5], 0] = 16  # the dark right half folds back over the bright left half: x in [16, 32]
    left = np.isin(tri, [0, 3]).any(axis=1)
    near_left = warper.render(dst, depth=np.where(left, 1.0, 2.0)).image
    near_right = warper.render(dst, depth=np.where(left, 2.0, 1.0)).image
    assert near_left[32, 24, 0] == 200 and near_right[32, 24, 0] == 0
    assert near_left[32, 8, 0] == near_right[32, 8, 0] == 200  # only one surface there


def test_sliver_triangles_never_sample_far_from_their_source():
    size = 96
    pts = _grid_mesh(size)
    tri = triangulate(pts).triangles
    warper = MeshWarper(_texture(size), Mesh(points=pts, triangles=tri, labels=np.zeros(len(tri), np.int8)),
                        np.zeros(len(pts), bool))
    dst = pts.copy()
    centre = np.argmin(np.linalg.norm(pts - size / 2, axis=1))
    neighbour = np.argsort(np.linalg.norm(pts - pts[centre], axis=1))[1]
    dst[centre] = dst[neighbour] + [0.3, 0.2]  # collapses the triangles between them to slivers
    slivers = np.isin(tri, [centre]).any(axis=1) & np.isin(tri, [neighbour]).any(axis=1)
    res = warper.render(dst, depth=np.where(slivers, 0.0, 1.0))  # slivers drawn last: they keep their pixels
    assert np.isin(res.ids, np.flatnonzero(slivers)).any()
    ys, xs = np.nonzero(res.ids >= 0)
    corners = pts[tri[res.ids[ys, xs]]]
    sx, sy = res.map_x[ys, xs] + 0.5, res.map_y[ys, xs] + 0.5  # back to continuous coordinates
    assert (sx >= corners[..., 0].min(axis=1) - 1.001).all() and (sx <= corners[..., 0].max(axis=1) + 1.001).all()
    assert (sy >= corners[..., 1].min(axis=1) - 1.001).all() and (sy <= corners[..., 1].max(axis=1) + 1.001).all()
