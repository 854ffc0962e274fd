"""The upsampler CNN: a fused low-res feature map + opacity -> full-resolution RGB and alpha."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-4


def _logit(x: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.clamp(eps, 1.0 - eps)
    return torch.log(x) - torch.log1p(-x)


class Upsampler(nn.Module):
    """(B, feature_dim + 1, h, w) -> (B, 4, H, W) with H = scale h: straight RGB and alpha in [0, 1].

    log2(scale) stages of conv-conv-pixel-shuffle, channels halving per stage; the last stage
    shuffles straight to the 4 output channels, so no convolution runs at the output resolution.
    The output is a residual in logit space on top of a bilinear upsampling of the NeRF's own colour
    (feature channels 0-2 divided by the opacity) and opacity, with a zero-initialised last conv:
    at the start the image is exactly the upsampled volume rendering, and the CNN only learns the
    detail the low-res rendering lacks (sharp edges, teeth, hair strands).
    """

    def __init__(self, feature_dim: int, scale: int, channels: int = 64, min_channels: int = 16) -> None:
        super().__init__()
        if scale < 1 or scale & (scale - 1):
            raise ValueError(f"feature scale must be a power of two, got {scale}")
        self.scale = scale
        stages = int(math.log2(scale))
        layers: list[nn.Module] = [nn.Conv2d(feature_dim + 1, channels, 3, padding=1), nn.LeakyReLU(0.2)]
        c = channels
        for _ in range(stages - 1):
            c_next = max(min_channels, c // 2)
            layers += [
                nn.Conv2d(c, c, 3, padding=1),
                nn.LeakyReLU(0.2),
                nn.Conv2d(c, 4 * c_next, 3, padding=1),
                nn.PixelShuffle(2),
                nn.LeakyReLU(0.2),
            ]
            c = c_next
        if stages:
            layers += [nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        # The last 2x step is a conv to 4 x 4 channels + pixel shuffle: no conv runs at full resolution.
        self.head = nn.Sequential(nn.Conv2d(c, 4 * 4**min(stages, 1), 3, padding=1), nn.PixelShuffle(2 if stages else 1))
        nn.init.zeros_(self.head[0].weight)
        nn.init.zeros_(self.head[0].bias)

    def forward(self, feature: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feature (B, C, h, w) premultiplied, alpha (B, 1, h, w) -> rgb (B, 3, H, W), alpha (B, 1, H, W)."""
        base_rgb = feature[:, :3] / alpha.clamp_min(_EPS)
        base = torch.cat([base_rgb, alpha], 1)
        if self.scale > 1:
            base = F.interpolate(base, scale_factor=self.scale, mode="bilinear", align_corners=False)
        delta = self.head(self.body(torch.cat([feature, alpha], 1)))
        rgb = torch.sigmoid(_logit(base[:, :3], 1e-3) + delta[:, :3])
        a = torch.sigmoid(_logit(base[:, 3:], _EPS) + delta[:, 3:])
        return rgb, a
