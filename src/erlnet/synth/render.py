"""Renders the synthetic subject: a mesh warp of the portrait driven by the moving 3D landmarks.

Mesh vertices: the 468 face-mesh landmarks (moved by expression and head pose, then projected);
a ring around the hair that moves rigidly with the head; two neck rings that follow the head (and
jaw) only partly, so the neck stretches as in real video; fixed points on the backdrop, torso and
image border. Triangles are drawn far to near, so a turning face hides what it should.

The mouth interior is sampled as if the jaw had not moved: the opening mouth shows the photo's
upper teeth above a dark cavity (with a hint of tongue). The mesh is drawn with open eyes and a
blink is painted over it: lid skin (the photo with its eyes in-painted) from the open lid margin
down to the closing one, with a lash line on the moving margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from erlnet.face import topology as tp
from erlnet.face.pose import default_intrinsics
from erlnet.synth.face import (
    LID_FOLD,
    LOWER_INNER_LIP,
    UPPER_INNER_LIP,
    Expression,
    FaceModel,
    Head,
    Portrait,
    back_project,
    close_lids,
    lift_landmarks,
    portrait,
    project,
)
from erlnet.synth.warp import Mesh, MeshWarper, WarpResult, label_inside, signed_areas, triangulate

EYE_LABEL, MOUTH_LABEL = 1, 2
CAVITY_RGB = np.array([48.0, 18.0, 22.0], np.float32)  # inside of a mouth in shadow
TONGUE_RGB = np.array([128.0, 58.0, 60.0], np.float32)  # tongue, lit from the mouth opening
LASH_RGB = np.array([52.0, 36.0, 30.0], np.float32)  # lash line of a closing lid
_BACKDROP_DEPTH_M = 0.5  # depth of static vertices behind the head origin (drawing order only)
# Upper lid margins corner to corner, per eye (subject's right, left).
_LID_MARGINS = np.stack([tp.RIGHT_EYE_CONTOUR[:9], tp.LEFT_EYE_CONTOUR[:9]])
_LID_FOLDS = LID_FOLD.reshape(2, 7)  # the ring above the margins (between corners), same order

# Extra control points in the photo's face frame: origin at the midpoint of landmarks 10-152, unit
# = their distance H, axes along the eye line (a) and perpendicular, downwards (b). Tuned by eye
# for this portrait: the head ring clears the hair by ~0.12 H.
_HEAD_RING = dict(centre=(0.03, -0.36), radii=(0.86, 0.86), degrees=np.arange(150, 391, 15))
_NECK_RINGS = (  # (radii, degrees, share of head motion, share of jaw/expression)
    ((0.68, 0.72), np.arange(20, 161, 20), 0.55, 0.5),
    ((0.80, 0.95), np.arange(25, 156, 26), 0.22, 0.2),
)
_FIXED_RING = dict(centre=(0.03, -0.36), radii=(1.32, 1.28), degrees=np.arange(130, 411, 20))
_FIXED_TORSO = [(a, 1.2) for a in np.arange(-1.2, 1.21, 0.3)] + [(-1.05, 0.5), (1.05, 0.5), (-1.0, 0.85), (1.0, 0.85)]
_RING_DEPTH_M = 0.04  # head ring points sit this far behind the canonical origin (about ear depth)
_NECK_DEPTH_M = 0.03
_MIN_FIXED_GAP = 0.15  # fixed points closer than this (in H) to a moving point are dropped


def _by_x(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, 2) polyline -> (x, y) sorted by x, for np.interp."""
    order = np.argsort(p[:, 0])
    return p[order, 0], p[order, 1]


def _ellipse(centre: tuple[float, float], radii: tuple[float, float], degrees: np.ndarray) -> np.ndarray:
    t = np.radians(np.asarray(degrees, np.float64))
    return np.stack([centre[0] + radii[0] * np.cos(t), centre[1] + radii[1] * np.sin(t)], axis=1)


def _face_frame(lms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(origin, a axis, b axis, H) of the face frame in pixels of the portrait."""
    top, chin = lms[tp.FOREHEAD_TOP, :2], lms[tp.CHIN, :2]
    u = lms[263, :2] - lms[33, :2]
    u = u / np.linalg.norm(u)
    v = np.array([-u[1], u[0]])
    return 0.5 * (top + chin), u, v, float(np.linalg.norm(chin - top))


def _polygon_mask(points: np.ndarray, size: int) -> np.ndarray:
    """(P, 2) continuous-pixel polygon -> (size, size) uint8 anti-aliased mask."""
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round((points - 0.5) * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    return mask


def _mouth_mask(lms: np.ndarray, size: int) -> np.ndarray:
    """The photo's mouth opening (inner lips), grown by a pixel so that at the rest pose every
    mouth-interior pixel samples the photo itself. -> (S, S) uint8."""
    return cv2.dilate(_polygon_mask(lms[tp.LIPS_INNER, :2], size), np.ones((3, 3), np.uint8))


def _lid_texture(image: np.ndarray, lms: np.ndarray) -> np.ndarray:
    """The photo with both eyes (and lash lines) painted over with the surrounding lid skin, a
    little darker: what a closed eye looks like. -> (S, S, 3) uint8."""
    size = image.shape[0]
    mask = np.maximum(_polygon_mask(lms[tp.RIGHT_EYE_CONTOUR, :2], size), _polygon_mask(lms[tp.LEFT_EYE_CONTOUR, :2], size))
    grow = max(1, round(size / 128))
    mask = cv2.dilate((mask > 0).astype(np.uint8) * 255, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    painted = cv2.inpaint(np.ascontiguousarray(image), mask, grow + 2, cv2.INPAINT_TELEA)
    soft = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), sigmaX=grow)[..., None]
    return np.clip(painted * (1.0 - 0.08 * soft) + 0.5, 0, 255).astype(np.uint8)


def _lid_cover_top(vertices: np.ndarray) -> np.ndarray:
    """(N, 2) open-lid vertices -> (2, 9, 2) upper edge of the painted lid: the lid margin raised
    halfway to the lid fold, so the photo's own upper lash line is painted over too."""
    top = vertices[_LID_MARGINS].copy()
    top[:, 1:-1] = 0.5 * (top[:, 1:-1] + vertices[_LID_FOLDS])
    return top


@dataclass(frozen=True)
class FrameGeometry:
    """Where everything goes in one frame."""

    vertices: np.ndarray  # (N, 2) destination pixels of the mesh vertices, lids drawn open
    mouth_ref: np.ndarray  # (N, 2) rest face under the same head pose (maps the mouth interior)
    depth: np.ndarray  # (M,) per-triangle camera depth used for the drawing order, metres
    lid_open: np.ndarray  # (2, 9, 2) top of the lid cover (the open margin raised over its lashes), px
    lid_now: np.ndarray  # (2, 9, 2) the same with the blink
    landmarks_cam: np.ndarray  # (478, 3) camera-space landmarks (with the blink), metres


class Renderer:
    """The synthetic subject at one output size. `render(R, t, expr)` -> frame."""

    def __init__(self, size: int):
        self.size = size
        self.portrait: Portrait = portrait(size)
        self.K = default_intrinsics(size)
        self.head: Head = lift_landmarks(self.portrait.landmarks, self.K)
        self.model = FaceModel(self.head.canonical)
        lms = self.portrait.landmarks
        origin, u, v, hgt = _face_frame(lms)

        def to_px(ab: np.ndarray) -> np.ndarray:
            return origin + hgt * (ab[:, :1] * u + ab[:, 1:2] * v)

        # 3D-driven points: [478 landmarks, head ring, neck rings]
        ring = to_px(_ellipse(_HEAD_RING["centre"], _HEAD_RING["radii"], _HEAD_RING["degrees"]))
        extra3d = [back_project(ring, self.head.t0[2] + _RING_DEPTH_M, self.head)]
        follow = [np.ones(tp.N_LANDMARKS), np.ones(len(ring))]
        share = [np.ones(tp.N_LANDMARKS), np.zeros(len(ring))]
        moving_px = [lms[: tp.N_MESH, :2], ring]
        for radii, degrees, f, s in _NECK_RINGS:
            neck = to_px(_ellipse((0.0, 0.0), radii, degrees))
            extra3d.append(back_project(neck, self.head.t0[2] + _NECK_DEPTH_M, self.head))
            follow.append(np.full(len(neck), f))
            share.append(np.full(len(neck), s))
            moving_px.append(neck)
        self.points3d = np.concatenate([self.head.canonical] + extra3d)
        self.follow = np.concatenate(follow)
        self.share = np.concatenate(share)
        # mesh vertex k < n_driven is points3d[driven[k]] (the 10 iris points are not mesh vertices)
        self.basis = self.model.prepare(self.points3d, self.share)
        self.driven = np.concatenate([np.arange(tp.N_MESH), np.arange(tp.N_LANDMARKS, len(self.points3d))])
        driven_px = np.concatenate(moving_px)
        self.src_driven = driven_px

        # Static points: border, backdrop ring, torso (dropped when too close to a moving point).
        cand = np.concatenate([
            to_px(_ellipse(_FIXED_RING["centre"], _FIXED_RING["radii"], _FIXED_RING["degrees"])),
            to_px(np.asarray(_FIXED_TORSO)),
        ])
        inside = ((cand >= 3) & (cand <= size - 3)).all(axis=1)
        dist = np.linalg.norm(cand[:, None] - driven_px[None], axis=2).min(axis=1)
        fixed = cand[inside & (dist > _MIN_FIXED_GAP * hgt)]
        edge = np.linspace(0.0, size, 9)
        border = np.unique(
            np.concatenate([
                np.stack([edge, np.zeros_like(edge)], 1), np.stack([edge, np.full_like(edge, size)], 1),
                np.stack([np.zeros_like(edge), edge], 1), np.stack([np.full_like(edge, size), edge], 1),
            ]),
            axis=0,
        )
        self.static_px = np.concatenate([fixed, border])
        n_driven = len(driven_px)
        tri = triangulate(
            np.concatenate([driven_px, self.static_px]),
            chains=[tp.RIGHT_EYE_CONTOUR, tp.LEFT_EYE_CONTOUR, tp.LIPS_INNER],
        )
        self.parents = tri.parents
        n_base = n_driven + len(self.static_px)
        labels = np.zeros(len(tri.triangles), np.int8)
        for chain in tri.chains[:2]:
            labels[label_inside(tri.points, tri.triangles, chain)] = EYE_LABEL
        labels[label_inside(tri.points, tri.triangles, tri.chains[2])] = MOUTH_LABEL
        self.mesh = Mesh(points=tri.points, triangles=tri.triangles, labels=labels)
        self.n_driven, self.n_base = n_driven, n_base
        static = np.zeros(len(tri.points), bool)
        static[n_driven:n_base] = True
        image = self.portrait.image
        self.lid_texture = _lid_texture(image, lms)
        self.mouth_mask = _mouth_mask(lms, size)
        self.warper = MeshWarper(image, self.mesh, static)

    # -- geometry ------------------------------------------------------------------------------

    def camera_points(self, R: np.ndarray, t: np.ndarray, expr: Expression) -> np.ndarray:
        """Deformed points3d in camera space. R (T, 3, 3), t (T, 3) -> (T, P, 3) metres."""
        can = self.model.deform(self.basis, expr)
        return np.einsum("tij,tpj->tpi", np.asarray(R, np.float64), can) + np.asarray(t, np.float64)[:, None]

    def landmarks_cam(self, R: np.ndarray, t: np.ndarray, expr: Expression) -> np.ndarray:
        """Truth landmarks. R (T, 3, 3), t (T, 3), expr of (T,) arrays -> (T, 478, 3) camera metres."""
        can = self.model.deform(self.head.canonical, expr)
        return np.einsum("tij,tpj->tpi", np.asarray(R, np.float64), can) + np.asarray(t, np.float64)[:, None]

    def vertices(self, cam: np.ndarray) -> np.ndarray:
        """(T, P, 3) camera points -> (T, N, 2) positions of all mesh vertices."""
        px = project(cam[:, self.driven], self.K)
        f = self.follow[self.driven][None, :, None]
        px = self.src_driven[None] + f * (px - self.src_driven[None])
        static = np.broadcast_to(self.static_px, (len(px),) + self.static_px.shape)
        out = np.concatenate([px, static, np.zeros((len(px), len(self.parents), 2))], axis=1)
        # inserted midpoints, in insertion order (a later one may split an earlier one's edge)
        for k, (a, b) in enumerate(self.parents):
            out[:, self.n_base + k] = 0.5 * (out[:, a] + out[:, b])
        return out

    def frame_geometry(self, R: np.ndarray, t: np.ndarray, expr: Expression) -> FrameGeometry:
        """Geometry of one frame: R (3, 3), t (3,), expr of scalars."""

        def pair(now: float, rest: float) -> np.ndarray:
            return np.array([now, rest], np.float64)

        e = expr
        variants = Expression(  # this frame with open lids; the rest face (the photo)
            open=pair(e.open, self.model.open0),
            width=pair(e.width, 0.0),
            blink=pair(0.0, 0.0),
            smile=pair(e.smile, 0.0),
            brow_raise=pair(e.brow_raise, 0.0),
            frown=pair(e.frown, 0.0),
            eye_open=pair(e.eye_open, 0.0),
        )
        open_cam = self.camera_points(np.broadcast_to(R, (2, 3, 3)), np.broadcast_to(t, (2, 3)), variants)
        shut = open_cam[:1].copy()  # the blink moves landmarks only: close the lids of this frame
        close_lids(shut, np.array([e.blink]))
        cam = np.concatenate([shut, open_cam])  # this frame, open lids, rest face
        v = self.vertices(cam)
        z = np.concatenate([
            cam[1, self.driven, 2],
            np.full(len(self.static_px), float(np.asarray(t)[2]) + _BACKDROP_DEPTH_M),
            np.zeros(len(self.parents)),
        ])
        for k, (a, b) in enumerate(self.parents):
            z[self.n_base + k] = 0.5 * (z[a] + z[b])
        depth = z[self.mesh.triangles].mean(axis=1)
        depth[self.mesh.labels == MOUTH_LABEL] += 1.0  # inside the mouth: behind everything
        return FrameGeometry(
            vertices=v[1],
            mouth_ref=v[2],
            depth=depth,
            lid_open=_lid_cover_top(v[1]),
            lid_now=v[0][_LID_MARGINS],
            landmarks_cam=cam[0, : tp.N_LANDMARKS],
        )

    # -- pixels --------------------------------------------------------------------------------

    def render(self, R: np.ndarray, t: np.ndarray, expr: Expression) -> np.ndarray:
        """One frame: R (3, 3), t (3,) head pose (canonical -> camera), expr of scalars ->
        (S, S, 3) uint8 RGB."""
        return self.draw(self.frame_geometry(R, t, expr), float(expr.blink))

    def draw(self, g: FrameGeometry, blink: float) -> np.ndarray:
        """Pixels of a frame's geometry (blink: its lid closure) -> (S, S, 3) uint8 RGB."""
        warped = self.warper.render(g.vertices, ref={MOUTH_LABEL: g.mouth_ref}, depth=g.depth)
        rgb = warped.image
        self._composite_mouth(rgb, warped, g)
        if blink > 0.0:
            self._paint_lids(rgb, warped, g, blink)
        return rgb

    def _box(self, points: np.ndarray, margin: int) -> tuple[int, int, int, int]:
        """(P, 2) pixels -> (x0, y0, x1, y1) clipped integer box around them."""
        lo = np.floor(points.min(axis=0)).astype(int) - margin
        hi = np.ceil(points.max(axis=0)).astype(int) + margin + 1
        x0, y0 = np.clip(lo, 0, self.size)
        x1, y1 = np.clip(hi, 0, self.size)
        return int(x0), int(y0), int(x1), int(y1)

    def _composite_mouth(self, rgb: np.ndarray, warped: WarpResult, g: FrameGeometry) -> None:
        """Where the mouth opening samples outside the photo's own mouth, show the dark cavity. In place."""
        x0, y0, x1, y1 = self._box(g.vertices[tp.LIPS_INNER], 3)
        ids = warped.ids[y0:y1, x0:x1]
        mouth = (ids >= 0) & (self.mesh.labels[np.maximum(ids, 0)] == MOUTH_LABEL)
        if not mouth.any():
            return
        inner = cv2.GaussianBlur(mouth.astype(np.float32), (0, 0), sigmaX=0.6)
        mask = cv2.remap(self.mouth_mask, warped.map_x[y0:y1, x0:x1], warped.map_y[y0:y1, x0:x1],
                         cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        alpha = mask.astype(np.float32) / 255.0
        k = (inner * (1.0 - alpha))[..., None]
        # the tongue shows in the lower part of a wide opening: blend towards its colour over the
        # bottom 40% of the gap between the lips, column by column
        cols = np.arange(x0, x1) + 0.5
        y_up = np.interp(cols, *_by_x(g.vertices[UPPER_INNER_LIP]))
        y_lo = np.interp(cols, *_by_x(g.vertices[LOWER_INNER_LIP]))
        gap = np.maximum(y_lo - y_up, 1.0)
        depth = np.clip(((np.arange(y0, y1) + 0.5)[:, None] - y_up) / gap, 0.0, 1.0)  # 0 top .. 1 bottom
        # (only a wide opening shows it: full strength from a gap of 4% of the frame)
        tongue = np.clip((depth - 0.6) / 0.4, 0.0, 1.0) * np.clip(gap / (0.04 * self.size), 0.0, 1.0)
        cavity = CAVITY_RGB + tongue[..., None] * (TONGUE_RGB - CAVITY_RGB)
        patch = rgb[y0:y1, x0:x1].astype(np.float32)
        rgb[y0:y1, x0:x1] = np.clip(patch * (1.0 - k) + cavity * k + 0.5, 0, 255).astype(np.uint8)

    def _paint_lids(self, rgb: np.ndarray, warped: WarpResult, g: FrameGeometry, blink: float) -> None:
        """Cover each eye from its open upper-lid margin down to the closing margin with lid skin
        (the warped eyes-painted-out texture) and draw the lash line on the moving margin. In place."""
        ss = 1 << 4
        lash_alpha = 0.85 * min(1.0, 3.0 * blink)
        width = max(1, round(self.size / 256))
        for eye in range(2):
            top, now = g.lid_open[eye], g.lid_now[eye]
            poly = np.concatenate([top, now[::-1][1:-1]])
            x0, y0, x1, y1 = self._box(np.concatenate([top, now]), 3)
            if x1 <= x0 or y1 <= y0:
                continue
            lid_tex = cv2.remap(self.lid_texture, warped.map_x[y0:y1, x0:x1], warped.map_y[y0:y1, x0:x1],
                                cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            shift = np.array([x0, y0], np.float64) + 0.5
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.fillPoly(mask, [np.round((poly - shift) * ss).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
            lash = np.zeros_like(mask)
            cv2.polylines(lash, [np.round((now - shift) * ss).astype(np.int32)], False, 255, width, cv2.LINE_AA, shift=4)
            m = (mask.astype(np.float32) / 255.0)[..., None]
            k = (lash.astype(np.float32) / 255.0 * lash_alpha)[..., None]
            patch = rgb[y0:y1, x0:x1].astype(np.float32)
            patch = patch * (1.0 - m) + lid_tex.astype(np.float32) * m
            patch = patch * (1.0 - k) + LASH_RGB * k
            rgb[y0:y1, x0:x1] = np.clip(patch + 0.5, 0, 255).astype(np.uint8)

    def flipped(self, vertices: np.ndarray) -> np.ndarray:
        """(N, 2) destination vertices -> (M,) bool: triangles folded over (negative area)."""
        return signed_areas(vertices, self.mesh.triangles) < -1e-6
