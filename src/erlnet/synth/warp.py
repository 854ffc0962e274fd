"""Piecewise-affine backward image warp over a fixed triangle mesh.

The mesh is triangulated once in the source layout; each frame moves its vertices. Every
destination pixel finds its triangle (triangle ids rasterised with OpenCV), maps back to the source
through that triangle's affine map, and `cv2.remap` samples the source. Piecewise-affine maps are
continuous across shared edges, so which of two triangles claims an edge pixel does not matter.

Triangles can carry a *reference* geometry: their affine map is then computed from other
destination positions than the ones they are drawn at (a mouth interior is drawn where the moving
lips leave it open but sampled as if the jaw had not moved, so the upper teeth stay with the head).
Triangles are drawn in a given order (far to near), so where a mesh folds the nearer surface wins.
Coordinates are continuous pixels: the centre of pixel (i, j) is at (j + 0.5, i + 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay

_SUBPIX = 4  # fixed-point bits for cv2.fillConvexPoly (1/16 pixel vertex precision)


@dataclass(frozen=True)
class Mesh:
    """Triangle mesh in the source layout."""

    points: np.ndarray  # (N, 2) float64 source vertex positions, pixels
    triangles: np.ndarray  # (M, 3) int32 vertex indices, oriented so that signed_areas > 0
    labels: np.ndarray  # (M,) int8 user class of each triangle (0 = ordinary)


@dataclass(frozen=True)
class Triangulation:
    """Result of `triangulate`."""

    points: np.ndarray  # (N + K, 2) float64: the input points, then K inserted edge midpoints
    triangles: np.ndarray  # (M, 3) int32, oriented so that signed_areas > 0
    chains: list[np.ndarray]  # the input chains with the inserted midpoints spliced in
    parents: np.ndarray  # (K, 2) int64: inserted point N + k is the midpoint of parents[k]


def triangulate(points: np.ndarray, chains: Sequence[np.ndarray] = (), max_rounds: int = 8) -> Triangulation:
    """Delaunay triangulation that contains every edge of the given closed chains.

    points (N, 2); chains: closed loops of point indices whose edges must be mesh edges (contours
    the warp must not smear across, e.g. the lips). A missing edge gets its midpoint inserted and the
    triangulation is redone (a conforming Delaunay triangulation; scipy has no constrained one).
    """
    pts = np.asarray(points, np.float64).copy()
    loops = [list(map(int, c)) for c in chains]
    parents: list[tuple[int, int]] = []
    for _ in range(max_rounds):
        tri = Delaunay(pts)
        edges = {tuple(sorted(e)) for s in tri.simplices.tolist() for e in ((s[0], s[1]), (s[1], s[2]), (s[2], s[0]))}
        missing = False
        for li, loop in enumerate(loops):
            new_loop: list[int] = []
            for a, b in zip(loop, loop[1:] + loop[:1], strict=True):
                new_loop.append(a)
                if tuple(sorted((a, b))) not in edges:
                    missing = True
                    parents.append((a, b))
                    pts = np.vstack([pts, 0.5 * (pts[a] + pts[b])])
                    new_loop.append(len(pts) - 1)
            loops[li] = new_loop
        if not missing:
            break
    return Triangulation(
        points=pts,
        triangles=_orient(pts, tri.simplices.astype(np.int32)),
        chains=[np.asarray(lp, dtype=np.int64) for lp in loops],
        parents=np.asarray(parents, dtype=np.int64).reshape(-1, 2),
    )


def _orient(pts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    area = signed_areas(pts, tris)
    out = tris.copy()
    out[area < 0] = out[area < 0][:, [0, 2, 1]]
    return out


def signed_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(N, 2), (M, 3) -> (M,) signed triangle areas, pixels^2. Triangles from `triangulate` are
    positive in the source layout, so a negative area at a destination means a flipped triangle."""
    p = np.asarray(points, np.float64)[triangles]
    d1, d2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    return 0.5 * (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0])


def label_inside(points: np.ndarray, triangles: np.ndarray, loop: np.ndarray) -> np.ndarray:
    """(M,) bool: triangles whose centroid lies inside the closed polygon points[loop]."""
    poly = np.asarray(points, np.float32)[loop].reshape(-1, 1, 2)
    cent = np.asarray(points, np.float64)[triangles].mean(axis=1)
    return np.array([cv2.pointPolygonTest(poly, (float(x), float(y)), False) > 0 for x, y in cent])


def affine_maps(dst: np.ndarray, src: np.ndarray, triangles: np.ndarray, eps: float = 1e-9) -> np.ndarray:
    """Per-triangle affine maps from destination to source pixels.

    dst, src (N, 2); triangles (M, 3) -> (M, 3, 2) A with ``[x, y, 1] @ A[m] = source (x, y)``.
    Degenerate destination triangles (area ~ 0) get a translation-only map (they cover no pixel).
    """
    d = np.asarray(dst, np.float64)[triangles]  # (M, 3, 2)
    s = np.asarray(src, np.float64)[triangles]
    (x0, y0), (x1, y1), (x2, y2) = d[:, 0].T, d[:, 1].T, d[:, 2].T
    det = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    bad = np.abs(det) < eps
    det = np.where(bad, 1.0, det)
    # Inverse of [[x0 y0 1], [x1 y1 1], [x2 y2 1]] by cofactors, batched.
    inv = np.empty((len(d), 3, 3))
    inv[:, 0] = np.stack([y1 - y2, y2 - y0, y0 - y1], axis=1)
    inv[:, 1] = np.stack([x2 - x1, x0 - x2, x1 - x0], axis=1)
    inv[:, 2] = np.stack([x1 * y2 - x2 * y1, x2 * y0 - x0 * y2, x0 * y1 - x1 * y0], axis=1)
    inv /= det[:, None, None]
    a = inv @ s
    if bad.any():
        a[bad] = 0.0
        a[bad, 0, 0] = a[bad, 1, 1] = 1.0
        a[bad, 2] = (s[bad] - d[bad]).mean(axis=1)
    return a


class MeshWarper:
    """Warps one source image by moving the vertices of a fixed mesh.

    Vertices flagged static never move; triangles made only of static vertices are never drawn (their
    pixels keep the identity map), which keeps the per-frame cost proportional to the moving area.
    """

    def __init__(self, image: np.ndarray, mesh: Mesh, static: np.ndarray):
        """image (H, W, C) uint8 source; static (N,) bool. Other images of the same size can be
        warped the same way with the maps of a WarpResult."""
        self.h, self.w = image.shape[:2]
        self.source = np.ascontiguousarray(image)
        self.mesh = mesh
        self.static = np.asarray(static, bool)
        moving = ~self.static[mesh.triangles].all(axis=1)
        self.active = np.flatnonzero(moving)
        corners = mesh.points[mesh.triangles]
        self._src_lo = (corners.min(axis=1) - 1.0).astype(np.float32)  # (M, 2) source box per triangle
        self._src_hi = (corners.max(axis=1) + 1.0).astype(np.float32)
        gx, gy = np.meshgrid(np.arange(self.w, dtype=np.float32), np.arange(self.h, dtype=np.float32))
        self._px = gx.reshape(-1) + 0.5  # pixel centres, continuous coordinates
        self._py = gy.reshape(-1) + 0.5

    def render(
        self, dst: np.ndarray, ref: dict[int, np.ndarray] | None = None, depth: np.ndarray | None = None
    ) -> WarpResult:
        """Warp to destination vertices dst (N, 2) pixels.

        ref: {triangle label: (N, 2) reference destination positions} -- triangles with that label
        are drawn at dst but sampled through the map computed from the reference positions.
        depth: (M,) per-triangle distance from the camera; triangles are drawn far to near (painter's
        algorithm), so where the mesh folds over itself (a turning face) the nearer surface wins.
        """
        mesh = self.mesh
        amap = affine_maps(dst, mesh.points, mesh.triangles)
        lo, hi = self._src_lo, self._src_hi
        for label, pts in (ref or {}).items():
            sel = np.flatnonzero(mesh.labels == label)
            if sel.size:
                amap[sel] = affine_maps(pts, mesh.points, mesh.triangles[sel])
                # drawn elsewhere than their map's geometry: they may sample outside their own box
                lo, hi = lo.copy(), hi.copy()
                lo[sel], hi[sel] = -np.inf, np.inf
        ids = np.full((self.h, self.w), -1, np.int32)
        fixed = np.round(np.asarray(dst, np.float64) * (1 << _SUBPIX) - (1 << (_SUBPIX - 1))).astype(np.int32)
        order = self.active if depth is None else self.active[np.argsort(-depth[self.active], kind="stable")]
        fill = cv2.fillConvexPoly
        for k, poly in zip(order.tolist(), fixed[mesh.triangles[order]], strict=True):
            fill(ids, poly, k, cv2.LINE_8, _SUBPIX)  # positional arguments: measurably faster
        # Pixels no moving triangle claims keep the identity map.
        flat = ids.reshape(-1)
        sel = np.flatnonzero(flat >= 0)
        k = flat[sel]
        coef = amap.reshape(len(amap), 6).T.astype(np.float32)  # rows a00 a01 a10 a11 a20 a21
        px, py = self._px[sel], self._py[sel]
        map_x = self._px - 0.5
        map_y = self._py - 0.5
        # Clamped to the source triangle's box (+1 px): a pixel claimed by a sliver triangle (edge
        # pixels are claimed conservatively) must not extrapolate its near-singular map far away.
        map_x[sel] = np.clip(coef[0][k] * px + coef[2][k] * py + coef[4][k], lo[k, 0], hi[k, 0]) - 0.5
        map_y[sel] = np.clip(coef[1][k] * px + coef[3][k] * py + coef[5][k], lo[k, 1], hi[k, 1]) - 0.5
        map_x = map_x.reshape(self.h, self.w)
        map_y = map_y.reshape(self.h, self.w)
        out = cv2.remap(self.source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return WarpResult(image=out, ids=ids, map_x=map_x, map_y=map_y)


@dataclass(frozen=True)
class WarpResult:
    """One warped frame. The maps can warp other images (same size as the source) the same way."""

    image: np.ndarray  # (H, W, C) uint8 warped source
    ids: np.ndarray  # (H, W) int32 triangle drawn at each pixel, -1 = identity
    map_x: np.ndarray  # (H, W) float32 source column sampled by each pixel (cv2.remap convention)
    map_y: np.ndarray  # (H, W) float32 source row
