from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from erlnet.errors import FormatError, InputError
from erlnet.render.base import RenderCondition
from erlnet.render.dbf import DBFConfig, DBFRenderer
from erlnet.render.losses import RenderLoss

TINY = dict(
    feature_scale=2,
    feature_dim=8,
    head_samples=8,
    torso_samples=4,
    plane_resolution=16,
    plane_levels=2,
    plane_channels=4,
    torso_plane_resolution=8,
    hidden=16,
    expression_code_dim=8,
    expression_hidden=16,
    deform_hidden=8,
    upsampler_channels=8,
    occupancy_resolution=16,
)


def _rot(axis: int, a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    i, j = [k for k in range(3) if k != axis]
    R = torch.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def make_cond(B: int = 2, size: int = 32, D: int = 12, seed: int = 0, R: torch.Tensor | None = None) -> RenderCondition:
    g = torch.Generator().manual_seed(seed)
    K = torch.tensor([[2.0 * size, 0.0, size / 2], [0.0, 2.0 * size, size / 2], [0.0, 0.0, 1.0]])
    rot = torch.stack([_rot(1, 0.1 * b) for b in range(B)]) if R is None else R.expand(B, 3, 3)
    return RenderCondition(
        expression=0.02 * torch.randn(B, D, generator=g),
        blink=torch.rand(B, generator=g),
        rotation=rot,
        translation=torch.tensor([0.0, -0.03, 0.62]).expand(B, 3).clone(),
        ref_rotation=torch.eye(3),
        ref_translation=torch.tensor([0.0, -0.03, 0.62]),
        K=K,
        background=torch.rand(B, 3, size, size, generator=g),
    )


@pytest.mark.parametrize("fusion", ["feature", "pixel"])
def test_output_shapes_and_ranges(fusion: str) -> None:
    torch.manual_seed(0)
    r = DBFConfig(fusion=fusion, **TINY).setup(expression_dim=12, image_size=32)
    out = r(make_cond())
    assert out.rgb.shape == (2, 3, 32, 32) and out.alpha.shape == (2, 1, 32, 32)
    assert out.head_alpha.shape == (2, 1, 16, 16) and out.torso_alpha.shape == (2, 1, 16, 16)
    assert out.extras["rgb_low"].shape == (2, 3, 16, 16)
    assert out.extras["distortion"].shape == (2,) and out.extras["deform_offset"].shape == (2,)
    for x in (out.rgb, out.alpha, out.head_alpha, out.torso_alpha):
        assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    # Visible coverages never exceed the fused opacity of the pixel.
    low = 1 - (1 - out.extras["head_opacity"]) * (1 - out.extras["torso_opacity"])
    assert torch.allclose(out.head_alpha + out.torso_alpha, low, atol=1e-5)
    if fusion == "pixel":
        assert out.extras["head_rgb"].shape == (2, 3, 32, 32)
    out.rgb.mean().backward()
    assert r.head.planes.planes[0].grad is not None and r.upsampler.body[0].weight.grad is not None


def test_render_in_chunks_equals_forward() -> None:
    torch.manual_seed(0)
    r = DBFConfig(**TINY).setup(12, 32).eval()
    cond = make_cond(B=3)
    with torch.no_grad():
        full = r(cond)
    parts = r.render(cond, chunk=2)
    assert torch.allclose(parts.rgb, full.rgb, atol=1e-5)
    assert torch.allclose(parts.head_alpha, full.head_alpha, atol=1e-5)


def test_config_round_trip_and_errors() -> None:
    cfg = DBFConfig(fusion="pixel", head_box_min=(-0.2, -0.2, -0.1))
    again = DBFConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(FormatError, match="unknown fields"):
        DBFConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    old = {k: v for k, v in cfg.to_dict().items() if k != "torso_affine"}  # saved before the torso motion
    assert DBFConfig.from_dict(old).torso_affine is False and cfg.torso_affine is True
    with pytest.raises(InputError, match="multiple of feature_scale"):
        DBFConfig().setup(10, 250)
    with pytest.raises(InputError, match="fusion"):
        DBFConfig(fusion="late").setup(10, 256)  # type: ignore[arg-type]
    r = DBFConfig(**TINY).setup(12, 32)
    with pytest.raises(InputError, match="multiple of feature_scale"):
        r(make_cond(size=31))


class BlobField(nn.Module):
    """Analytic field for tests: an anisotropic gaussian blob of density at `centre`, coloured by
    position, evaluated at Q^T x (so that it is the blob rotated by Q)."""

    def __init__(self, lo: float, hi: float, centre=(0.0, 0.0, 0.0), Q: torch.Tensor | None = None, empty: bool = False):
        super().__init__()
        self.register_buffer("box_min", torch.full((3,), lo))
        self.register_buffer("box_max", torch.full((3,), hi))
        self.centre = torch.tensor(centre)
        self.Q = torch.eye(3) if Q is None else Q
        self.empty = empty

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.box_min) / (self.box_max - self.box_min) * 2 - 1

    def forward(self, x_norm, counts, code):
        x = (x_norm + 1) / 2 * (self.box_max - self.box_min) + self.box_min
        y = x @ self.Q - self.centre  # rows: Q^T x
        r2 = (y / torch.tensor([0.03, 0.015, 0.02])).square().sum(-1)
        sigma = (0.0 if self.empty else 400.0) * torch.exp(-r2)
        feat = torch.cat([torch.sigmoid(20 * y), torch.tanh(10 * y[:, :1]).expand(-1, 5)], -1)
        return sigma, feat


def _with_fields(r: DBFRenderer, head: nn.Module) -> DBFRenderer:
    r.head = head
    r.torso = BlobField(-0.5, 0.5, empty=True)
    return r.eval()


def test_rendering_with_a_rotated_pose_equals_rendering_the_rotated_field() -> None:
    torch.manual_seed(0)
    cfg = DBFConfig(**{**TINY, "head_samples": 48}, head_box_min=(-0.15,) * 3, head_box_max=(0.15,) * 3)
    Q = _rot(2, math.pi / 2)  # maps the cube box onto itself, so both renders sample the same points
    R = _rot(1, 0.3) @ _rot(0, -0.2)
    a = _with_fields(cfg.setup(12, 32), BlobField(-0.15, 0.15, centre=(0.02, 0.0, 0.0)))
    b = _with_fields(cfg.setup(12, 32), BlobField(-0.15, 0.15, centre=(0.02, 0.0, 0.0), Q=Q))
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        oa = a(make_cond(B=1, R=R @ Q))
        ob = b(make_cond(B=1, R=R))
        oc = b(make_cond(B=1, R=R @ Q))
    assert oa.head_alpha.max() > 0.5  # the blob is in view
    assert torch.allclose(oa.head_alpha, ob.head_alpha, atol=1e-4)
    assert torch.allclose(oa.extras["feature"], ob.extras["feature"], atol=1e-4)
    assert torch.allclose(oa.rgb, ob.rgb, atol=1e-4)
    assert (oa.head_alpha - oc.head_alpha).abs().max() > 0.1  # the pose does matter


def test_head_blob_appears_where_the_pose_projects_it() -> None:
    size = 64
    cfg = DBFConfig(**{**TINY, "head_samples": 32})
    centre = torch.tensor([0.03, 0.05, 0.0])
    r = _with_fields(cfg.setup(12, size), BlobField(-0.2, 0.2, centre=tuple(centre.tolist())))
    for R, t in [(torch.eye(3), (0.0, -0.03, 0.62)), (_rot(1, 0.4), (0.03, 0.01, 0.6)), (_rot(2, -0.3), (-0.02, 0.0, 0.7))]:
        cond = make_cond(B=1, size=size, R=R)
        cond.translation = torch.tensor([t])
        with torch.no_grad():
            a = r(cond).head_alpha[0, 0]
        ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        centroid = torch.stack([(a * xs).sum(), (a * ys).sum()]) / a.sum()
        X = R @ centre + torch.tensor(t)
        px = (cond.K @ X)[:2] / X[2]
        expect = (px - 0.5) / 2  # output pixel -> feature cell coordinates (scale 2)
        assert torch.allclose(centroid, expect, atol=0.25), (centroid, expect)


def test_torso_follows_the_pose_through_its_pose_linear_motion() -> None:
    """A torso motion translating samples by -delta when the head moves by delta renders the torso
    exactly as a motionless renderer whose torso content sits delta further: the body follows."""
    size, delta = 32, torch.tensor([0.03, 0.02, 0.0])
    centre = torch.tensor([0.0, 0.1, 0.0])
    cfg = DBFConfig(**{**TINY, "torso_samples": 32})

    def renderer(affine: bool, torso_centre: torch.Tensor) -> DBFRenderer:
        r = DBFConfig(**{**cfg.to_dict(), "torso_affine": affine}).setup(12, size)
        r.head = BlobField(-0.2, 0.2, empty=True)
        r.torso = BlobField(-0.5, 0.5, centre=tuple(torso_centre.tolist()))
        return r.eval()

    moving = renderer(True, centre)
    with torch.no_grad():  # b (box-normalised, 2 / box size = 2 per metre) = -2 delta; code = 10 delta
        for i in range(3):
            moving.torso_motion.coef.weight[4 * i + 3, 6 + i] = -0.2
    cond = make_cond(B=1, size=size, R=torch.eye(3))
    cond.translation = cond.ref_translation[None] + delta
    with torch.no_grad():
        follow = moving(cond)
        shifted = renderer(False, centre + delta)(cond)
        still = renderer(False, centre)(cond)
        at_ref = moving(make_cond(B=1, size=size, R=torch.eye(3)))
        still_ref = renderer(False, centre)(make_cond(B=1, size=size, R=torch.eye(3)))
    assert follow.torso_alpha.max() > 0.5  # the torso blob is in view
    assert torch.allclose(follow.torso_alpha, shifted.torso_alpha, atol=1e-5)
    assert torch.allclose(follow.rgb, shifted.rgb, atol=1e-5)
    assert (follow.torso_alpha - still.torso_alpha).abs().max() > 0.2  # without the motion it stays put
    assert torch.allclose(at_ref.rgb, still_ref.rgb, atol=1e-6)  # no motion at the reference pose


def test_pose_affine_motion_is_linear_in_the_pose_and_grouped_by_frame() -> None:
    from erlnet.render.fields import PoseAffineMotion

    torch.manual_seed(0)
    m = PoseAffineMotion(9).double()
    x = torch.rand(7, 3, dtype=torch.float64) * 2 - 1
    p = torch.randn(2, 9, dtype=torch.float64)
    assert torch.equal(m(x, [3, 4], p), x)  # starts as the identity
    nn.init.normal_(m.coef.weight, std=0.3)
    assert torch.allclose(m(x, [7], torch.zeros(1, 9, dtype=torch.float64)), x)  # identity at the reference pose
    one = m(x, [3, 4], p) - x
    assert torch.allclose(m(x, [3, 4], 2 * p) - x, 2 * one)  # linear: extrapolates along the pose
    assert torch.allclose(one[:3], m(x[:3], [3], p[:1]) - x[:3]) and torch.allclose(one[3:], m(x[3:], [4], p[1:]) - x[3:])
    assert torch.autograd.gradcheck(lambda xx, pp: m(xx, [3, 4], pp), (x.requires_grad_(), p.requires_grad_()))


def _disc_scene(size: int = 32):
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    head = ((xs - size / 2) ** 2 + (ys - size * 0.45) ** 2) < (size * 0.3) ** 2
    torso = (ys > size * 0.75) & ~head
    labels = torch.zeros(size, size, dtype=torch.long)
    labels[torso], labels[head] = 1, 2
    bg = torch.full((3, size, size), 0.2)
    target = bg.clone()
    target[:, head] = torch.tensor([0.9, 0.6, 0.5])[:, None] * (0.8 + 0.2 * xs[head] / size)
    target[:, torso] = torch.tensor([0.2, 0.3, 0.8])[:, None]
    return target[None], labels[None], bg[None]


def test_a_few_dozen_steps_fit_a_synthetic_target() -> None:
    torch.manual_seed(0)
    size = 32
    r = DBFConfig(**{**TINY, "occupancy_warmup": 20, "occupancy_interval": 5, "occupancy_decay": 0.8}).setup(12, size)
    target, labels, bg = _disc_scene(size)
    cond = make_cond(B=1, size=size, R=torch.eye(3))
    cond.background = bg
    loss_fn = RenderLoss(ssim=0.0)
    opt = torch.optim.Adam(r.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        out = r(cond)
        loss, parts = loss_fn(out, target, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:3]) / 3, losses
    r.eval()
    with torch.no_grad():
        out = r(cond)
    assert (out.rgb - target).abs().mean() < 0.5 * (bg - target).abs().mean()
    # After the warm-up the occupancy grids skip samples (background rays are empty).
    assert float(out.extras["samples_per_ray"][0]) < 0.8 * (TINY["head_samples"] + TINY["torso_samples"])


def test_carving_with_silhouettes_empties_background_rays() -> None:
    torch.manual_seed(0)
    size = 32
    r = DBFConfig(**{**TINY, "occupancy_resolution": 32}).setup(12, size).eval()
    _, _, bg = _disc_scene(size)
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    labels = (2 * ((xs - 16) ** 2 + (ys - 14) ** 2 < 6**2)).long()[None]  # a small head, no torso
    cond = make_cond(B=2, size=size)  # two head poses
    cond.background = bg.expand(2, -1, -1, -1)
    with torch.no_grad():
        before = r(cond)
    r.carve(cond, labels.expand(2, -1, -1), margin=0.03)
    with torch.no_grad():
        after = r(cond)
    fg = (labels > 0).float()[:, None]
    far = torch.nn.functional.max_pool2d(fg, 13, stride=1, padding=6)  # 6 px from the foreground
    far_cells = torch.nn.functional.max_pool2d(far, 2)[0, 0] == 0  # feature cells (scale 2)
    assert far_cells.sum() > 20
    opacity = lambda o: 1 - (1 - o.extras["head_opacity"]) * (1 - o.extras["torso_opacity"])  # noqa: E731
    assert opacity(before)[:, 0][:, far_cells].min() > 0.05  # the fresh field's haze
    far_after = opacity(after)[:, 0][:, far_cells]
    assert (far_after == 0).float().mean() > 0.95 and far_after.max() < 0.05  # carved away
    centre = (slice(None), 0, 7, 8)
    assert torch.allclose(after.extras["head_opacity"][centre], before.extras["head_opacity"][centre], atol=1e-5)
    assert float(after.extras["samples_per_ray"][0]) < 0.8 * float(before.extras["samples_per_ray"][0])
    # Frames without a usable mask carve nothing.
    hull = r.head_grid.hull.clone()
    r.carve(cond, torch.zeros(2, size, size, dtype=torch.long))
    assert torch.equal(hull, r.head_grid.hull)


def test_renderer_round_trips_through_a_safetensors_bundle(tmp_path) -> None:
    from erlnet.io.bundle import load_bundle, save_bundle

    torch.manual_seed(0)
    cfg = DBFConfig(**{**TINY, "occupancy_warmup": 2})
    r = cfg.setup(12, 32)
    cond = make_cond(B=1)
    opt = torch.optim.Adam(r.parameters(), lr=1e-2)
    for _ in range(3):  # move weights, grids and the step counter away from their initial values
        out = r(cond)
        out.rgb.mean().backward()
        opt.step()
        opt.zero_grad()
    r.carve(cond, torch.full((1, 32, 32), 2))
    save_bundle(tmp_path / "a", kind="avatar", schema_version=1, config=cfg.to_dict(), tensors=r.state_dict())
    config, tensors, _ = load_bundle(tmp_path / "a", kind="avatar", schema_version=1)
    again = DBFConfig.from_dict(config).setup(12, 32)
    again.load_state_dict(tensors)
    assert int(again.train_steps) == 3 and torch.equal(again.head_grid.mask, r.head_grid.mask)
    r.eval(), again.eval()
    with torch.no_grad():
        assert torch.allclose(again(cond).rgb, r(cond).rgb, atol=1e-6)


def test_parameter_groups_partition_the_parameters() -> None:
    r = DBFConfig(**TINY).setup(12, 32)
    groups = r.parameter_groups()
    assert set(groups) == {"fields", "cnn"}
    ids = [id(p) for g in groups.values() for p in g]
    assert sorted(ids) == sorted(id(p) for p in r.parameters()) and len(set(ids)) == len(ids)
    assert {id(p) for p in groups["cnn"]} == {id(p) for p in r.upsampler.parameters()}
