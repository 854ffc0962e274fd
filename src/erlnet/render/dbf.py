"""DBF-NeRF: the dual-branch renderer of ERLNet, with head and torso fused in feature space.

    renderer = DBFConfig(fusion="feature").setup(expression_dim=1434, image_size=512)
    renderer.set_expression_stats(train_expressions)   # (T, D), once before training
    renderer.carve(cond, masks)                        # training frames, any batching; optional
    out = renderer(cond)                               # RenderCondition -> RenderOutput
    loss, parts = RenderLoss()(out, target_rgb, masks) # erlnet.render.losses

Head branch: a tri-plane field in the canonical head frame (FiLM-conditioned on the expression
code and blink); camera rays of the h x w feature grid (h = H / feature_scale) are moved into the
head frame by the inverse head pose and sampled only inside the head box. Torso branch: a tri-plane
field in the reference head frame (static in camera space), sampled inside the torso box, whose
samples are moved by an affine map linear in the head pose relative to the reference (the body
follows the head, also beyond the training poses) and offset by a deformation MLP conditioned on
that pose (the neck follows the head). Both are fused along the rays (`erlnet.render.fusion`) into
one feature map + opacity that a small CNN decodes to the output image (or, in the "pixel"
ablation, each branch is decoded and the RGBA images are composited).

Speed: only samples inside a box are evaluated, and per-branch occupancy grids (carved by the
silhouettes, then learnt from the compositing weights during a warm-up) skip empty and hidden
space, leaving a few samples per ray. Training steps count in `train_steps`; every
`occupancy_interval`-th step evaluates all samples, so that cells that became visible come back.

Patches: any crop of the image is rendered by the same camera with the principal point shifted
(K[0, 2] -= x0, K[1, 2] -= y0) and a background of the crop's size; train on patches that way
(keep x0, y0, and the crop size multiples of feature_scale).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from erlnet.errors import FormatError, InputError
from erlnet.face import topology
from erlnet.render.base import RenderCondition, Renderer, RenderOutput
from erlnet.render.encodings import POSE_CODE_DIM, ExpressionEncoder, relative_pose_code
from erlnet.render.fields import ConditionedField, DeformField, PoseAffineMotion
from erlnet.render.fusion import fusion_weights, over, over_background
from erlnet.render.landmarks import FrameLandmarks, LandmarkCoding, driving_columns
from erlnet.render.raymarch import (
    OccupancyGrid,
    distortion,
    intersect_box,
    pixel_directions,
    stratified_samples,
    transmittance,
)
from erlnet.render.upsampler import Upsampler

Vec3 = tuple[float, float, float]


@dataclass
class DBFConfig:
    """DBF-NeRF renderer. Boxes are in metres; the head box in the canonical head frame (origin
    between the eyes, y down, z away from the camera), the torso box in the reference head frame."""

    fusion: Literal["feature", "pixel"] = "feature"  # fuse branches in feature space, or composite RGBA (ablation)
    feature_scale: int = 4  # output pixels per feature-map pixel along each axis (power of two)
    feature_dim: int = 16  # channels of the rendered feature map (the first 3 are a colour preview)
    head_samples: int = 32  # samples per ray inside the head box (before empty-space skipping)
    torso_samples: int = 16  # samples per ray inside the torso box (before empty-space skipping)
    plane_resolution: int = 256  # finest tri-plane resolution of the head field (256: +1.6 dB over 128 in 6 min)
    plane_levels: int = 2  # tri-plane levels, each 4x coarser than the previous
    plane_channels: int = 8  # channels per plane and level (the field sees 3 x levels x channels)
    torso_plane_resolution: int = 256  # finest tri-plane resolution of the torso field (clothes need detail too)
    hidden: int = 64  # width of the field MLPs
    head_layers: int = 2  # hidden layers of the head field MLP (the first is expression-modulated)
    torso_layers: int = 1  # hidden layers of the torso field MLP
    expression_code_dim: int = 32  # width of the expression (+ blink) code
    expression_hidden: int = 128  # hidden width of the expression encoder
    # Landmark conditioning of the head (erlnet.render.landmarks): the driving landmarks warp the
    # canonical head space and give each sample a Gaussian landmark code, so the mouth and lids
    # follow the motion locally. Needs a landmark expression layout (all 478/468 points or EXPRESSIVE).
    landmark_code: bool = True
    landmark_channels: int = 16  # width of the Gaussian landmark code
    landmark_sigma: float = 0.01  # initial radius of each landmark's (learnt, anisotropic) Gaussian (m)
    landmark_warp_sigma: float = 0.012  # radius of the warp's Gaussians (m; 0 = no warp)
    mouth_margin: float = 0.015  # head cells within this of the lips and chin are never skipped (m; <0: off)
    head_box_min: Vec3 = (-0.18, -0.22, -0.12)  # head box corner, canonical head frame (m)
    head_box_max: Vec3 = (0.18, 0.26, 0.20)
    torso_box_min: Vec3 = (-0.40, 0.00, -0.10)  # torso + neck box corner, reference head frame (m)
    torso_box_max: Vec3 = (0.40, 0.60, 0.35)
    torso_affine: bool = True  # torso moves by an affine map linear in the head pose (extrapolates to new poses)
    deform_hidden: int = 32  # width of the torso deformation MLP
    deform_freqs: int = 2  # octaves of positional encoding in the deformation MLP
    deform_max_offset: float = 0.04  # largest torso sample offset (m)
    density_scale: float = 100.0  # sigma = density_scale * softplus(raw), 1/m
    density_bias: float = -5.0  # initial raw density (a faint haze: about 0.2 opacity through the head box)
    upsampler_channels: int = 64  # CNN channels at the feature resolution (halved per 2x stage)
    occupancy_resolution: int = 32  # cells per axis of each branch's occupancy grid (0: no skipping)
    occupancy_warmup: int = 100  # training steps that evaluate every sample before skipping starts
    occupancy_interval: int = 16  # after warm-up, every n-th training step evaluates all samples
    occupancy_decay: float = 0.97  # per training step decay of a cell's remembered weight
    occupancy_threshold: float = 1e-2  # cells whose remembered weight is below this are skipped
    occupancy_dilation: int = 0  # safety margin (cells) around occupied cells; 1 about doubles the samples

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DBFConfig:
        """Inverse of `to_dict` (JSON lists back to tuples); unknown keys are a `FormatError`."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise FormatError(f"DBF renderer config has unknown fields {unknown}; written by a newer erlnet?")
        d = {"torso_affine": False, "landmark_code": False} | d  # avatars saved before these existed
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def setup(self, expression_dim: int, image_size: int) -> DBFRenderer:
        return DBFRenderer(self, expression_dim, image_size)


_FAR = 1e6  # depth given to samples of rays that miss a box (they carry no density)


@dataclass
class _Branch:
    """Samples of one branch on all R = B * P rays, of which only M are evaluated.

    t, delta (R, n) depth and bin length (delta 0 for rays missing the box); slot (M,) flat index
    into (R * n) of the evaluated samples; sigma (M,); feat (M, C); x_norm (M, 3) box-normalised
    sample position in the field's frame (after the torso's pose-linear motion, before the
    deformation MLP); offset_sq (B,) mean squared deformation / max^2."""

    t: torch.Tensor
    delta: torch.Tensor
    slot: torch.Tensor
    sigma: torch.Tensor
    feat: torch.Tensor
    x_norm: torch.Tensor
    offset_sq: torch.Tensor

    def tau(self) -> torch.Tensor:
        """Optical depths (R, n), zero for skipped samples."""
        flat = self.delta.new_zeros(self.delta.numel())
        flat = flat.index_put((self.slot,), self.sigma * self.delta.reshape(-1)[self.slot])
        return flat.reshape(self.delta.shape)

    def accumulate(self, weights: torch.Tensor) -> torch.Tensor:
        """sum_i w_i f_i per ray: weights (R, n) -> (R, C)."""
        n = self.t.shape[1]
        w = weights.reshape(-1)[self.slot, None]
        out = self.feat.new_zeros(self.t.shape[0], self.feat.shape[1])
        return out.index_add(0, self.slot // n, w * self.feat)


def _dilate(fg: torch.Tensor, r: int) -> torch.Tensor:
    """Square dilation by r pixels (separable max pools): fg (B, 1, H, W) {0, 1} -> (B, H, W) bool."""
    k = 2 * r + 1
    d = F.max_pool2d(F.max_pool2d(fg, (1, k), stride=1, padding=(0, r)), (k, 1), stride=1, padding=(r, 0))
    return d[:, 0] > 0


def _standalone_weights(tau: torch.Tensor) -> torch.Tensor:
    return transmittance(tau) * -torch.expm1(-tau)


class DBFRenderer(Renderer):
    """Dual-branch NeRF renderer; see the module docstring. forward(cond) -> RenderOutput with
    head_alpha / torso_alpha = VISIBLE coverage of each branch at the feature resolution (they sum
    to the fused low-res opacity; what the head / torso masks label) and extras:

    rgb_low (B, 3, h, w) volume-rendered colour over the background (feature channels 0-2);
    head_opacity, torso_opacity (B, 1, h, w) each branch's own accumulated opacity;
    distortion (B,) mean ray distortion (training steps only, else zeros); deform_offset (B,)
    mean squared torso offset / max_offset^2; samples_per_ray (B,) evaluated samples per ray
    (both branches, batch mean); feature (B, C, h, w) the fused feature map (feature mode);
    in pixel mode head_rgb, torso_rgb (B, 3, H, W) and head_rgb_alpha, torso_rgb_alpha
    (B, 1, H, W), the separately decoded branches.

    A forward in training mode with autograd enabled counts as a training step: it advances
    `train_steps` and updates the occupancy grids. Frames of a batch share K and the background
    size; any B works (samples are grouped by frame).
    """

    def __init__(self, config: DBFConfig, expression_dim: int, image_size: int) -> None:
        super().__init__()
        c = config
        if c.fusion not in ("feature", "pixel"):
            raise InputError(f"fusion must be 'feature' or 'pixel', got {c.fusion!r}")
        if c.feature_scale < 1 or c.feature_scale & (c.feature_scale - 1):
            raise InputError(f"feature_scale must be a power of two, got {c.feature_scale}")
        if image_size % c.feature_scale:
            raise InputError(f"image size {image_size} is not a multiple of feature_scale {c.feature_scale}")
        if c.feature_dim < 4:
            raise InputError(f"feature_dim must be at least 4 (3 colour channels + 1), got {c.feature_dim}")
        self.config = c
        self.expression_dim = expression_dim
        self.image_size = image_size
        self.expression = ExpressionEncoder(expression_dim, c.expression_code_dim, c.expression_hidden)
        columns = driving_columns(expression_dim) if c.landmark_code else None
        self.landmarks = None if columns is None else LandmarkCoding(
            columns, c.head_box_min, c.head_box_max, c.landmark_channels, c.landmark_sigma, c.landmark_warp_sigma)
        common = dict(
            levels=c.plane_levels,
            channels=c.plane_channels,
            hidden=c.hidden,
            feature_dim=c.feature_dim,
            density_scale=c.density_scale,
            density_bias=c.density_bias,
        )
        self.head = ConditionedField(
            c.head_box_min, c.head_box_max, c.plane_resolution, cond_dim=c.expression_code_dim,
            layers=c.head_layers, local_dim=c.landmark_channels if self.landmarks is not None else 0, **common
        )
        self.torso = ConditionedField(
            c.torso_box_min, c.torso_box_max, c.torso_plane_resolution, cond_dim=POSE_CODE_DIM,
            layers=c.torso_layers, **common
        )
        self.torso_motion = PoseAffineMotion(POSE_CODE_DIM) if c.torso_affine else None
        self.deform = DeformField(POSE_CODE_DIM, c.deform_hidden, c.deform_freqs, c.deform_max_offset)
        self.upsampler = Upsampler(c.feature_dim, c.feature_scale, c.upsampler_channels)
        g = max(1, c.occupancy_resolution)
        self.head_grid = OccupancyGrid(g, c.occupancy_decay, c.occupancy_threshold, c.occupancy_dilation)
        self.torso_grid = OccupancyGrid(g, c.occupancy_decay, c.occupancy_threshold, c.occupancy_dilation)
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))
        # Torso cells seen off the background by `carve` so far (the torso hull is their union).
        self.register_buffer("torso_seen", torch.zeros(g, g, g, dtype=torch.bool))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by optimiser group: "fields" (tri-planes, field MLPs, encoders,
        deformation) and "cnn" (the upsampler). The CNN wants a ~10x smaller learning rate than
        the fields (Adam 1e-3 vs 1e-2: +0.6 dB test PSNR after 15 minutes on a real clip); on a
        CPU, Adam(fused=True) steps ~5x faster than the default implementation."""
        cnn = list(self.upsampler.parameters())
        ids = {id(p) for p in cnn}
        return {"fields": [p for p in self.parameters() if id(p) not in ids], "cnn": cnn}

    def set_face(self, neutral: torch.Tensor) -> None:
        """The subject's neutral face (N, 3) metres: the landmark code's rest positions."""
        if self.landmarks is not None:
            self.landmarks.set_face(neutral)

    def set_expression_stats(self, expressions: torch.Tensor) -> None:
        """Standardise expression inputs with the training frames' statistics; (T, D). Call
        `set_face` first (the landmark code's displacement scale needs the face)."""
        self.expression.set_stats(torch.as_tensor(expressions))
        if self.landmarks is not None:
            self.landmarks.set_stats(torch.as_tensor(expressions))

    def _mouth_cells(self, x: torch.Tensor) -> torch.Tensor:
        """(M, 3) normalised head samples -> (M,) bool: in the cells around the neutral mouth and jaw
        that occupancy skipping must keep. The mouth's inside (teeth, tongue, the dark cavity) is seen
        only when it opens, in a minority of frames, so its cells' remembered weight decays between
        open frames and skipping would carve the open mouth away."""
        lm = self.landmarks
        if lm is None or self.config.mouth_margin < 0:
            return torch.zeros(len(x), dtype=torch.bool, device=x.device)
        # Recomputed per call (a box test over the G^3 cell centres, negligible beside the march), so
        # it always matches the current face and hull without cached state.
        keep = lm.region(self.head_grid.centres(), self.config.mouth_margin, topology.MOUTH_REGION)
        return (keep & self.head_grid.hull.reshape(-1))[self.head_grid.cell(x)]

    def _skip_empty(self) -> bool:
        """Skip samples in unoccupied cells in this forward? Never during the warm-up, and not on
        every `occupancy_interval`-th training step (those refresh the grids)."""
        c = self.config
        if c.occupancy_resolution <= 0:
            return False
        step = int(self.train_steps)
        if not (self.training and torch.is_grad_enabled()):
            return step >= c.occupancy_warmup
        return step >= c.occupancy_warmup and step % c.occupancy_interval != 0

    @torch.no_grad()
    def carve(self, cond: RenderCondition, masks: torch.Tensor, margin: float = 0.03) -> None:
        """Restrict the occupancy hulls of both branches with the frames' silhouettes. Call it
        before training with the training frames, in batches of any size (only pose, K, image size
        and masks are used): training is faster from the first step and no floater can appear in
        front of the background.

        A cell is "on background" in a frame when its centre projects outside the foreground
        dilated by `margin` x image size plus the largest projected cell radius (so the whole
        cell is clear of it). Head cells (rigid, canonical frame) are carved when on background in
        ANY frame. Torso cells are static in the camera but the deformation lets their content
        move, so they are kept when off background in ANY frame so far (the hull is the union over
        all calls). masks (B, H, W) labels (0 background) at the size of cond.background; frames
        with under 1% foreground are ignored.
        """
        labels = masks[:, None] if masks.dim() == 3 else masks
        H, W = labels.shape[-2:]
        ok = (labels > 0).flatten(1).float().mean(1) >= 0.01
        if not bool(ok.any()):
            return
        fg = (labels[ok] > 0).to(torch.float32)
        K = cond.K.to(fg)

        def project(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """Camera points (N, 3) -> nearest pixel u, v (N,) and whether it is in the image."""
            z = X[:, 2].clamp_min(1e-6)
            u = torch.round(K[0, 0] * X[:, 0] / z + K[0, 1] * X[:, 1] / z + K[0, 2]).long()
            v = torch.round(K[1, 1] * X[:, 1] / z + K[1, 2]).long()
            inside = (X[:, 2] > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
            return u.clamp(0, W - 1), v.clamp(0, H - 1), inside

        def cells(fld: ConditionedField, grid: OccupancyGrid) -> tuple[torch.Tensor, float]:
            """Cell centres (N, 3) in the field frame and the cells' bounding radius (m)."""
            size = (fld.box_max - fld.box_min) / grid.resolution
            return (grid.centres() + 1.0) * 0.5 * (fld.box_max - fld.box_min) + fld.box_min, 0.5 * float(size.norm())

        def reach(radius: float, nearest: float) -> int:
            """Dilation (px) clearing a cell of this radius at the nearest cell depth, + margin."""
            return math.ceil(float(K[0, 0]) * radius / max(nearest - radius, 1e-2) + margin * max(H, W))

        Xh, rh = cells(self.head, self.head_grid)
        poses = list(zip(cond.rotation[ok], cond.translation[ok], strict=True))
        nearest = min(float((Xh @ R[2] + t[2]).min()) for R, t in poses)
        covered = _dilate(fg, reach(rh, nearest))  # (B', H, W) within reach of the foreground
        empty = torch.zeros(len(Xh), dtype=torch.bool, device=Xh.device)
        for (R, t), cov in zip(poses, covered, strict=True):
            u, v, inside = project(Xh @ R.t() + t)
            empty |= inside & ~cov[v, u]
        self.head_grid.carve(empty)

        Xt, rt = cells(self.torso, self.torso_grid)
        Xt = Xt @ cond.ref_rotation.t() + cond.ref_translation
        u, v, inside = project(Xt)
        seen = ~inside | _dilate(fg, reach(rt, float(Xt[:, 2].min()))).any(0)[v, u]
        self.torso_seen |= seen.reshape(self.torso_seen.shape)
        self.torso_grid.carve(~self.torso_seen)

    # -- branches -------------------------------------------------------------------------------

    def _march(
        self,
        fld: ConditionedField,
        grid: OccupancyGrid,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        n: int,
        code: torch.Tensor,
        skip: bool,
        deform_pose: torch.Tensor | None = None,
        landmarks: FrameLandmarks | None = None,
    ) -> _Branch:
        """origins (B, 3), dirs (B, P, 3) in the field's frame -> the branch's samples on B * P rays.

        Only samples inside the box (and, when `skip`, in occupied cells) are evaluated. With
        `deform_pose` (torso), samples are first moved by the pose-linear motion (when configured),
        so occupancy is kept in the field's own frame, then offset by the deformation MLP. With
        `landmarks` (head), the evaluated samples get a Gaussian landmark code and are warped by the
        landmarks before the field looks them up."""
        B, P, _ = dirs.shape
        near, far, hit = intersect_box(origins[:, None], dirs, fld.box_min, fld.box_max)
        ray = hit.reshape(-1).nonzero()[:, 0]  # (Rh,) rays that hit the box; flat b * P + p
        t, delta = stratified_samples(near.reshape(-1)[ray], far.reshape(-1)[ray], n, jitter=self.training)
        t_all = dirs.new_full((B * P, n), _FAR).index_copy(0, ray, t)
        delta_all = dirs.new_zeros(B * P, n).index_copy(0, ray, delta)
        # Sample positions directly in box-normalised coordinates: x = o' + t d' (one fused op).
        scale = 2.0 / (fld.box_max - fld.box_min)
        o_n = (origins - fld.box_min) * scale - 1.0
        x = torch.addcmul(o_n[ray // P, None], t[..., None], (dirs.reshape(-1, 3)[ray] * scale)[:, None])
        x = x.reshape(-1, 3)
        if deform_pose is not None and self.torso_motion is not None and len(ray):
            per_frame = (torch.bincount(ray // P, minlength=B) * n).tolist()
            x = self.torso_motion(x, per_frame, deform_pose)
        if skip or not bool(grid.hull.all()):
            ok = grid.query(x, hull_only=not skip)
            if skip and landmarks is not None:
                ok = ok | self._mouth_cells(x)
            idx = ok.nonzero()[:, 0]  # (M,) into (Rh * n)
            x_norm = x[idx]
            slot = ray[idx // n] * n + idx % n
        else:
            x_norm = x
            slot = (ray[:, None] * n + torch.arange(n, device=ray.device)).reshape(-1)
        counts = torch.bincount(slot // (P * n), minlength=B).tolist()
        local = None
        x_eval = x_norm
        if landmarks is not None and slot.numel():
            # After skipping: the landmark terms cost (samples x landmarks), so only evaluated samples
            # pay. Occupancy therefore lives in the frame's own (unwarped) space, which is why the
            # cells the open mouth and lowered chin reach are kept (`_mouth_cells`).
            local = self.landmarks.code(x_norm, counts, landmarks)
            x_eval = self.landmarks.warp(x_norm, counts, landmarks)
        zero = near.new_zeros(())
        offset_sq = zero.new_zeros(B)
        if deform_pose is not None and slot.numel():
            off = self.deform(x_norm, counts, deform_pose)
            x_eval = x_norm + off * (2.0 / (fld.box_max - fld.box_min))
            sq = off.square().sum(-1) / self.config.deform_max_offset**2
            offset_sq = torch.stack([part.mean() if len(part) else sq.new_zeros(()) for part in sq.split(counts)])
        sigma, feat = fld(x_eval, counts, code) if local is None else fld(x_eval, counts, code, local)
        return _Branch(t_all, delta_all, slot, sigma, feat, x_norm, offset_sq)

    def _distortion(self, br: _Branch, w: torch.Tensor, B: int) -> torch.Tensor:
        """Mean ray distortion per frame (B,), with depths in decimetres (a 1 cm thick surface
        scores ~0.1 A^2, a haze spread through a 30 cm box ~1 A^2)."""
        t = torch.where(br.delta > 0, br.t, torch.zeros_like(br.t)) * 10.0
        return distortion(w, t, br.delta * 10.0).reshape(B, -1).mean(1)

    # -- forward --------------------------------------------------------------------------------

    def forward(self, cond: RenderCondition) -> RenderOutput:
        c = self.config
        bg = cond.background
        B, _, H, W = bg.shape
        s = c.feature_scale
        if H % s or W % s:
            raise InputError(f"output size {H}x{W} is not a multiple of feature_scale {s}")
        h, w = H // s, W // s
        P = h * w
        skip = self._skip_empty()
        dirs = pixel_directions(cond.K.to(bg.dtype), h, w, s)  # (P, 3) camera space

        # Head branch: camera rays into the canonical head frame, X_c = R^T (X_cam - t).
        R, tr = cond.rotation, cond.translation
        head_o = -(tr[:, None, :] @ R)[:, 0]
        code = self.expression(cond.expression, cond.blink)
        lms = self.landmarks.frame_state(cond.expression) if self.landmarks is not None else None
        head = self._march(self.head, self.head_grid, head_o, dirs[None] @ R, c.head_samples, code, skip,
                           landmarks=lms)

        # Torso branch: the reference head frame is static, so its rays are the same for all frames.
        R0, t0 = cond.ref_rotation, cond.ref_translation
        pose = relative_pose_code(R, tr, R0, t0)
        torso_o = (-(t0 @ R0)).expand(B, 3)
        torso_d = (dirs @ R0).expand(B, P, 3)
        torso = self._march(
            self.torso, self.torso_grid, torso_o, torso_d, c.torso_samples, pose, skip, deform_pose=pose
        )

        tau_h, tau_t = head.tau(), torso.tau()
        w_h_alone, w_t_alone = _standalone_weights(tau_h), _standalone_weights(tau_t)
        a_h = -torch.expm1(-tau_h.sum(1))
        a_t = -torch.expm1(-tau_t.sum(1))

        def to_map(x: torch.Tensor) -> torch.Tensor:  # (B P, C) or (B P,) -> (B, C, h, w)
            return x.reshape(B, h, w, -1).permute(0, 3, 1, 2)

        extras: dict[str, torch.Tensor] = {
            "head_opacity": to_map(a_h),
            "torso_opacity": to_map(a_t),
            "deform_offset": torso.offset_sq,
        }
        if self.training and torch.is_grad_enabled():  # a training step (not a no-grad preview)
            extras["distortion"] = self._distortion(head, w_h_alone, B) + self._distortion(torso, w_t_alone, B)
            if c.occupancy_resolution > 0:  # every step: visible cells stay fresh, skipped ones fade
                self.head_grid.update(head.x_norm, w_h_alone.reshape(-1)[head.slot])
                self.torso_grid.update(torso.x_norm, w_t_alone.reshape(-1)[torso.slot])
            self.train_steps += 1
        else:
            extras["distortion"] = bg.new_zeros(B)

        bg_low = F.avg_pool2d(bg, s) if s > 1 else bg
        if c.fusion == "feature":
            w_h, w_t = fusion_weights(tau_h, head.t, tau_t, torso.t)
            feature = to_map(head.accumulate(w_h) + torso.accumulate(w_t))
            alpha_low = to_map(-torch.expm1(-(tau_h.sum(1) + tau_t.sum(1))))
            head_vis, torso_vis = to_map(w_h.sum(1)), to_map(w_t.sum(1))
            rgb_fg, alpha = self.upsampler(feature, alpha_low)
            rgb = over_background(alpha * rgb_fg, alpha, bg)
            extras["rgb_low"] = over_background(feature[:, :3], alpha_low, bg_low)
            extras["feature"] = feature
        else:
            fh, ft = to_map(head.accumulate(w_h_alone)), to_map(torso.accumulate(w_t_alone))
            ah, at = extras["head_opacity"], extras["torso_opacity"]
            rgb_h, al_h = self.upsampler(fh, ah)
            rgb_t, al_t = self.upsampler(ft, at)
            premult, alpha = over(rgb_h, al_h, rgb_t, al_t)
            rgb = over_background(premult, alpha, bg)
            head_vis, torso_vis = ah, (1.0 - ah) * at
            low, a_low = over(fh[:, :3] / ah.clamp_min(1e-4), ah, ft[:, :3] / at.clamp_min(1e-4), at)
            extras["rgb_low"] = over_background(low, a_low, bg_low)
            extras.update(head_rgb=rgb_h, head_rgb_alpha=al_h, torso_rgb=rgb_t, torso_rgb_alpha=al_t)
        extras["samples_per_ray"] = bg.new_full((B,), (head.slot.numel() + torso.slot.numel()) / (B * P))
        return RenderOutput(rgb=rgb, alpha=alpha, head_alpha=head_vis, torso_alpha=torso_vis, extras=extras)

    @torch.no_grad()
    def render(self, cond: RenderCondition, chunk: int = 4) -> RenderOutput:
        """Inference without autograd, `chunk` frames at a time (bounded memory for long clips)."""
        B = cond.expression.shape[0]
        outs = []
        for i in range(0, B, chunk):
            sl = slice(i, i + chunk)
            part = RenderCondition(
                expression=cond.expression[sl],
                blink=cond.blink[sl],
                rotation=cond.rotation[sl],
                translation=cond.translation[sl],
                ref_rotation=cond.ref_rotation,
                ref_translation=cond.ref_translation,
                K=cond.K,
                background=cond.background[sl],
            )
            outs.append(self(part))
        cat = torch.cat
        return RenderOutput(
            rgb=cat([o.rgb for o in outs]),
            alpha=cat([o.alpha for o in outs]),
            head_alpha=cat([o.head_alpha for o in outs]),
            torso_alpha=cat([o.torso_alpha for o in outs]),
            extras={k: cat([o.extras[k] for o in outs]) for k in outs[0].extras},
        )
