"""Learned metrics of `erlnet evaluate`: LPIPS, FID and SyncNet (LSE-D / LSE-C), in plain torch.

Each network is written here with the parameter names of its reference release, so the reference
weights load unchanged, and only from local files the user gives (erlnet downloads nothing):

    LPIPS    Zhang et al. 2018, VGG variant, v0.1 (the `lpips` package): torchvision's VGG16
             `features` through relu5_3 + the linear heads of `lpips/weights/v0.1/vgg.pth`
             (`lin0.model.1.weight` .. `lin4.model.1.weight`, (1, C, 1, 1)).
    FID      Heusel et al. 2017 with pytorch-fid's port of the TF Inception-v3
             (`pt_inception-2015-12-05-6726825d.pth`): 2048-d pool features, Frechet distance.
    SyncNet  Chung & Zisserman 2016, syncnet_python's `syncnet_v2.model`, scored as in the Wav2Lip
             evaluation (LSE-D, LSE-C and the AV offset over shifts of -15..15 frames).

Files are safetensors or `torch.save`d dicts of tensors (read with weights_only=True: nothing else is
unpickled). A missing or unreadable file, or one whose keys or shapes are not the network's (the
first bad key is named), is a one-line `InputError`; keys the network does not use (classifier
heads) are ignored.

`LearnedMetrics` streams the evaluated frames through whichever networks were given, a few frames
at a time, so memory stays bounded for any number of frames.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from erlnet.errors import InputError
from erlnet.render.losses import VGG16Features, load_vgg16_features, read_weights, vgg16_from_state

NOT_GIVEN = "not computed (no weights)"
NET_BATCH = 4  # images (LPIPS pairs: 2, FID: 4) or SyncNet windows per forward pass: bounds activations


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], source: str | Path, what: str,
               only: Callable[[str], bool] | None = None) -> None:
    """Copy `state` into `module` (its own parameter and buffer names), every key and shape checked.

    BatchNorm's `num_batches_tracked` may be absent (files saved by older torch lack it and
    evaluation does not use it); keys of `state` the module does not have are ignored; `only`
    restricts the check to the module keys it accepts. Raises `InputError` naming the first
    missing or mis-shaped key.
    """
    wanted = module.state_dict()
    got = {}
    for key, ref in wanted.items():
        if only is not None and not only(key):
            continue
        src = state.get(key)
        if src is None:
            if key.endswith("num_batches_tracked"):
                continue
            raise InputError(f"{source}: not {what} weights (missing {key})")
        if tuple(src.shape) != tuple(ref.shape):
            raise InputError(f"{source}: not {what} weights ({key} has shape {tuple(src.shape)}, "
                             f"expected {tuple(ref.shape)})")
        got[key] = src.to(ref.dtype)
    module.load_state_dict(got, strict=False)


# ---------------------------------------------------------------- LPIPS

LPIPS_CHANNELS = (64, 128, 256, 512, 512)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
# `lpips.LPIPS(net="vgg").state_dict()` keys of the backbone: net.slice{k}.{torchvision index}.weight
_LPIPS_SLICE = re.compile(r"net\.slice[1-5]\.(\d+)\.(weight|bias)")


class _LinHead(nn.Module):
    """An LPIPS linear head: a bias-free 1x1 conv C -> 1 at `model.1`, as in the `lpips` package
    (whose `model.0` is a dropout, an identity in evaluation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """LPIPS v0.1, VGG variant: (B, 3, H, W) RGB in [-1, 1] twice -> (B,) distances.

    The inputs are shifted and scaled by the LPIPS ScalingLayer constants (the ImageNet mean and
    std in [-1, 1] units), run through VGG16 to relu1_2 .. relu5_3; each feature map (B, C, h, w)
    is divided by its per-pixel channel norm, the two are subtracted and squared, weighted by the
    linear head (1x1 conv C -> 1), averaged over h, w, and the five taps summed. Identical images
    score exactly 0; the score is symmetric. Images need at least 16 pixels a side (four pools).
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = VGG16Features(blocks=5)
        self.lin0, self.lin1, self.lin2, self.lin3, self.lin4 = (_LinHead(c) for c in LPIPS_CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).reshape(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).reshape(1, 3, 1, 1))
        self.requires_grad_(False)

    @staticmethod
    def _unit(f: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> the same divided by the channel norm at each pixel (eps as `lpips`)."""
        return f / (f.square().sum(1, keepdim=True).sqrt() + 1e-10)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"LPIPS needs two (B, 3, H, W) batches of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        fx = self.net.taps((x - self.shift) / self.scale)
        fy = self.net.taps((y - self.shift) / self.scale)
        heads = (self.lin0, self.lin1, self.lin2, self.lin3, self.lin4)
        total = x.new_zeros(x.shape[0])
        for head, a, b in zip(heads, fx, fy, strict=True):
            total = total + head.model((self._unit(a) - self._unit(b)).square()).mean((1, 2, 3))
        return total


def load_lpips(weights: str | Path, vgg_weights: str | Path | None = None) -> LPIPS:
    """LPIPS from local files: `weights` holds the linear heads (`lin0.model.1.weight` ..
    `lin4.model.1.weight`, the `lpips` package's `weights/v0.1/vgg.pth`), `vgg_weights` the VGG16
    backbone in torchvision's layout (`features.N.weight`, the ImageNet `vgg16` state dict). Without
    `vgg_weights` the backbone is read from `weights` itself, which then is a whole
    `lpips.LPIPS(net="vgg").state_dict()` (`net.slice1.0.weight` ...)."""
    state = read_weights(weights, "LPIPS")
    model = LPIPS()
    _load_into(model, state, weights, "LPIPS (VGG) linear-layer", only=lambda k: k.startswith("lin"))
    if vgg_weights is not None:
        vgg = load_vgg16_features(vgg_weights, blocks=5)
    else:
        backbone = {f"features.{m[1]}.{m[2]}": v for k, v in state.items() if (m := _LPIPS_SLICE.fullmatch(k))}
        if not backbone:
            raise InputError(f"{weights}: holds the LPIPS linear layers only; give the VGG16 backbone too "
                             "(lpips_vgg_weights: torchvision's vgg16 ImageNet state dict)")
        vgg = vgg16_from_state(backbone, weights, blocks=5)
    model.net.features.load_state_dict(vgg.features.state_dict())
    return model.eval()


def to_signed(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32 in [-1, 1] (as `lpips.im2tensor`)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


# ---------------------------------------------------------------- FID: pytorch-fid's Inception-v3

FID_SIZE = 299  # pytorch-fid resizes every image to 299 x 299 (bilinear) before the network
FID_DIM = 2048


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU, parameters `conv.*` and `bn.*`."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int | tuple[int, int],
                 stride: int = 1, padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    # The TF graph's average pool ignores the zero padding (pytorch-fid's patch of torchvision).
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """Mixed_5b/c/d (pytorch-fid's FIDInceptionA): (B, C, 35, 35) -> (B, 224 + pool, 35, 35)."""

    def __init__(self, c_in: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, 1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg3(x))], 1)


class InceptionB(nn.Module):
    """Mixed_6a (torchvision's InceptionB): (B, 288, 35, 35) -> (B, 768, 17, 17)."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    """Mixed_6b..e (pytorch-fid's FIDInceptionC): (B, 768, 17, 17) -> (B, 768, 17, 17)."""

    def __init__(self, c_in: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            d = conv(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class InceptionD(nn.Module):
    """Mixed_7a (torchvision's InceptionD): (B, 768, 17, 17) -> (B, 1280, 8, 8)."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """Mixed_7b / Mixed_7c (pytorch-fid's FIDInceptionE_1 / _2): (B, C, 8, 8) -> (B, 2048, 8, 8).

    The pool branch averages without the padding in Mixed_7b and takes the max in Mixed_7c (the
    TF graph's quirk that pytorch-fid reproduces).
    """

    def __init__(self, c_in: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(c_in, 320, 1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pool = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pool)], 1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's Inception-v3 up to the final average pool, parameter names as in its
    `pt_inception-2015-12-05` state dict (the file's `fc.*` classifier is not built and ignored).

    forward: (B, 3, H, W) RGB in [0, 1] -> (B, 2048) pool features. As pytorch-fid: bilinear resize
    to `size` x `size` (299; align_corners=False, no antialias), then scaled to [-1, 1]. Any
    `size` >= 75 runs (the network is fully convolutional), but only 299 gives comparable FIDs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor, size: int = FID_SIZE) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"FID Inception needs (B, 3, H, W) images, got {tuple(x.shape)}")
        if size < 75:
            raise InputError(f"FID Inception needs inputs of at least 75 px, got size={size}")
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean((2, 3))


def load_fid_inception(path: str | Path) -> FIDInceptionV3:
    """FIDInceptionV3 with pytorch-fid's weights from a local file (`Conv2d_1a_3x3.conv.weight`,
    `Conv2d_1a_3x3.bn.running_mean`, `Mixed_5b.branch1x1.conv.weight`, ...)."""
    model = FIDInceptionV3()
    _load_into(model, read_weights(path, "FID Inception"), path, "FID Inception-v3 (pytorch-fid)")
    return model.eval()


def activation_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> mean (D,) and covariance (D, D) (float64, unbiased, as pytorch-fid)."""
    f = np.asarray(features, np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Frechet distance of two Gaussians, ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), as
    pytorch-fid computes it: scipy's sqrtm of S1 S2; when that is not finite (singular product)
    eps * I is added to both covariances; a complex root whose diagonal has an imaginary part
    above 1e-3 raises ValueError, a smaller one is dropped. mu (D,), sigma (D, D)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} {mu2.shape}, sigma {sigma1.shape} {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():  # scipy warns on singular matrices; the result is checked below
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Frechet distance: the matrix square root has an imaginary part "
                             f"{np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID of two feature sets (N1, D) and (N2, D) (N >= 2 each).

    With fewer samples than dimensions (a few hundred frames vs 2048), both covariances are
    singular and sqrtm of a 2048 x 2048 product is slow and ill-conditioned; there the same value
    is computed exactly in sample space: with centred features A, B, S1 = A'A / (N1 - 1) and
    S2 = B'B / (N2 - 1), the nonzero eigenvalues of S1 S2 are the squared singular values of A B'
    over (N1 - 1)(N2 - 1), so tr (S1 S2)^(1/2) is the sum of those singular values over
    sqrt((N1 - 1)(N2 - 1)). Otherwise `frechet_distance` of `activation_statistics` (pytorch-fid's
    route) is used.
    """
    a, b = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two (N, D) feature arrays, got {a.shape} and {b.shape}")
    n1, n2, d = a.shape[0], b.shape[0], a.shape[1]
    if min(n1, n2) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {n1} and {n2}")
    if max(n1, n2) > d:
        return frechet_distance(*activation_statistics(a), *activation_statistics(b))
    mu1, mu2 = a.mean(0), b.mean(0)
    ac, bc = a - mu1, b - mu2
    c1, c2 = n1 - 1, n2 - 1
    tr_covmean = float(np.linalg.svd(ac @ bc.T, compute_uv=False).sum()) / math.sqrt(c1 * c2)
    diff = mu1 - mu2
    return float(diff @ diff + (ac * ac).sum() / c1 + (bc * bc).sum() / c2 - 2.0 * tr_covmean)


def to_unit(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32 in [0, 1] (as torchvision's ToTensor)."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255.0


# ---------------------------------------------------------------- SyncNet (syncnet_python)

SYNC_FPS = 25
SYNC_SR = 16000
SYNC_WINDOW = 5  # video frames per lip window (0.2 s)
MFCC_PER_FRAME = 4  # 100 MFCC rows/s at 25 frames/s
SYNC_MFCC_ROWS = SYNC_WINDOW * MFCC_PER_FRAME  # 20 MFCC rows per audio window
SYNC_SIZE = 224  # face crops are resized to 224 x 224
SYNC_VSHIFT = 15  # offsets searched, frames (the Wav2Lip evaluation's --vshift)
CROP_SCALE = 0.4  # syncnet_python's --crop_scale
CROP_PAD_VALUE = 110  # gray of the padding around frames (syncnet_python's crop_video)
BOX_SMOOTH = 13  # median filter of the face box over time, frames (syncnet_python's crop_video)


class SyncNet(nn.Module):
    """syncnet_python's `SyncNetModel.S` (num_layers_in_fc_layers=1024), same parameter names.

    forward_aud: (B, 1, 13, 20) MFCC (13 coefficients x 20 rows = 0.2 s) -> (B, 1024).
    forward_lip: (B, 3, 5, 224, 224) five face crops, BGR, 0..255 (not normalised, as the
    reference feeds them) -> (B, 1024). The embeddings are compared by Euclidean distance.
    """

    def __init__(self, dim: int = 1024) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, 64, kernel_size=3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(kernel_size=1, stride=1),
            nn.Conv2d(64, 192, kernel_size=3, padding=1), nn.BatchNorm2d(192), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=(1, 2)),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.BatchNorm2d(384), nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.BatchNorm2d(256), nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.BatchNorm2d(256), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(256, 512, kernel_size=(5, 4)), nn.BatchNorm2d(512), nn.ReLU(),
        )
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim))
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2)), nn.BatchNorm3d(96), nn.ReLU(),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), nn.BatchNorm3d(256),
            nn.ReLU(),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(256, 512, kernel_size=(1, 6, 6)), nn.BatchNorm3d(512), nn.ReLU(),
        )
        self.requires_grad_(False)

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != (1, 13, SYNC_MFCC_ROWS):
            raise InputError(f"SyncNet audio input must be (B, 1, 13, 20) MFCC windows, got {tuple(x.shape)}")
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != (3, SYNC_WINDOW, SYNC_SIZE, SYNC_SIZE):
            raise InputError(f"SyncNet lip input must be (B, 3, 5, 224, 224) crops, got {tuple(x.shape)}")
        return self.netfclip(self.netcnnlip(x).flatten(1))


def load_syncnet(path: str | Path) -> SyncNet:
    """SyncNet with syncnet_python's weights (`syncnet_v2.model`: `netcnnaud.0.weight`, ...,
    `netfclip.3.bias`) from a local file."""
    model = SyncNet()
    _load_into(model, read_weights(path, "SyncNet"), path, "SyncNet (syncnet_python)")
    return model.eval()


def _mel_filterbank(nfilt: int, nfft: int, sr: int) -> np.ndarray:
    """python_speech_features' triangular mel filters (nfilt, nfft // 2 + 1), 0 Hz .. sr / 2, with
    its integer FFT-bin edges."""
    def hz2mel(hz: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    mel = np.linspace(hz2mel(0.0), hz2mel(sr / 2), nfilt + 2)
    edges = np.floor((nfft + 1) * (700.0 * (10 ** (mel / 2595.0) - 1)) / sr)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        lo, mid, hi = edges[j], edges[j + 1], edges[j + 2]
        for i in range(int(lo), int(mid)):
            fb[j, i] = (i - lo) / (mid - lo)
        for i in range(int(mid), int(hi)):
            fb[j, i] = (hi - i) / (hi - mid)
    return fb


def mfcc(wav: np.ndarray, sr: int = SYNC_SR) -> np.ndarray:
    """MFCC (N, 13) as `python_speech_features.mfcc(audio, sr)` with its defaults, the way
    syncnet_python calls it: 25 ms rectangular frames every 10 ms (N = 1 + ceil((S - 400) / 160),
    the last frame zero-padded), pre-emphasis 0.97, 512-point power spectrum, 26 mel filters, log,
    orthonormal DCT-II, lifter 22, and coefficient 0 replaced by the log frame energy.

    wav (S,) float in [-1, 1] is scaled to 16-bit integer units first: the reference reads pcm_s16le
    samples, and the scale only shifts coefficient 0 (by log 32768^2), which the network sees.
    """
    from scipy.fft import dct

    x = np.asarray(wav, np.float64).reshape(-1) * 32768.0
    if x.size == 0:
        raise InputError("MFCC of an empty signal")
    win, step, nfft = int(math.floor(0.025 * sr + 0.5)), int(math.floor(0.01 * sr + 0.5)), 512
    x = np.append(x[0], x[1:] - 0.97 * x[:-1])
    n = 1 if x.size <= win else 1 + int(math.ceil((x.size - win) / step))
    x = np.concatenate([x, np.zeros((n - 1) * step + win - x.size)])
    frames = x[np.arange(win)[None, :] + step * np.arange(n)[:, None]]
    pspec = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    tiny = np.finfo(float).eps
    energy = pspec.sum(1)
    energy = np.where(energy == 0, tiny, energy)
    feat = pspec @ _mel_filterbank(26, nfft, sr).T
    feat = np.where(feat == 0, tiny, feat)
    out = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :13]
    out *= 1.0 + 11.0 * np.sin(np.pi * np.arange(13) / 22.0)
    out[:, 0] = np.log(energy)
    return out


def audio_windows(coeffs: np.ndarray, count: int) -> np.ndarray:
    """MFCC (N, 13) -> `count` SyncNet audio inputs (count, 1, 13, 20) float32; window j covers
    rows 4j .. 4j + 19 (video frames j .. j + 4)."""
    rows = MFCC_PER_FRAME * (count - 1) + SYNC_MFCC_ROWS
    if count < 1 or coeffs.shape[0] < rows:
        raise InputError(f"{count} SyncNet windows need {rows} MFCC rows, got {coeffs.shape[0]}")
    idx = MFCC_PER_FRAME * np.arange(count)[:, None] + np.arange(SYNC_MFCC_ROWS)[None, :]
    return np.ascontiguousarray(coeffs[idx].transpose(0, 2, 1)[:, None]).astype(np.float32)


def face_boxes(landmarks: np.ndarray, smooth: int = BOX_SMOOTH) -> np.ndarray:
    """Face boxes for the SyncNet crop from tracked landmarks (T, 478, 3) pixels -> (T, 3)
    (centre x, centre y, s), s = half the larger side of the box around the 468 mesh points.

    This stands in for syncnet_python's S3FD detections (whose box it resembles: brow to chin,
    cheek to cheek). Frames without landmarks are interpolated from the tracked ones; the boxes are
    median-filtered over `smooth` frames as the reference smooths its detections (edges held,
    where scipy.signal.medfilt would pad with zeros). Raises ValueError when no frame has a face.
    """
    from scipy.ndimage import median_filter

    pts = np.asarray(landmarks, np.float64)[:, :468, :2]
    ok = np.isfinite(pts).all(axis=(1, 2))
    if not ok.any():
        raise ValueError("no tracked face in the evaluated frames")
    lo, hi = np.full((len(pts), 2), np.nan), np.full((len(pts), 2), np.nan)
    lo[ok], hi[ok] = pts[ok].min(axis=1), pts[ok].max(axis=1)
    box = np.concatenate([(lo + hi) / 2, (hi - lo).max(axis=1, keepdims=True) / 2], axis=1)
    t = np.arange(len(box))
    for c in range(3):  # frames without a face: interpolated between tracked frames, held at the ends
        box[:, c] = np.interp(t, t[ok], box[ok, c])
    if smooth > 1 and len(box) > 1:
        box = median_filter(box, size=(smooth, 1), mode="nearest")
    box[:, 2] = np.maximum(box[:, 2], 2.0)  # never an empty crop
    return box


def face_crop(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB frame and a `face_boxes` row -> (224, 224, 3) uint8 BGR crop, the
    geometry of syncnet_python's crop_video with crop_scale 0.4: rows from s above the box centre
    to 1.8 s below it, columns 1.4 s either side (the whole face and the chin, mouth in the lower
    half), the frame padded with gray 110 where the crop leaves it, resized bilinearly."""
    import cv2

    cx, cy, s = (float(v) for v in box)
    cs = CROP_SCALE
    pad = int(s * (1 + 2 * cs))
    img = np.pad(frame[..., ::-1], ((pad, pad), (pad, pad), (0, 0)), constant_values=CROP_PAD_VALUE)
    my, mx = cy + pad, cx + pad
    face = img[int(my - s):int(my + s * (1 + 2 * cs)), int(mx - s * (1 + cs)):int(mx + s * (1 + cs))]
    if face.size == 0:
        raise ValueError(f"empty face crop for box {box.tolist()}")
    return cv2.resize(np.ascontiguousarray(face), (SYNC_SIZE, SYNC_SIZE), interpolation=cv2.INTER_LINEAR)


def lip_windows(crops: np.ndarray) -> torch.Tensor:
    """Consecutive crops (T, 224, 224, 3) uint8 BGR -> the T - 4 SyncNet lip inputs
    (T - 4, 3, 5, 224, 224) float32 0..255 (window j = crops j .. j + 4)."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(3, 0, 1, 2).float()  # (3, T, 224, 224)
    return torch.stack([x[:, j:j + SYNC_WINDOW] for j in range(len(crops) - SYNC_WINDOW + 1)])


@dataclass
class SyncScore:
    """SyncNet scores of one clip: lse_d (min over offsets of the mean distance), lse_c (median
    minus min of that mean), offset (frames; > 0: the lips at frame i match the audio of frame
    i - offset, i.e. the video lags), dists (W, 2 vshift + 1) per-window distances per offset."""

    lse_d: float
    lse_c: float
    offset: int
    dists: np.ndarray


def sync_scores(lip: torch.Tensor | np.ndarray, aud: torch.Tensor | np.ndarray, vshift: int = SYNC_VSHIFT) -> SyncScore:
    """Offset search of syncnet_python's `calc_pdist` + `evaluate` (Wav2Lip's LSE-D / LSE-C).

    lip, aud (W, D) embeddings of the same W windows. Window i's lips are compared with the audio
    embeddings of windows i - vshift .. i + vshift (zero vectors beyond the clip, as the reference
    pads), by `F.pairwise_distance` (eps 1e-6); the distances are averaged over windows per offset:
    LSE-D is the smallest mean, LSE-C the median mean minus LSE-D, offset = vshift - argmin. (So on
    clips of fewer than 2 vshift + 1 windows most offsets see only padding.)
    """
    lip_t, aud_t = torch.as_tensor(lip, dtype=torch.float32), torch.as_tensor(aud, dtype=torch.float32)
    if lip_t.dim() != 2 or lip_t.shape != aud_t.shape or len(lip_t) == 0:
        raise ValueError(f"expected two (W, D) embeddings of one shape, got {tuple(lip_t.shape)} and {tuple(aud_t.shape)}")
    w, span = len(lip_t), 2 * vshift + 1
    padded = F.pad(aud_t, (0, 0, vshift, vshift))
    dists = torch.empty(w, span)
    for i in range(w):  # one window at a time: (span, D), memory independent of the clip length
        dists[i] = F.pairwise_distance(lip_t[i].expand(span, -1), padded[i:i + span])
    mean = dists.mean(0)
    minval, minidx = torch.min(mean, 0)
    return SyncScore(lse_d=float(minval), lse_c=float(torch.median(mean) - minval), offset=int(vshift - int(minidx)),
                     dists=dists.numpy())


# ---------------------------------------------------------------- streaming over an evaluation


class LearnedMetrics:
    """LPIPS, FID and SyncNet scores of an evaluation, fed a few frames at a time.

    Use: `m = LearnedMetrics.load(...)` (fails early on bad files), `m.begin(...)` with the clip,
    `m.add(start, generated, truth)` for each batch of frames in order, then `m.finish()`. Only the
    networks whose weights were given run; the other scores read "not computed (no weights)".
    Memory: per frame, 2 x 2048 FID features (float32) and 2 x 1024 SyncNet embeddings; images
    only for the batch at hand and the last four SyncNet crops.
    """

    def __init__(self, lpips: LPIPS | None = None, fid: FIDInceptionV3 | None = None, syncnet: SyncNet | None = None,
                 device: str | torch.device = "cpu", fid_size: int | None = None) -> None:
        self.device = torch.device(device)
        self.lpips = lpips.to(self.device) if lpips is not None else None
        self.fid = fid.to(self.device) if fid is not None else None
        self.syncnet = syncnet.to(self.device) if syncnet is not None else None
        self.fid_size = fid_size or FID_SIZE
        self.begin(0)

    @classmethod
    def load(cls, lpips_weights: Path | None = None, lpips_vgg_weights: Path | None = None,
             fid_weights: Path | None = None, syncnet_weights: Path | None = None,
             device: str | torch.device = "cpu") -> LearnedMetrics:
        """The networks of the given files (any may be None); `InputError` for a bad file."""
        if lpips_vgg_weights is not None and lpips_weights is None:
            raise InputError(f"{lpips_vgg_weights}: a VGG16 backbone for LPIPS needs the LPIPS linear layers too "
                             "(lpips_weights: the `lpips` package's weights/v0.1/vgg.pth)")
        return cls(lpips=load_lpips(lpips_weights, lpips_vgg_weights) if lpips_weights is not None else None,
                   fid=load_fid_inception(fid_weights) if fid_weights is not None else None,
                   syncnet=load_syncnet(syncnet_weights) if syncnet_weights is not None else None, device=device)

    def begin(self, n: int, fps: float = SYNC_FPS, wav: np.ndarray | None = None, landmarks: np.ndarray | None = None,
              no_audio: str = "no audio") -> None:
        """Start a clip of `n` frames: its audio `wav` (S,) 16 kHz from the first frame (None:
        SyncNet is not computed, `no_audio` says why) and tracked landmarks (n, 478, 3) in pixels
        of the evaluated frames (for the SyncNet face crop)."""
        self.n = n
        self.lpips_values = np.full(n, np.nan)
        self.fid_feats: dict[str, list[np.ndarray]] = {"generated": [], "truth": []}
        self.sync_reason: str | None = None
        self.windows = 0
        self.boxes: np.ndarray | None = None
        self.wav = wav
        self.crops: dict[str, list[np.ndarray]] = {"generated": [], "truth": []}
        self.crop_start = 0  # frame index of crops[...][0]
        self.lip_emb: dict[str, list[torch.Tensor]] = {"generated": [], "truth": []}
        self.sync: dict[str, SyncScore] = {}  # the full SyncNet results after `finish`
        self.notes: list[str] = []  # caveats for the report, after `finish`
        if self.syncnet is None or n == 0:
            return
        if wav is None:
            self.sync_reason = f"not computed ({no_audio})"
        elif abs(fps - SYNC_FPS) > 1e-6:
            self.sync_reason = f"not computed (SyncNet needs {SYNC_FPS} frames/s, the clip has {fps:g})"
        else:
            # As the reference: min(frames, whole 40 ms audio chunks), minus 5 (its last window is dropped).
            self.windows = min(n, len(wav) // (SYNC_SR // SYNC_FPS)) - SYNC_WINDOW
            if self.windows < 1:
                self.sync_reason = f"not computed (SyncNet needs at least {SYNC_WINDOW + 1} frames with audio)"
            elif landmarks is None:
                self.sync_reason = "not computed (no landmarks for the face crop)"
            else:
                try:
                    self.boxes = face_boxes(landmarks)
                except ValueError as exc:
                    self.sync_reason = f"not computed ({exc})"
        if self.sync_reason is not None:
            self.windows = 0

    def add(self, start: int, generated: np.ndarray, truth: np.ndarray) -> None:
        """Frames start .. start + B - 1 of the clip: generated and truth (B, H, W, 3) uint8 RGB."""
        b = len(generated)
        if truth.shape != generated.shape or generated.ndim != 4:
            raise InputError(f"expected two (B, H, W, 3) batches of one shape, got {generated.shape} and {truth.shape}")
        with torch.inference_mode():
            if self.lpips is not None:
                for i in range(0, b, max(1, NET_BATCH // 2)):
                    j = min(b, i + max(1, NET_BATCH // 2))
                    d = self.lpips(to_signed(generated[i:j], self.device), to_signed(truth[i:j], self.device))
                    self.lpips_values[start + i:start + j] = d.cpu().numpy()
            if self.fid is not None:
                for i in range(0, b, NET_BATCH):
                    for key, imgs in (("generated", generated), ("truth", truth)):
                        f = self.fid(to_unit(imgs[i:i + NET_BATCH], self.device), size=self.fid_size)
                        self.fid_feats[key].append(f.cpu().numpy().astype(np.float32))
            if self.windows:
                assert self.boxes is not None
                for k in range(b):
                    frame = start + k
                    if frame < self.windows + SYNC_WINDOW - 1:  # later frames are in no window
                        self.crops["generated"].append(face_crop(generated[k], self.boxes[frame]))
                        self.crops["truth"].append(face_crop(truth[k], self.boxes[frame]))
                self._lip_windows(final=False)

    def _lip_windows(self, final: bool) -> None:
        """Embed the complete lip windows not embedded yet (NET_BATCH at a time, all at the end),
        then drop the crops no later window needs."""
        assert self.syncnet is not None
        done = sum(len(e) for e in self.lip_emb["generated"])
        complete = min(self.windows, self.crop_start + len(self.crops["generated"]) - SYNC_WINDOW + 1)
        while complete - done >= NET_BATCH or (final and complete > done):
            stop = min(complete, done + NET_BATCH)
            for key in ("generated", "truth"):
                a = done - self.crop_start
                crops = np.stack(self.crops[key][a:a + stop - done + SYNC_WINDOW - 1])
                emb = self.syncnet.forward_lip(lip_windows(crops).to(self.device))
                self.lip_emb[key].append(emb.cpu())
            done = stop
        drop = done - self.crop_start
        if drop > 0:
            for key in ("generated", "truth"):
                del self.crops[key][:drop]
            self.crop_start = done

    def finish(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The scores (numbers, or "not computed (...)" reasons) and per-frame series."""
        metrics: dict[str, Any] = {}
        series: dict[str, np.ndarray] = {}
        if self.lpips is None:
            metrics["lpips"] = NOT_GIVEN
        elif np.isfinite(self.lpips_values).any():
            metrics["lpips"] = float(np.nanmean(self.lpips_values))
            series["lpips"] = self.lpips_values.copy()
        else:
            metrics["lpips"] = "not computed (no frames)"
        metrics["fid"] = self._fid()
        metrics.update(self._sync())
        return metrics, series

    def _fid(self) -> float | str:
        if self.fid is None:
            return NOT_GIVEN
        gen, tru = self.fid_feats["generated"], self.fid_feats["truth"]
        if sum(len(f) for f in gen) < 2:
            return "not computed (FID needs at least 2 frames)"
        try:
            return fid_from_features(np.concatenate(gen), np.concatenate(tru))
        except ValueError as exc:
            return f"not computed ({exc})"

    def _sync(self) -> dict[str, Any]:
        keys = ("lse_d", "lse_c", "av_offset", "lse_d_truth", "lse_c_truth", "av_offset_truth")
        if self.syncnet is None:
            return dict.fromkeys(keys, NOT_GIVEN)
        if self.sync_reason is not None or not self.windows:
            return dict.fromkeys(keys, self.sync_reason or "not computed (no frames)")
        self._lip_windows(final=True)
        assert self.wav is not None
        with torch.inference_mode():
            inputs = torch.from_numpy(audio_windows(mfcc(self.wav), self.windows))
            aud = torch.cat([self.syncnet.forward_aud(inputs[i:i + NET_BATCH].to(self.device)).cpu()
                             for i in range(0, len(inputs), NET_BATCH)])
        out: dict[str, Any] = {}
        for key, suffix in (("generated", ""), ("truth", "_truth")):
            s = self.sync[key] = sync_scores(torch.cat(self.lip_emb[key]), aud)
            out[f"lse_d{suffix}"], out[f"lse_c{suffix}"], out[f"av_offset{suffix}"] = s.lse_d, s.lse_c, s.offset
        out["sync_windows"] = self.windows
        if self.windows < 2 * SYNC_VSHIFT + 1:
            self.notes.append(f"SyncNet scored {self.windows} windows only: offsets beyond {self.windows - 1} frames "
                              "compare the lips with zero padding (as syncnet_python does), so LSE-C and the offset "
                              "say little on a clip this short")
        return out
