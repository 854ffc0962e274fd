"""The synthetic subject's 3D head, expression model and renderer geometry."""

from __future__ import annotations

import numpy as np
import pytest

from erlnet.face import topology as tp
from erlnet.face.pose import EYE_DISTANCE_M, matrix_from_euler
from erlnet.synth.face import LID_LOWER, LID_UPPER, MOUTH_GAP_PER_UNIT, Expression, project
from erlnet.synth.render import MOUTH_LABEL, Renderer


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(160)


def test_canonical_head_follows_the_conventions(renderer: Renderer):
    head = renderer.head
    can = head.canonical
    assert can.shape == (478, 3)
    assert np.linalg.norm(can[263] - can[33]) == pytest.approx(EYE_DISTANCE_M, abs=1e-12)
    np.testing.assert_allclose(can[tp.RIGID].mean(axis=0), 0.0, atol=1e-12)
    # axes: x to the image right, y down, the nose tip nearer the camera than the ears' line
    assert can[263, 0] > can[33, 0] and can[tp.CHIN, 1] > can[tp.FOREHEAD_TOP, 1]
    assert can[tp.NOSE_TIP, 2] < can[[234, 454], 2].mean() - 0.03
    # the photo is the canonical pose: projecting the rest shape gives back its landmarks exactly
    px = project(can + head.t0, renderer.K)
    np.testing.assert_allclose(px, renderer.portrait.landmarks[:, :2], atol=1e-9)
    # head-and-shoulders framing: forehead-to-chin about 36% of the frame
    face_h = np.linalg.norm(px[tp.CHIN] - px[tp.FOREHEAD_TOP]) / renderer.size
    assert 0.34 < face_h < 0.38


def test_mouth_gap_is_linear_in_the_opening(renderer: Renderer):
    opens = np.array([0.0, 0.1, 0.3, renderer.model.open0, 0.9, 1.2, 1.5])
    pts = renderer.model.deform(renderer.head.canonical, Expression(open=opens))
    gap = pts[:, 14, 1] - pts[:, 13, 1]
    np.testing.assert_allclose(gap, opens * MOUTH_GAP_PER_UNIT, atol=1e-6)  # 1 micrometre
    # the chin follows the jaw down; the forehead and nose do not move
    assert np.all(np.diff(pts[:, tp.CHIN, 1]) > 0)
    assert np.abs(pts[:, tp.RIGID] - pts[:1, tp.RIGID]).max() < 1e-9


def test_blink_and_styles_move_the_right_parts(renderer: Renderer):
    can = renderer.head.canonical
    model = renderer.model
    shut = model.deform(can, Expression(blink=1.0, eye_open=0.7))[0]
    np.testing.assert_allclose(shut[LID_UPPER], shut[LID_LOWER], atol=1e-12)
    rest = model.deform(can, Expression())[0]
    smile = model.deform(can, Expression(smile=1.0))[0]
    assert (smile[tp.MOUTH_CORNERS, 1] < rest[tp.MOUTH_CORNERS, 1] - 0.003).all()  # corners up
    assert smile[291, 0] - smile[61, 0] > rest[291, 0] - rest[61, 0] + 0.004  # and out
    brows = model.deform(can, Expression(brow_raise=1.0))[0]
    assert (brows[tp.BROWS, 1] < rest[tp.BROWS, 1] - 0.0015).all()
    frown = model.deform(can, Expression(frown=1.0))[0]
    inner = (107, 336)
    assert frown[inner[1], 0] - frown[inner[0], 0] < rest[inner[1], 0] - rest[inner[0], 0] - 0.003
    assert (frown[list(inner), 1] > rest[list(inner), 1] + 0.0015).all()
    wide = model.deform(can, Expression(width=1.0))[0]
    rounded = model.deform(can, Expression(width=-1.0))[0]
    w = [p[291, 0] - p[61, 0] for p in (rounded, rest, wide)]
    assert w[0] < w[1] - 0.006 and w[2] > w[1] + 0.006
    assert rounded[0, 2] < rest[0, 2] - 0.002  # rounded lips push forward (towards the camera)


def test_mesh_does_not_fold_for_extreme_expressions(renderer: Renderer):
    outside_mouth = renderer.mesh.labels != MOUTH_LABEL
    t0 = renderer.head.t0
    for e in (
        # 1.5 is the widest opening a style reaches (audio drive <= 1, mouth_amplitude <= 1.5)
        Expression(open=1.5, width=1.5), Expression(open=0.0, width=-1.5), Expression(open=1.5, width=-1.5),
        Expression(open=0.2, blink=1.0, smile=1.0, brow_raise=1.0, eye_open=1.0),
        Expression(open=1.0, blink=0.5, frown=1.0, brow_raise=-0.5, eye_open=-0.5, smile=1.0),
    ):
        g = renderer.frame_geometry(np.eye(3), t0, e)
        assert not renderer.flipped(g.vertices)[outside_mouth].any(), e
    # small head turns fold at most a few sliver triangles at the silhouette (drawn back to front)
    for angles in ((3, 0, 0), (0, 4, 0), (0, 0, 4), (-3, -4, 2)):
        R = matrix_from_euler(np.radians(angles))
        g = renderer.frame_geometry(R, t0, Expression(open=0.4))
        assert renderer.flipped(g.vertices)[outside_mouth].sum() <= 12


def test_render_is_the_photo_at_rest_and_changes_where_it_should(renderer: Renderer):
    t0 = renderer.head.t0
    rest = renderer.render(np.eye(3), t0, Expression(open=renderer.model.open0))
    np.testing.assert_array_equal(rest, renderer.portrait.image)
    lms = renderer.portrait.landmarks[:, :2]
    opened = renderer.render(np.eye(3), t0, Expression(open=1.5)).astype(int)
    diff = np.abs(opened - rest.astype(int)).sum(axis=2)
    x0, y0 = lms[tp.LIPS_OUTER].min(axis=0).astype(int) - 2
    x1, y1 = lms[tp.LIPS_OUTER].max(axis=0).astype(int) + 6
    mouth = diff[y0:y1, x0:x1]
    assert mouth.mean() > 20 and diff[: y0 - 25].max() == 0  # nothing moves above the nose
    # the opened mouth shows a dark cavity
    inner_y = int(lms[14, 1]) + 2
    assert opened[inner_y, int(lms[14, 0])].sum() < rest[inner_y, int(lms[14, 0])].sum() - 150
    shut = renderer.render(np.eye(3), t0, Expression(open=renderer.model.open0, blink=1.0)).astype(int)
    for eye in (tp.RIGHT_IRIS[0], tp.LEFT_IRIS[0]):
        x, y = lms[eye].astype(int)
        assert shut[y - 1 : y + 2, x - 1 : x + 2].mean() > rest[y - 1 : y + 2, x - 1 : x + 2].mean() + 30  # lid over the iris
