"""Named index sets of the MediaPipe Face Mesh topology (478 points: 468 mesh + 10 iris).

"Left" and "right" follow MediaPipe's naming, i.e. the *subject's* own left/right: for a frontal face
``LEFT_EYE`` (outer corner 263) appears on the image right and ``RIGHT_EYE`` (outer corner 33) on the
image left. Contours are ordered (walking around the loop); other sets are sorted.
All arrays are ``int64`` numpy arrays, usable directly as fancy indices into ``(..., 478, 3)``.
"""

from __future__ import annotations

import numpy as np

N_LANDMARKS = 478  # with refine_landmarks (iris); 468 without
N_MESH = 468

# Outer lip contour, starting at the right mouth corner 61, lower lip first, back through the upper lip.
LIPS_OUTER = np.array(
    [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185],
    dtype=np.int64,
)
# Inner lip contour (the mouth opening), same orientation, starting at inner corner 78.
LIPS_INNER = np.array(
    [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191],
    dtype=np.int64,
)
# Corners and mid points used by the mouth measures.
MOUTH_CORNERS = np.array([61, 291], dtype=np.int64)  # outer corners (subject right, left)
UPPER_INNER_LIP = np.array([82, 13, 312], dtype=np.int64)  # paired with LOWER_INNER_LIP below
LOWER_INNER_LIP = np.array([87, 14, 317], dtype=np.int64)

# Six points per eye for the eye aspect ratio, order p1..p6 of Soukupova & Cech (2016): p1 outer and
# p4 inner corner; (p2, p6) and (p3, p5) are upper/lower lid pairs facing each other.
RIGHT_EYE = np.array([33, 160, 158, 133, 153, 144], dtype=np.int64)  # 33 outer corner, 133 inner
LEFT_EYE = np.array([263, 387, 385, 362, 380, 373], dtype=np.int64)  # 263 outer corner, 362 inner
# Full ordered lid contours (upper lid from outer to inner corner, then lower lid back).
RIGHT_EYE_CONTOUR = np.array(
    [33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7], dtype=np.int64
)
LEFT_EYE_CONTOUR = np.array(
    [263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249], dtype=np.int64
)
RIGHT_IRIS = np.array([468, 469, 470, 471, 472], dtype=np.int64)  # 468 = centre
LEFT_IRIS = np.array([473, 474, 475, 476, 477], dtype=np.int64)  # 473 = centre
EYE_OUTER_CORNERS = np.array([33, 263], dtype=np.int64)  # the canonical 0.095 m distance

# Face outline, clockwise in the image starting at the forehead top (10), through the chin (152).
FACE_OVAL = np.array(
    [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
     152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109],
    dtype=np.int64,
)
RIGHT_BROW = np.array([46, 53, 52, 65, 55, 70, 63, 105, 66, 107], dtype=np.int64)
LEFT_BROW = np.array([276, 283, 282, 295, 285, 300, 293, 334, 296, 336], dtype=np.int64)
BROWS = np.sort(np.concatenate([RIGHT_BROW, LEFT_BROW]))
NOSE = np.array(
    sorted({168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 98, 97, 326, 327, 294, 278, 344, 440, 275,
            45, 220, 115, 48, 64}),
    dtype=np.int64,
)
NOSE_TIP = 1
FOREHEAD_TOP = 10
CHIN = 152

# Points that move little with expression: forehead, nose bridge and tip, eye corners, temples.
# Excluded on purpose: jaw/chin, lips, lids, brows, nostril wings (they flare with smiles).
RIGID = np.array(
    sorted({
        # forehead
        10, 151, 9, 108, 337, 109, 338, 67, 297, 69, 299, 104, 333,
        # nose bridge and tip
        168, 6, 197, 195, 5, 4, 1,
        # eye corners (outer and inner)
        33, 133, 263, 362,
        # temples / upper face sides
        127, 356, 162, 389, 21, 251, 54, 284, 103, 332,
    }),
    dtype=np.int64,
)
MOUTH = np.sort(np.concatenate([LIPS_OUTER, LIPS_INNER]))
EYES = np.sort(np.concatenate([RIGHT_EYE_CONTOUR, LEFT_EYE_CONTOUR]))
IRISES = np.concatenate([RIGHT_IRIS, LEFT_IRIS])
# Jaw line: the lower part of FACE_OVAL, from the left jaw angle (361) over the chin to the right (132).
JAW = np.array([361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132],
               dtype=np.int64)
# Points that carry expression (a compact subset for motion models): lips, lid contours, irises,
# brows, jaw line, chin midline below the lip (18, 200, 199, 175) and nostril wings (98, 327).
EXPRESSIVE = np.unique(np.concatenate([MOUTH, EYES, IRISES, BROWS, JAW, [18, 200, 199, 175, 98, 327]]))
# Points that drive a renderer locally (the landmark-conditioned head field): lips, jaw line and chin
# midline (the mouth opens), lid contours (blinks) and brows. 113 points.
# The lips and the chin midline: the region whose inside a renderer must keep (teeth, cavity, the
# space the lower lip and chin move into when the jaw opens).
MOUTH_REGION = np.unique(np.concatenate([MOUTH, [18, 200, 199, 175, 152]]))
DRIVING = np.unique(np.concatenate([MOUTH, JAW, [18, 200, 199, 175], EYES, BROWS]))


def _check(lms: np.ndarray) -> np.ndarray:
    lms = np.asarray(lms, dtype=np.float64)
    if lms.ndim == 2:
        lms = lms[None]
    if lms.ndim != 3 or lms.shape[1] < N_MESH or lms.shape[2] not in (2, 3):
        raise ValueError(f"expected landmarks (T, 478, 3), got shape {lms.shape}")
    return lms


def eye_corner_distance(lms: np.ndarray) -> np.ndarray:
    """Distance between the outer eye corners 33-263. lms (T,N,3) or (N,3) -> (T,) in the lms unit."""
    lms = _check(lms)
    return np.linalg.norm(lms[:, 263] - lms[:, 33], axis=-1)


def mouth_opening(lms: np.ndarray) -> np.ndarray:
    """Inner-lip gap / outer eye-corner distance. lms (T,N,3) or (N,3) -> (T,) dimensionless.

    The gap is the mean distance of three upper/lower inner-lip pairs (centre and both sides), so
    it is ~0 with closed lips and ~0.3-0.5 for a wide-open mouth.
    """
    lms = _check(lms)
    gap = np.linalg.norm(lms[:, UPPER_INNER_LIP] - lms[:, LOWER_INNER_LIP], axis=-1).mean(axis=1)
    return gap / np.maximum(eye_corner_distance(lms), 1e-9)


def mouth_width(lms: np.ndarray) -> np.ndarray:
    """Outer mouth-corner distance 61-291 / outer eye-corner distance. (T,N,3) -> (T,) dimensionless."""
    lms = _check(lms)
    w = np.linalg.norm(lms[:, MOUTH_CORNERS[1]] - lms[:, MOUTH_CORNERS[0]], axis=-1)
    return w / np.maximum(eye_corner_distance(lms), 1e-9)
