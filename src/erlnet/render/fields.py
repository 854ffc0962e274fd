"""Neural fields of DBF-NeRF: a conditioned tri-plane field (used by both branches), the torso's
pose-linear motion and its deformation field."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from erlnet.render.encodings import TriPlanes, frequency_encoding

N_COLOUR = 3  # the first feature channels are a sigmoid colour (low-res preview / supervision)


def film_linear(
    x: torch.Tensor, counts: list[int], layer: nn.Linear, gamma: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """FiLM-modulated linear layer, (W x + b) (1 + gamma_f) + beta_f, for samples grouped by frame.

    x (N, I) with the samples of frame f in the f-th block of `counts` (sum = N); gamma, beta
    (B, O). The modulation is folded into one per-frame weight matrix (one addmm per frame, no
    per-sample gather of gamma/beta: this is memory-bound code on a CPU). -> (N, O)
    """
    scale = 1.0 + gamma
    w = layer.weight.t()[None] * scale[:, None, :]  # (B, I, O)
    b = layer.bias * scale + beta  # (B, O)
    if len(counts) == 1:
        return torch.addmm(b[0], x, w[0])
    return torch.cat([torch.addmm(b[f], xf, w[f]) for f, xf in enumerate(x.split(counts))])


class ConditionedField(nn.Module):
    """Tri-planes in a box + a tiny MLP (`layers` hidden layers), FiLM-conditioned on a per-frame
    code.

    The code enters as a per-frame scale and shift of the first hidden layer: one small matrix
    product per frame instead of a per-sample concatenation, and it lets the code gate spatial
    features multiplicatively (the mouth region can change with the expression while the hair
    does not). Density is sigma = density_scale * softplus(raw) in 1/m.
    """

    def __init__(
        self,
        box_min: tuple[float, float, float],
        box_max: tuple[float, float, float],
        resolution: int,
        levels: int,
        channels: int,
        hidden: int,
        feature_dim: int,
        cond_dim: int,
        density_scale: float,
        density_bias: float,
        layers: int = 1,
        local_dim: int = 0,
    ) -> None:
        super().__init__()
        self.register_buffer("box_min", torch.tensor(box_min, dtype=torch.float32))
        self.register_buffer("box_max", torch.tensor(box_max, dtype=torch.float32))
        self.planes = TriPlanes(resolution, levels, channels)
        self.inp = nn.Linear(self.planes.out_dim, hidden)
        self.film = nn.Linear(cond_dim, 2 * hidden)
        nn.init.zeros_(self.film.weight)  # start unconditioned: identity scale, no shift
        nn.init.zeros_(self.film.bias)
        # A per-sample code (the head's Gaussian landmark code) enters the first hidden layer
        # additively; zero at the start, so a new field is the unconditioned one.
        self.local = nn.Linear(local_dim, hidden, bias=False) if local_dim else None
        if self.local is not None:
            nn.init.zeros_(self.local.weight)
        self.mid = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(layers - 1)])
        self.out = nn.Linear(hidden, 1 + feature_dim)
        with torch.no_grad():
            self.out.bias[0] = density_bias
        self.density_scale = density_scale
        self.feature_dim = feature_dim

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Box-frame points (N, 3) metres -> [-1, 1]^3."""
        return (x - self.box_min) / (self.box_max - self.box_min) * 2.0 - 1.0

    def forward(self, x_norm: torch.Tensor, counts: list[int], code: torch.Tensor,
                local: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x_norm (N, 3) box-normalised points grouped by frame (`counts` per frame), code
        (B, cond_dim), local (N, local_dim) per-sample codes (when the field has `local_dim`) ->
        sigma (N,) 1/m, features (N, feature_dim) (channels 0-2: colour in [0, 1])."""
        gamma, beta = self.film(code).chunk(2, -1)
        pre = film_linear(self.planes(x_norm), counts, self.inp, gamma, beta)
        if self.local is not None:
            if local is None:
                raise ValueError("this field takes a per-sample local code")
            pre = pre + self.local(local)
        h = F.relu(pre)
        for layer in self.mid:
            h = F.relu(layer(h))
        o = self.out(h)
        sigma = self.density_scale * F.softplus(o[:, 0])
        feat = torch.cat([torch.sigmoid(o[:, 1 : 1 + N_COLOUR]), o[:, 1 + N_COLOUR :]], -1)
        return sigma, feat


class DeformField(nn.Module):
    """Offsets torso-field samples so the neck follows the head: (position, pose code) -> offset.

    Position is box-normalised and frequency-encoded (2 octaves: the offset field is smooth); the
    pose code (relative to the reference pose) FiLM-modulates the hidden layer. The output is
    bounded, max_offset * tanh, and starts at exactly zero.
    """

    def __init__(self, pose_dim: int, hidden: int, n_freqs: int, max_offset: float) -> None:
        super().__init__()
        self.n_freqs = n_freqs
        self.inp = nn.Linear(3 + 6 * n_freqs, hidden)
        self.film = nn.Linear(pose_dim, 2 * hidden)
        self.mid = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 3)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.max_offset = max_offset

    def forward(self, x_norm: torch.Tensor, counts: list[int], pose: torch.Tensor) -> torch.Tensor:
        """x_norm (N, 3) in [-1, 1] grouped by frame (`counts`), pose (B, pose_dim) -> offset (N, 3) m."""
        gamma, beta = self.film(pose).chunk(2, -1)
        h = F.relu(film_linear(frequency_encoding(x_norm, self.n_freqs), counts, self.inp, gamma, beta))
        h = F.relu(self.mid(h))
        return self.max_offset * torch.tanh(self.out(h))


class PoseAffineMotion(nn.Module):
    """The torso's global motion: an affine map of the sample positions whose coefficients are LINEAR
    in the pose code, x -> x + A(p) x + b(p), with A(p) = sum_k p_k A_k and b(p) = sum_k p_k b_k.

    Why linear: the body follows the head only in part (a lean moves the shoulders less than the
    head) but smoothly, and a model linear in the pose keeps predicting that when a held-out frame
    poses the head beyond the training range, where a bounded MLP saturates and leaves the
    collar where it was. It is zero at the reference pose (p = 0) and starts as the identity.
    """

    def __init__(self, pose_dim: int) -> None:
        super().__init__()
        self.coef = nn.Linear(pose_dim, 12, bias=False)  # -> (A: 3 x 3, b: 3) per frame
        nn.init.zeros_(self.coef.weight)

    def forward(self, x_norm: torch.Tensor, counts: list[int], pose: torch.Tensor) -> torch.Tensor:
        """x_norm (N, 3) box-normalised points grouped by frame (`counts`), pose (B, pose_dim) ->
        moved points (N, 3), same units."""
        ab = self.coef(pose).reshape(-1, 3, 4)
        eye = torch.eye(3, device=x_norm.device, dtype=x_norm.dtype)
        m = (ab[:, :, :3] + eye).transpose(1, 2)  # (B, 3, 3): row-vector form, x @ (I + A)^T
        if len(counts) == 1:
            return torch.addmm(ab[0, :, 3], x_norm, m[0])
        return torch.cat([torch.addmm(ab[f, :, 3], xf, m[f]) for f, xf in enumerate(x_norm.split(counts))])
