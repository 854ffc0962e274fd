"""Training losses of the renderer: photometric (L1/L2, SSIM, perceptual), mask supervision of
the fused and per-branch opacities, and regularisers.

Perceptual term: VGG16 features (relu1_2, relu2_2, relu3_3, relu4_3) ONLY when `vgg_weights` points
to a local state dict (torchvision's `vgg16` layout, safetensors or a `torch.save` file; nothing is
downloaded). Without it the same weight applies to a Laplacian-pyramid L1 (5 band-pass levels +
the low-pass residual), which, like a perceptual loss, weighs edges and texture at every scale
rather than only per-pixel colour, at a negligible cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from erlnet.errors import InputError
from erlnet.render.base import RenderOutput

# ----------------------------------------------------------------------------------------------
# SSIM


def _gaussian_1d(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2.0
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004, gaussian window, 'valid' filtering) per image.

    x, y (B, C, H, W) in [0, data_range] -> (B,). The window shrinks (odd) for images smaller than it.
    """
    c = x.shape[1]
    size = min(window, x.shape[-2], x.shape[-1])
    size -= 1 - size % 2
    g = _gaussian_1d(size, sigma, x.device, x.dtype)
    # The five local moments in one depthwise separable blur; channels-last is several times
    # faster for depthwise convolutions on a CPU.
    z = torch.cat([x, y, x * x, y * y, x * y], 1).contiguous(memory_format=torch.channels_last)
    gx = g.reshape(1, 1, 1, size).repeat(5 * c, 1, 1, 1)
    gy = g.reshape(1, 1, size, 1).repeat(5 * c, 1, 1, 1)
    mx, my, exx, eyy, exy = F.conv2d(F.conv2d(z, gx, groups=5 * c), gy, groups=5 * c).split(c, 1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    sxx, syy, sxy = exx - mx * mx, eyy - my * my, exy - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


# ----------------------------------------------------------------------------------------------
# Laplacian pyramid


def laplacian_pyramid_l1(x: torch.Tensor, y: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """Sum over levels of the mean L1 between band-pass images (image minus its blurred 2x
    down-up version), plus the L1 of the final low-pass images. (B, C, H, W) -> scalar."""
    total = x.new_zeros(())
    for _ in range(levels):
        if min(x.shape[-2:]) < 2:
            break
        xd, yd = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        xu = F.interpolate(xd, size=x.shape[-2:], mode="bilinear", align_corners=False)
        yu = F.interpolate(yd, size=y.shape[-2:], mode="bilinear", align_corners=False)
        total = total + ((x - xu) - (y - yu)).abs().mean()
        x, y = xd, yd
    return total + (x - y).abs().mean()


# ----------------------------------------------------------------------------------------------
# VGG16 perceptual features

# torchvision's vgg16().features through relu5_3 (indices 0-29): conv widths, "M" = max-pool.
_VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_VGG_TAPS = (3, 8, 15, 22, 29)  # indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in `features`


class VGG16Features(nn.Module):
    """The convolutional layers of VGG16 with torchvision's parameter names (`features.N.weight`),
    frozen: through relu4_3 (`blocks=4`, the perceptual loss) or relu5_3 (`blocks=5`, LPIPS).

    forward: (B, 3, H, W) RGB in [0, 1] -> list of `blocks` feature maps (B, C_k, H / 2^k, W / 2^k),
    C = 64, 128, 256, 512[, 512], after ImageNet mean/std normalisation. `taps` runs the same layers
    on an input that is already normalised (LPIPS scales its inputs its own way).
    """

    def __init__(self, blocks: int = 4) -> None:
        super().__init__()
        if blocks not in (4, 5):
            raise ValueError(f"blocks must be 4 (relu4_3) or 5 (relu5_3), got {blocks}")
        self.blocks = blocks
        layers: list[nn.Module] = []
        c_in = 3
        for v in _VGG16_CFG[: 13 if blocks == 4 else None]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                c_in = int(v)
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1))
        self.requires_grad_(False)

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) already normalised -> the `blocks` relu feature maps."""
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _VGG_TAPS:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.taps((x - self.mean) / self.std)


def read_weights(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a local weights file: safetensors (by suffix or by its header) or a
    `torch.save`d dict read with weights_only=True (nothing is unpickled beyond tensors and
    containers; a `{"state_dict": {...}}` wrapper is unwrapped). `what` names the network in the
    one-line `InputError` for a missing, unreadable or non-state-dict file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} weights file not found")
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        # safetensors: an 8-byte little-endian header length, then the JSON header
        if path.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{"):
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any parse failure is a bad user file
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise InputError(f"{path}: not a readable weights file for {what} ({type(exc).__name__}: {reason})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise InputError(f"{path}: not a state dict of tensors ({what} weights)")
    return state


def vgg16_from_state(state: dict[str, torch.Tensor], source: str | Path, blocks: int = 4) -> VGG16Features:
    """VGG16Features (through relu4_3 or relu5_3) with weights from a state dict keyed
    `features.N.weight/bias` as in torchvision (a `features.`-less layout is accepted; other keys
    such as the classifier are ignored). `source` names the file in the `InputError`."""
    model = VGG16Features(blocks)
    wanted = model.features.state_dict()
    got = {}
    for key, ref in wanted.items():
        src = state.get(f"features.{key}", state.get(key))
        if src is None:
            raise InputError(f"{source}: not VGG16 weights (missing features.{key})")
        if tuple(src.shape) != tuple(ref.shape):
            raise InputError(
                f"{source}: not VGG16 weights (features.{key} has shape {tuple(src.shape)}, expected {tuple(ref.shape)})"
            )
        got[key] = src.to(ref.dtype)
    model.features.load_state_dict(got)
    return model.eval()


def load_vgg16_features(path: str | Path, blocks: int = 4) -> VGG16Features:
    """VGG16Features with weights from a local file: a safetensors file or a `torch.save`d state
    dict (read with weights_only=True), keys `features.N.weight/bias` as in torchvision (a
    `features.`-less layout is accepted; classifier weights are ignored). `blocks=5` also needs
    conv5_1..conv5_3 (`features.24` .. `features.28`). Raises `InputError` with a one-line reason
    for a missing, unreadable or non-VGG16 file."""
    return vgg16_from_state(read_weights(path, "VGG16"), path, blocks)


def perceptual_l1(vgg: VGG16Features, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over the VGG taps of the mean L1 between features. (B, 3, H, W) in [0, 1] -> scalar."""
    fx, fy = vgg(x), vgg(y.detach())
    return torch.stack([(a - b).abs().mean() for a, b in zip(fx, fy, strict=True)]).mean()


# ----------------------------------------------------------------------------------------------
# The loss


def _box_masks(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Pixel boxes (B, 4) x0, y0, x1, y1 (x1, y1 exclusive) -> (B, 1, h, w) float masks."""
    ys = torch.arange(h, device=boxes.device, dtype=boxes.dtype).reshape(1, h, 1) + 0.5
    xs = torch.arange(w, device=boxes.device, dtype=boxes.dtype).reshape(1, 1, w) + 0.5
    b = boxes.reshape(-1, 4, 1, 1)
    inside = (xs >= b[:, 0]) & (xs < b[:, 2]) & (ys >= b[:, 1]) & (ys < b[:, 3])
    return inside[:, None].to(torch.float32)


def _labels(masks: torch.Tensor) -> torch.Tensor:
    """(B, H, W) or (B, 1, H, W) integer labels -> (B, 1, H, W) long."""
    if masks.dim() == 3:
        masks = masks[:, None]
    if masks.dim() != 4 or masks.shape[1] != 1:
        raise InputError(f"masks must be (B, H, W) labels 0/1/2, got shape {tuple(masks.shape)}")
    return masks.long()


def _weighted_mean(err: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return err.mean()
    return (err * weight).mean() / weight.mean()


@dataclass
class RenderLoss:
    """Weights of the renderer's training loss (0 disables a term). Call it:
    `total, parts = loss(out, target_rgb, masks, mouth=None)`."""

    l1: float = 1.0  # photometric L1 of the output image
    l2: float = 0.0  # photometric L2 of the output image
    ssim: float = 0.2  # 1 - SSIM (gaussian window 11, sigma 1.5)
    perceptual: float = 0.1  # VGG16 feature L1 with `vgg_weights`, else Laplacian-pyramid L1
    vgg_weights: str | None = None  # local VGG16 state dict (safetensors or torch.save); nothing is downloaded
    low_res: float = 0.5  # L1 of the volume-rendered low-res colour vs the downsampled target
    alpha: float = 0.5  # L1 of the output alpha vs the foreground (head + torso) mask
    head_alpha: float = 0.5  # L1 of the visible head coverage vs the head mask, feature resolution
    torso_alpha: float = 0.2  # L1 of the visible torso coverage vs the torso mask, feature resolution
    entropy: float = 0.002  # binary entropy of the output alpha (pushes it to 0 or 1)
    distortion: float = 0.01  # mip-NeRF 360 distortion of the rays (compact surfaces, no haze)
    deform: float = 0.01  # mean squared torso deformation (relative to its maximum)
    mouth_weight: float = 3.0  # weight of mouth-region pixels in the photometric L1/L2 (1 = none)

    def _vgg_on(self, device: torch.device) -> VGG16Features:
        """The VGG network, loaded on first use and cached on the instance (not a config field)."""
        vgg: VGG16Features | None = getattr(self, "_vgg_cache", None)
        if vgg is None:
            assert self.vgg_weights is not None
            vgg = load_vgg16_features(self.vgg_weights)
        if vgg.mean.device != device:
            vgg = vgg.to(device)
        self._vgg_cache = vgg
        return vgg

    def __call__(
        self,
        out: RenderOutput,
        target_rgb: torch.Tensor,
        masks: torch.Tensor,
        mouth: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """out: the renderer's output; target_rgb (B, 3, H, W) in [0, 1]; masks (B, H, W) labels
        (0 background, 1 torso + neck, 2 head); mouth: optional (B, 4) pixel boxes x0, y0, x1, y1
        or (B, 1, H, W) soft mask of the mouth region. -> (total, {term: detached value})."""
        pred = out.rgb
        B, _, H, W = pred.shape
        if target_rgb.shape != pred.shape:
            raise InputError(f"target shape {tuple(target_rgb.shape)} != rendered {tuple(pred.shape)}")
        labels = _labels(masks)
        if labels.shape[-2:] != (H, W):
            raise InputError(f"masks are {tuple(labels.shape[-2:])}, images {(H, W)}")
        weight = None
        if mouth is not None and self.mouth_weight != 1.0:
            m = _box_masks(mouth.to(pred), H, W) if mouth.dim() == 2 else mouth.to(pred)
            weight = 1.0 + (self.mouth_weight - 1.0) * m

        parts: dict[str, torch.Tensor] = {}
        if self.l1:
            parts["l1"] = self.l1 * _weighted_mean((pred - target_rgb).abs(), weight)
        if self.l2:
            parts["l2"] = self.l2 * _weighted_mean((pred - target_rgb).square(), weight)
        if self.ssim:
            parts["ssim"] = self.ssim * (1.0 - ssim(pred, target_rgb)).mean()
        if self.perceptual:
            if self.vgg_weights:
                parts["perceptual"] = self.perceptual * perceptual_l1(self._vgg_on(pred.device), pred, target_rgb)
            else:
                parts["pyramid"] = self.perceptual * laplacian_pyramid_l1(pred, target_rgb)
        fg = (labels > 0).to(pred.dtype)
        if self.alpha:
            parts["alpha"] = self.alpha * (out.alpha - fg).abs().mean()
        h, w = out.head_alpha.shape[-2:]
        scale = H // h
        if self.low_res and "rgb_low" in out.extras:
            parts["low_res"] = self.low_res * (out.extras["rgb_low"] - F.avg_pool2d(target_rgb, scale)).abs().mean()
        if self.head_alpha:
            head = F.avg_pool2d((labels == 2).to(pred.dtype), scale)
            parts["head_alpha"] = self.head_alpha * (out.head_alpha - head).abs().mean()
        if self.torso_alpha:
            torso = F.avg_pool2d((labels == 1).to(pred.dtype), scale)
            parts["torso_alpha"] = self.torso_alpha * (out.torso_alpha - torso).abs().mean()
        if self.entropy:
            a = out.alpha.clamp(1e-5, 1.0 - 1e-5)
            parts["entropy"] = self.entropy * -(a * a.log() + (1 - a) * (1 - a).log()).mean()
        if self.distortion and "distortion" in out.extras:
            parts["distortion"] = self.distortion * out.extras["distortion"].mean()
        if self.deform and "deform_offset" in out.extras:
            parts["deform"] = self.deform * out.extras["deform_offset"].mean()
        total = torch.stack(list(parts.values())).sum() if parts else pred.new_zeros(())
        return total, {k: v.detach() for k, v in parts.items()}
