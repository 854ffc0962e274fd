"""The synthetic subject's appearance and 3D face: the NASA astronaut portrait that ships with
scikit-image (public domain, no download), its MediaPipe landmarks lifted to a metric 3D head, and
an expression model that moves those landmarks (jaw, lips, lids, brows) in the canonical frame.

Conventions (docs/conventions.md): the photo's head *is* the canonical pose (R = I, t = t0);
canonical axes x right, y down, z away from the camera, metres, outer eye corners 0.095 m apart,
origin at the mean of ``topology.RIGID``. The canonical points are the photo's landmarks
back-projected with the pinhole K (f = 2 size), so projecting them at the rest pose gives back
the photo's landmarks exactly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from erlnet.face import topology as tp
from erlnet.face.pose import EYE_DISTANCE_M

PAD_TOP = 64  # photo pixels of backdrop added above the photo (the hair touches its top edge)
FACE_HEIGHT = 0.36  # forehead-top (10) to chin (152) distance / frame height: head-and-shoulders
FACE_CENTRE_Y = 0.48  # height of the 10-152 midpoint in the frame, fraction from the top

# Mouth aperture: the canonical vertical gap between inner-lip landmarks 13 and 14 is
# MOUTH_GAP_PER_UNIT * open, so open = 1 is a 16 mm gap (a loud open vowel).
MOUTH_GAP_PER_UNIT = 0.016
JAW_HINGE_BEHIND_LIP = 0.085  # m from the lower lip back to the jaw hinge (temporomandibular joint)
LIP_SPREAD = 0.004  # m each lip corner moves out per unit width (in when rounding)
LIP_PROTRUSION = 0.004  # m the lips push forward per unit of rounding
SMILE_CORNER = (0.0025, -0.0035)  # m (out, up) corner displacement of a full smile
BROW_RAISE = 0.004  # m brows move up per unit brow_raise
FROWN = (0.0025, 0.0025)  # m (inward, down) of the inner brow ends per unit frown
LID_RAISE = 0.0012  # m upper lids move up per unit eye_open (lower lids down by 40% of it)

# Lid margins from the outer to the inner eye corner; upper[k] faces lower[k].
_RIGHT_UPPER = tp.RIGHT_EYE_CONTOUR[1:8]
_RIGHT_LOWER = tp.RIGHT_EYE_CONTOUR[15:8:-1]
_LEFT_UPPER = tp.LEFT_EYE_CONTOUR[1:8]
_LEFT_LOWER = tp.LEFT_EYE_CONTOUR[15:8:-1]
# The next ring above each upper lid margin (the lid fold), same order.
_RIGHT_FOLD = np.array([247, 30, 29, 27, 28, 56, 190], dtype=np.int64)
_LEFT_FOLD = np.array([467, 260, 259, 257, 258, 286, 414], dtype=np.int64)
LID_UPPER = np.concatenate([_RIGHT_UPPER, _LEFT_UPPER])
LID_LOWER = np.concatenate([_RIGHT_LOWER, _LEFT_LOWER])
LID_FOLD = np.concatenate([_RIGHT_FOLD, _LEFT_FOLD])
IRIS = np.concatenate([tp.RIGHT_IRIS, tp.LEFT_IRIS])
UPPER_INNER_LIP = np.concatenate([tp.LIPS_INNER[:1], tp.LIPS_INNER[19:10:-1], tp.LIPS_INNER[10:11]])
LOWER_INNER_LIP = tp.LIPS_INNER[:11]


# ----------------------------------------------------------------------------------------------
# The photo


def astronaut() -> np.ndarray:
    """The public-domain NASA portrait of Eileen Collins from scikit-image: (512, 512, 3) uint8 RGB."""
    from skimage import data

    return data.astronaut()


@functools.lru_cache(maxsize=1)
def _photo_landmarks_cached() -> np.ndarray:
    from erlnet.face.tracking import FaceTracker, TrackerConfig

    with FaceTracker(TrackerConfig(static_image=True, max_faces=1)) as tracker:
        track = tracker.process(astronaut())
    if track.landmarks is None:
        raise RuntimeError("MediaPipe found no face in the built-in portrait")
    lms = track.landmarks.astype(np.float64)
    lms.setflags(write=False)
    return lms


def photo_landmarks() -> np.ndarray:
    """(478, 3) float64 landmarks of `astronaut()` in its pixels (tracked once per process)."""
    return _photo_landmarks_cached().copy()


def _extend_backdrop(img: np.ndarray, pad: int) -> np.ndarray:
    """Add `pad` rows of smooth backdrop above the photo (its top rows averaged and blurred)."""
    top = cv2.GaussianBlur(img[:12].astype(np.float32).mean(axis=0, keepdims=True), (0, 0), sigmaX=8.0)
    out = np.concatenate([np.repeat(top, pad, axis=0), img.astype(np.float32)])
    ramp = (np.arange(8, dtype=np.float32) / 8.0)[:, None, None]
    out[pad : pad + 8] = ramp * out[pad : pad + 8] + (1.0 - ramp) * top
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Portrait:
    """The photo framed as a square head-and-shoulders crop."""

    image: np.ndarray  # (S, S, 3) uint8 RGB
    landmarks: np.ndarray  # (478, 3) float64 pixels of image (z in the x unit, MediaPipe convention)


@functools.lru_cache(maxsize=4)
def portrait(size: int) -> Portrait:
    """Crop and scale the photo to `size` x `size`, the face (10-152) FACE_HEIGHT of the height."""
    img = _extend_backdrop(astronaut(), PAD_TOP)
    lms = photo_landmarks()
    lms[:, 1] += PAD_TOP
    face_h = float(np.linalg.norm(lms[tp.CHIN, :2] - lms[tp.FOREHEAD_TOP, :2]))
    crop = face_h / FACE_HEIGHT
    centre = 0.5 * (lms[tp.CHIN, :2] + lms[tp.FOREHEAD_TOP, :2])
    h, w = img.shape[:2]
    x0 = float(np.clip(centre[0] - 0.5 * crop, 0, w - crop))
    y0 = float(np.clip(centre[1] - FACE_CENTRE_Y * crop, 0, h - crop))
    scale = size / crop
    if scale < 1.0:  # anti-alias before sampling down
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=0.5 * np.sqrt(1.0 / scale**2 - 1.0))
    # Continuous pixel coordinates (pixel centres at +0.5) -> OpenCV's centre-based indices.
    m = np.array([[scale, 0.0, scale * (0.5 - x0) - 0.5], [0.0, scale, scale * (0.5 - y0) - 0.5]])
    out = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    lms_out = lms.copy()
    lms_out[:, 0] = (lms[:, 0] - x0) * scale
    lms_out[:, 1] = (lms[:, 1] - y0) * scale
    lms_out[:, 2] = lms[:, 2] * scale
    out.setflags(write=False)
    lms_out.setflags(write=False)
    return Portrait(image=out, landmarks=lms_out)


# ----------------------------------------------------------------------------------------------
# 3D head


@dataclass(frozen=True)
class Head:
    """The photo's head in 3D."""

    K: np.ndarray  # (3, 3) intrinsics of the working crop
    canonical: np.ndarray  # (478, 3) float64 rest landmarks in the canonical frame, metres
    t0: np.ndarray  # (3,) camera position of the canonical origin in the photo, metres (R0 = I)


def lift_landmarks(lms_px: np.ndarray, K: np.ndarray) -> Head:
    """Back-project (478, 3) pixel landmarks (z = relative depth in the x unit) to a metric head.

    Depth of point i: Z_i = f / s + dz_i / s with s ~ pixels per metre from the eye corners; the
    whole camera-space shape is then rescaled about the camera centre (projections unchanged) so that
    the outer eye corners are exactly 0.095 m apart.
    """
    f, cx, cy = K[0, 0], K[0, 2], K[1, 2]
    lms = np.asarray(lms_px, np.float64)
    s = np.linalg.norm(lms[263] - lms[33]) / EYE_DISTANCE_M
    z = (lms[:, 2] - lms[tp.RIGID, 2].mean()) / s + f / s
    cam = np.stack([(lms[:, 0] - cx) * z / f, (lms[:, 1] - cy) * z / f, z], axis=1)
    cam *= EYE_DISTANCE_M / np.linalg.norm(cam[263] - cam[33])
    t0 = cam[tp.RIGID].mean(axis=0)
    return Head(K=np.asarray(K, np.float64), canonical=cam - t0, t0=t0)


def back_project(px: np.ndarray, depth: float, head: Head) -> np.ndarray:
    """Canonical positions of image points px (P, 2) placed at camera depth `depth` m -> (P, 3)."""
    f, cx, cy = head.K[0, 0], head.K[0, 2], head.K[1, 2]
    px = np.asarray(px, np.float64)
    cam = np.stack([(px[:, 0] - cx) * depth / f, (px[:, 1] - cy) * depth / f, np.full(len(px), depth)], axis=1)
    return cam - head.t0


def project(cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole projection of camera-space points (..., 3) metres -> (..., 2) pixels."""
    cam = np.asarray(cam, np.float64)
    return cam[..., :2] / cam[..., 2:3] * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])


# ----------------------------------------------------------------------------------------------
# Expression model


@dataclass(frozen=True)
class Expression:
    """Expression parameters; each is a scalar or a (T,) array (broadcast together)."""

    open: np.ndarray | float = 0.0  # mouth opening; lip gap = MOUTH_GAP_PER_UNIT * open (>= 0)
    width: np.ndarray | float = 0.0  # lip spread (+) / rounding (-), about [-1.5, 1.5]
    blink: np.ndarray | float = 0.0  # lid closure, 0 open .. 1 both lids meet
    smile: np.ndarray | float = 0.0  # 1: lip corners up 3.5 mm and out 2.5 mm, cheeks up (SMILE_CORNER)
    brow_raise: np.ndarray | float = 0.0  # 1: brows up BROW_RAISE (4 mm); negative lowers them
    frown: np.ndarray | float = 0.0  # 1: inner brow ends in and down FROWN (2.5 mm each)
    eye_open: np.ndarray | float = 0.0  # 1: upper lids up LID_RAISE (1.2 mm); negative narrows


@dataclass(frozen=True)
class PointBasis:
    """What FaceModel.deform needs per point, computed once from the rest positions."""

    points: np.ndarray  # (P, 3) rest positions, canonical metres
    closure: np.ndarray  # (P,) upward shift that closes the photo's lip gap, metres
    jaw: np.ndarray  # (P,) share of the jaw rotation
    linear: np.ndarray  # (5, P, 3) displacement per unit of spread, round, smile, brow_raise, frown


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _rot_x(alpha: np.ndarray) -> np.ndarray:
    """(T,) radians -> (T, 3, 3) rotations about the x axis."""
    c, s = np.cos(alpha), np.sin(alpha)
    r = np.zeros(np.shape(alpha) + (3, 3))
    r[..., 0, 0] = 1.0
    r[..., 1, 1], r[..., 1, 2] = c, -s
    r[..., 2, 1], r[..., 2, 2] = s, c
    return r


class FaceModel:
    """Moves canonical points with an Expression. Built from the rest landmarks; deforms any point
    set given as [478 landmarks; extra points], the extra points following the jaw by `jaw_share`.

    Mouth opening below the photo's own gap closes the lips column by column (the lower inner lip
    slides up onto the upper one, which cannot fold the mesh); above it the jaw rotates about a
    hinge behind the mouth, with a weight field that is 1 below the lip line and fades across the
    cheeks. Width, smile, brows and lids are smooth displacement fields (a few millimetres).
    """

    def __init__(self, canonical: np.ndarray):
        c = np.asarray(canonical, np.float64)
        self.rest = c
        up, lo = c[UPPER_INNER_LIP], c[LOWER_INNER_LIP]
        self._up_x, self._up_y = self._sorted(up)
        self._lo_x, self._lo_y = self._sorted(lo)
        self.x_lo, self.x_hi = c[78, 0], c[308, 0]
        self.open0 = float((c[14, 1] - c[13, 1]) / MOUTH_GAP_PER_UNIT)  # the photo's own opening
        corners = c[tp.MOUTH_CORNERS]
        self.mouth_x = corners[:, 0].mean()
        self.mouth_hw = 0.5 * abs(corners[1, 0] - corners[0, 0])
        self.mouth_y = corners[:, 1].mean()
        self.chin_y = c[tp.CHIN, 1]
        self.lip_bottom_y = c[17, 1]
        self.hinge = np.array([0.0, c[2, 1] - 0.01, c[14, 2] + JAW_HINGE_BEHIND_LIP])
        self.face_hw = 0.5 * abs(c[454, 0] - c[234, 0])
        self._alpha_table, self._gap_table = self._jaw_table()

    @staticmethod
    def _sorted(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(p[:, 0])
        return p[order, 0], p[order, 1]

    def _lip_lines(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.interp(x, self._up_x, self._up_y), np.interp(x, self._lo_x, self._lo_y)

    # -- weight fields of a point set (P, 3) --------------------------------------------------

    def jaw_weight(self, p: np.ndarray) -> np.ndarray:
        """(P, 3) -> (P,) share of the jaw rotation: 1 under the lips, 0 above, soft on the cheeks."""
        x, y = p[:, 0], p[:, 1]
        dx = np.abs(x - self.mouth_x)
        y_up, y_lo = self._lip_lines(x)
        inner_hw = 0.5 * (self.x_hi - self.x_lo)
        lateral = np.maximum(dx - inner_hw, 0.0)
        slope = (self.hinge[1] - self.mouth_y) / max(self.face_hw - inner_hw, 1e-3)
        boundary = np.where(lateral > 0, self.mouth_y + slope * lateral, 0.5 * (y_up + y_lo))
        tau = 0.0006 + 0.5 * lateral
        return _smoothstep(0.5 + (y - boundary) / (2.0 * tau))

    def closure_field(self, p: np.ndarray) -> np.ndarray:
        """(P, 3) -> (P,) upward shift (m) that closes the photo's lip gap completely."""
        x, y = p[:, 0], p[:, 1]
        y_up, y_lo = self._lip_lines(x)
        inside = (x > self.x_lo) & (x < self.x_hi)
        gap = np.where(inside, np.maximum(y_lo - y_up, 0.0), 0.0)
        h = np.clip((y - y_up) / np.maximum(gap, 1e-6), 0.0, 1.0)
        # Under the lower lip the shift fades out towards (just below) the chin.
        start, end = self.lip_bottom_y + 0.002, self.chin_y + 0.01
        fade = np.clip((end - y) / (end - start), 0.0, 1.0)
        return gap * h * fade

    def _jaw_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Jaw angle (rad) vs the 13-14 vertical gap it produces, for inverting open -> angle."""
        alphas = np.radians(np.linspace(0.0, 40.0, 401))
        pts = self.rest[[13, 14]]
        w = self.jaw_weight(pts)
        moved = self._rotate(pts[None], w[None], alphas)
        return alphas, moved[:, 1, 1] - moved[:, 0, 1]

    def _rotate(self, p: np.ndarray, w: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """p (T or 1, P, 3), w (T or 1, P), alpha (T,) -> (T, P, 3) jaw-rotated by w * rotation."""
        r = _rot_x(alpha)
        rel = p - self.hinge
        rotated = np.einsum("tij,tpj->tpi", r, np.broadcast_to(rel, (len(alpha),) + rel.shape[1:])) + self.hinge
        return p + w[..., None] * (rotated - p)

    def jaw_angle(self, open_: np.ndarray) -> np.ndarray:
        """(T,) opening -> (T,) jaw rotation (rad) beyond the photo's opening (0 when below it)."""
        gap = np.asarray(open_, np.float64) * MOUTH_GAP_PER_UNIT
        return np.interp(gap, self._gap_table, self._alpha_table)

    def _fields(self, p: np.ndarray) -> dict[str, np.ndarray]:
        """Linear displacement fields (P, 3) per unit of each parameter, from positions alone."""
        x, y = p[:, 0], p[:, 1]
        dx = x - self.mouth_x
        adx = np.abs(dx)
        hw = self.mouth_hw
        lat = np.where(adx <= hw, (adx / hw) ** 1.5, np.exp(-(((adx - hw) / 0.012) ** 2)))
        # 1 over the lips (outer lip line top 0 to bottom 17), fading within a few mm: the nose and
        # chin stay put when the lips spread or round
        top, bottom = self.rest[0, 1] - 0.002, self.rest[17, 1] + 0.003
        outside = np.maximum(np.maximum(top - y, y - bottom), 0.0)
        vert = np.exp(-((outside / 0.005) ** 2))
        spread = np.zeros_like(p)
        spread[:, 0] = np.sign(dx) * LIP_SPREAD * lat * vert
        round_ = -spread
        round_[:, 2] = -LIP_PROTRUSION * np.exp(-((dx / 0.022) ** 2)) * vert

        smile = np.zeros_like(p)
        for k in tp.MOUTH_CORNERS:
            cnr = self.rest[k]
            side = np.sign(cnr[0] - self.mouth_x)
            g = np.exp(-((x - cnr[0]) ** 2 + (y - cnr[1]) ** 2) / (2 * 0.01**2))
            smile[:, 0] += side * SMILE_CORNER[0] * g
            smile[:, 1] += SMILE_CORNER[1] * g
            cheek = np.exp(-((x - (self.mouth_x + side * 0.035)) ** 2 + (y - (cnr[1] - 0.022)) ** 2) / (2 * 0.012**2))
            smile[:, 1] -= 0.0015 * cheek
            smile[:, 2] -= 0.001 * cheek

        brow = np.zeros_like(p)
        frown = np.zeros_like(p)
        for side_idx, inner in ((tp.RIGHT_BROW, (55, 107)), (tp.LEFT_BROW, (285, 336))):
            # vertical distance to this brow's own line: brows lift as a whole, the forehead above
            # follows loosely, the lids below hardly at all
            bx, by = self._sorted(self.rest[side_idx])
            dy = y - np.interp(x, bx, by)
            outside = np.maximum(np.maximum(bx[0] - x, x - bx[-1]), 0.0)
            wb = np.exp(-((outside / 0.012) ** 2)) * np.where(
                dy < 0, np.exp(-((dy / 0.02) ** 2)), np.exp(-((dy / 0.008) ** 2))
            )
            brow[:, 1] -= BROW_RAISE * wb
            ic = self.rest[list(inner)].mean(axis=0)
            wf = np.exp(-(((x - ic[0]) / 0.014) ** 2)) * np.where(
                y < ic[1], np.exp(-(((y - ic[1]) / 0.015) ** 2)), np.exp(-(((y - ic[1]) / 0.008) ** 2))
            )
            frown[:, 0] += np.sign(self.mouth_x - ic[0]) * FROWN[0] * wf
            frown[:, 1] += FROWN[1] * wf
        return {"spread": spread, "round": round_, "smile": smile, "brow": brow, "frown": frown}

    def prepare(self, points: np.ndarray, jaw_share: np.ndarray | None = None) -> PointBasis:
        """Precompute the per-point fields of `deform` for a point set (P, 3) (see deform)."""
        p = np.asarray(points, np.float64)
        share = np.ones(len(p)) if jaw_share is None else np.asarray(jaw_share, np.float64)
        fields = self._fields(p)
        linear = np.stack([fields[k] for k in ("spread", "round", "smile", "brow", "frown")])
        closure = self.closure_field(p)
        if len(p) >= tp.N_LANDMARKS:
            # each inner lower-lip landmark closes onto its facing upper one (13-14 etc.) exactly
            inner_lo, inner_up = LOWER_INNER_LIP[1:-1], UPPER_INNER_LIP[1:-1]
            closure[inner_lo] = np.maximum(p[inner_lo, 1] - p[inner_up, 1], 0.0)
        return PointBasis(
            points=p,
            closure=closure * share,
            jaw=self.jaw_weight(p) * share,
            linear=linear * share[None, :, None],
        )

    def deform(self, points: np.ndarray | PointBasis, expr: Expression, jaw_share: np.ndarray | None = None) -> np.ndarray:
        """Move canonical points. points (P, 3) whose first 478 rows are the landmarks (lid rules
        use landmark indices), or a PointBasis from `prepare`; jaw_share (P,) scales every expression
        field per point (default 1). -> (T, P, 3) float64 metres, T from the broadcast parameters."""
        basis = points if isinstance(points, PointBasis) else self.prepare(points, jaw_share)
        p = basis.points
        params = np.broadcast_arrays(*(np.atleast_1d(np.asarray(getattr(expr, k), np.float64)) for k in (
            "open", "width", "blink", "smile", "brow_raise", "frown", "eye_open")))
        o, wd, blink, smile, raise_, frown, eye = params
        out = np.broadcast_to(p, (len(o),) + p.shape).copy()
        # mouth: close the photo's gap (column-wise) or rotate the jaw
        closing = np.clip(1.0 - o / self.open0, 0.0, 1.0)
        out[:, :, 1] -= closing[:, None] * basis.closure[None]
        alpha = self.jaw_angle(np.maximum(o, self.open0))
        if np.any(alpha > 0):
            out = self._rotate(out, basis.jaw[None], alpha)
        coeff = np.stack([np.maximum(wd, 0), np.maximum(-wd, 0), smile, raise_, frown], axis=1)  # (T, 5)
        out += np.tensordot(coeff, basis.linear, axes=(1, 0))
        if len(p) >= tp.N_LANDMARKS:
            out[:, LID_UPPER, 1] -= LID_RAISE * eye[:, None]
            out[:, LID_FOLD, 1] -= 0.5 * LID_RAISE * eye[:, None]
            out[:, LID_LOWER, 1] += 0.4 * LID_RAISE * eye[:, None]
            close_lids(out, blink)
        return out


def close_lids(points: np.ndarray, blink: np.ndarray) -> None:
    """Blink, in place: points (T, P, 3) deformed landmarks (first 478 rows), blink (T,) in [0, 1].
    The upper lid margin slides onto the lower one, so the lids meet exactly at blink = 1 (the lower
    lid barely moves in real blinks). Applied last, on the otherwise deformed lids."""
    b = np.clip(np.asarray(blink, np.float64), 0.0, 1.0)[:, None, None]
    points[:, LID_UPPER] += b * (points[:, LID_LOWER] - points[:, LID_UPPER])
