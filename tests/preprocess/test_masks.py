"""Head / torso / background label maps from a person probability and face landmarks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from erlnet.errors import InputError
from erlnet.face.topology import FACE_OVAL
from erlnet.preprocess.masks import (
    BACKGROUND,
    HEAD,
    TORSO,
    MaskConfig,
    PersonSegmenter,
    head_polygon,
    label_map,
    soft_masks,
)

H = W = 256
CX, CY, RX, RY = 128.0, 110.0, 38.0, 50.0  # face oval centre and semi-axes (pixels)
FACE_H = 2 * RY


def synth_landmarks(angle_deg: float = 0.0) -> np.ndarray:
    """478 landmarks with an elliptic face oval (contour order), outer eye corners and chin.

    Rolled by `angle_deg` (counter-clockwise on screen) about the oval centre. (478, 3) pixels.
    """
    lm = np.zeros((478, 3), np.float32)
    lm[:, :2] = (CX, CY)
    theta = np.deg2rad(-90.0 + 10.0 * np.arange(36))  # index 10 on top, then to the image right
    for k, i in enumerate(FACE_OVAL):
        lm[i, :2] = (CX + RX * np.cos(theta[k]), CY + RY * np.sin(theta[k]))
    lm[33, :2] = (CX - 0.5 * RX, CY - 0.2 * RY)
    lm[263, :2] = (CX + 0.5 * RX, CY - 0.2 * RY)
    return rotate_points(lm, angle_deg)


def rotate_points(lm: np.ndarray, angle_deg: float) -> np.ndarray:
    m = cv2.getRotationMatrix2D((CX, CY), angle_deg, 1.0)  # same convention as cv2.warpAffine
    out = lm.copy()
    out[:, :2] = lm[:, :2] @ m[:, :2].T + m[:, 2]
    return out


def synth_person(p_in: float = 0.95) -> np.ndarray:
    """Person probability: head disk (larger than the face oval: hair, ears) + neck + shoulders. (H, W)."""
    prob = np.full((H, W), 0.02, np.float32)
    cv2.circle(prob, (int(CX), int(CY - 6)), int(1.3 * RY), p_in, -1)
    cv2.rectangle(prob, (int(CX - 25), int(CY)), (int(CX + 25), int(CY + 2 * RY)), p_in, -1)  # neck
    cv2.rectangle(prob, (10, int(CY + 1.6 * RY)), (W - 10, H - 1), p_in, -1)  # shoulders
    return prob


def at(labels: np.ndarray, xy: np.ndarray | tuple[float, float]) -> int:
    x, y = xy
    return int(labels[int(round(y)), int(round(x))])


def test_upright_head_torso_background() -> None:
    labels = label_map(synth_person(), synth_landmarks())
    assert labels.dtype == np.uint8 and labels.shape == (H, W)
    assert at(labels, (CX, CY - RY - 0.15 * FACE_H)) == HEAD  # hair above the face oval
    assert at(labels, (CX, CY + 0.95 * RY)) == HEAD  # chin
    assert at(labels, (CX - 1.12 * RX, CY)) == HEAD  # ears / side hair
    assert at(labels, (CX + 1.12 * RX, CY)) == HEAD
    assert at(labels, (CX, CY + RY + 0.15 * FACE_H)) == TORSO  # neck under the chin
    assert at(labels, (30, H - 20)) == TORSO  # shoulders
    assert at(labels, (W - 30, H - 20)) == TORSO
    assert at(labels, (3, 3)) == BACKGROUND
    assert at(labels, (W - 20, 60)) == BACKGROUND  # beside the head, no person


def test_head_is_only_person_pixels() -> None:
    prob = synth_person()
    labels = label_map(prob, synth_landmarks())
    assert not np.any(labels[prob < 0.5])


def test_probability_below_threshold_is_background() -> None:
    prob = synth_person(p_in=0.4)
    assert not np.any(label_map(prob, synth_landmarks()))
    labels = label_map(prob, synth_landmarks(), MaskConfig(person_threshold=0.3))
    assert at(labels, (CX, CY)) == HEAD and at(labels, (30, H - 20)) == TORSO


def test_small_person_islands_are_dropped() -> None:
    prob = synth_person()
    cv2.circle(prob, (20, 20), 3, 1.0, -1)  # 29 px, well under 0.2 % of the frame
    labels = label_map(prob, synth_landmarks())
    assert at(labels, (20, 20)) == BACKGROUND
    kept = label_map(prob, synth_landmarks(), MaskConfig(min_component_fraction=0.0))
    assert at(kept, (20, 20)) == TORSO


def test_rolled_head_neck_line_follows_roll() -> None:
    angle = 20.0
    lm = synth_landmarks(angle)
    prob = np.full((H, W), 0.95, np.float32)  # person everywhere: only the head region decides
    cfg = MaskConfig(jaw_extent=0.15, neck_offset=0.05)  # neck line 5 px under the chin
    labels = label_map(prob, lm, cfg)
    chin = lm[152, :2]
    right = (lm[263, :2] - lm[33, :2]) / np.linalg.norm(lm[263, :2] - lm[33, :2])
    down = np.array([-right[1], right[0]])
    assert at(labels, chin) == HEAD
    assert at(labels, chin + 0.15 * FACE_H * down) == TORSO
    # Just above / below the rolled neck line on both sides of the chin. On screen the head point
    # of the lower side is below the torso point of the raised side, so no horizontal line could
    # produce these labels.
    heads = [chin + s * right + 3.0 * down for s in (-15.0, 15.0)]
    torsos = [chin + s * right + 8.0 * down for s in (-15.0, 15.0)]
    assert max(p[1] for p in heads) > min(p[1] for p in torsos) + 2
    assert [at(labels, p) for p in heads] == [HEAD, HEAD]
    assert [at(labels, p) for p in torsos] == [TORSO, TORSO]


def test_label_map_rotates_with_the_head() -> None:
    angle = 20.0
    prob = synth_person()
    upright = label_map(prob, synth_landmarks())
    m = cv2.getRotationMatrix2D((CX, CY), angle, 1.0)
    prob_rot = cv2.warpAffine(prob, m, (W, H), flags=cv2.INTER_NEAREST, borderValue=0.02)
    rolled = label_map(prob_rot, synth_landmarks(angle))
    expected = cv2.warpAffine(upright, m, (W, H), flags=cv2.INTER_NEAREST, borderValue=0)
    agree = np.mean(rolled == expected)
    assert agree > 0.99
    # The rotated expectation has a rolled neck boundary: this is not trivially met by upright labels.
    assert np.mean(upright == expected) < 0.97


def test_head_polygon_extends_up_and_sideways() -> None:
    cfg = MaskConfig(hair_extent=0.5, side_extent=0.2, jaw_extent=0.1, neck_offset=0.04)
    poly = head_polygon(synth_landmarks(), cfg)
    assert poly[:, 1].min() == pytest.approx(CY - RY - 0.5 * FACE_H, abs=0.5)
    assert poly[:, 0].min() == pytest.approx(CX - RX - 0.2 * 2 * RX, abs=0.5)
    assert poly[:, 0].max() == pytest.approx(CX + RX + 0.2 * 2 * RX, abs=0.5)
    assert poly[:, 1].max() == pytest.approx(CY + RY + 0.04 * FACE_H, abs=0.5)  # cut by the neck line
    # The cut is a straight segment at the neck line, wider than a point.
    bottom = poly[np.abs(poly[:, 1] - poly[:, 1].max()) < 1e-6]
    assert bottom[:, 0].max() - bottom[:, 0].min() > 0.2 * RX


def test_soft_masks_sum_to_person_probability() -> None:
    prob = synth_person()
    head, torso = soft_masks(prob, synth_landmarks())
    assert head.dtype == np.float32 and head.shape == (H, W)
    np.testing.assert_allclose(head + torso, prob, atol=1e-6)
    assert head[int(CY), int(CX)] == pytest.approx(0.95, abs=1e-3)
    assert torso[H - 20, 30] == pytest.approx(0.95, abs=1e-3)
    # The transition is feathered: some pixels are partly head and partly torso.
    assert np.any((head > 0.1) & (torso > 0.1))


def test_bad_inputs_are_reported() -> None:
    with pytest.raises(InputError, match="landmarks"):
        label_map(synth_person(), np.zeros((10, 3)))
    lm = synth_landmarks()
    lm[152, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        label_map(synth_person(), lm)
    with pytest.raises(InputError, match="segmentation_model"):
        MaskConfig(segmentation_model="huge")


def test_face_oval_is_an_ordered_contour() -> None:
    # head_polygon draws FACE_OVAL as a polygon: it must walk around MediaPipe's face oval loop.
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL

    edges = {(a, b) for a, b in FACEMESH_FACE_OVAL}
    oval = [int(i) for i in FACE_OVAL]
    ring = {(oval[i], oval[(i + 1) % len(oval)]) for i in range(len(oval))}
    assert ring == edges
    assert oval[0] == 10 and oval[18] == 152  # synth_landmarks relies on this layout


@pytest.fixture(scope="module")
def astronaut() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut photo (512, 512, 3) and its MediaPipe face landmarks (478, 3) in pixels."""
    from mediapipe.python.solutions.face_mesh import FaceMesh
    from skimage.data import astronaut as load

    img = load()
    with FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as mesh:
        found = mesh.process(img).multi_face_landmarks
    assert found, "MediaPipe found no face in the astronaut photo"
    h, w = img.shape[:2]
    lm = np.array([[p.x * w, p.y * h, p.z * w] for p in found[0].landmark], np.float32)
    return img, lm


def test_real_segmenter_on_astronaut(astronaut: tuple[np.ndarray, np.ndarray]) -> None:
    img, lm = astronaut
    with PersonSegmenter() as seg:
        prob = seg.person_probability(img)
        with pytest.raises(InputError, match="uint8"):
            seg.person_probability(img.astype(np.float32))
    assert prob.shape == img.shape[:2] and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    labels = label_map(prob, lm)
    face_centre = lm[FACE_OVAL, :2].mean(axis=0)
    assert at(labels, face_centre) == HEAD
    assert at(labels, lm[10, :2] - (0, 20)) == HEAD  # hair above the forehead
    assert at(labels, (160, 420)) == TORSO  # suit, below the face
    assert at(labels, (500, 10)) == BACKGROUND  # top-right corner: wall


def test_segmenter_outside_with_block_fails() -> None:
    with pytest.raises(RuntimeError, match="with"):
        PersonSegmenter().person_probability(np.zeros((8, 8, 3), np.uint8))
