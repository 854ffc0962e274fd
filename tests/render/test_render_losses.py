from __future__ import annotations

from pathlib import Path

import pytest
import torch

from erlnet.errors import InputError
from erlnet.render.base import RenderOutput
from erlnet.render.losses import (
    RenderLoss,
    VGG16Features,
    laplacian_pyramid_l1,
    load_vgg16_features,
    perceptual_l1,
    ssim,
)


def _img(seed: int, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(2, 3, size // 4, size // 4, generator=g), size=(size, size), mode="bilinear")
    return base.clamp(0, 1)


def _output(rgb: torch.Tensor, alpha: torch.Tensor | None = None) -> RenderOutput:
    B, _, H, W = rgb.shape
    a = torch.ones(B, 1, H, W) if alpha is None else alpha
    low = torch.nn.functional.avg_pool2d(a, 4)
    return RenderOutput(rgb=rgb, alpha=a, head_alpha=low, torso_alpha=torch.zeros_like(low),
                        extras={"rgb_low": torch.nn.functional.avg_pool2d(rgb, 4)})


def test_ssim_of_identical_images_is_one_and_drops_with_noise() -> None:
    x = _img(0)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    noisy = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    s = ssim(x, noisy)
    assert torch.all(s < 0.9) and torch.all(s > 0)
    assert torch.all(ssim(x, (x + 0.02 * torch.randn_like(x)).clamp(0, 1)) > s)
    assert ssim(x[:, :, :7, :5], x[:, :, :7, :5]).shape == (2,)  # smaller than the window


def test_ssim_matches_a_direct_2d_gaussian_implementation() -> None:
    x, y = _img(10), (_img(11) + 0.05 * torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    g = torch.exp(-0.5 * ((torch.arange(11.0) - 5) / 1.5) ** 2)
    w = (g[:, None] * g[None] / g.sum() ** 2).expand(3, 1, 11, 11)

    def blur(z):
        return torch.nn.functional.conv2d(z, w, groups=3)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    ref = ((2 * mx * my + 1e-4) * (2 * sxy + 9e-4)) / ((mx**2 + my**2 + 1e-4) * (sxx + syy + 9e-4))
    assert torch.allclose(ssim(x, y), ref.flatten(1).mean(1), atol=1e-5)


def test_laplacian_pyramid_sees_detail_more_than_a_constant_shift() -> None:
    x = _img(1)
    detail = x + 0.05 * torch.sign(torch.randn_like(x))
    shift = x + 0.05
    assert laplacian_pyramid_l1(x, x) == 0
    # Same per-pixel L1 error (0.05), but the pyramid weighs the high-frequency error more.
    assert torch.allclose((detail - x).abs().mean(), (shift - x).abs().mean())
    assert laplacian_pyramid_l1(x, detail) > 1.3 * laplacian_pyramid_l1(x, shift)


def _standin_vgg_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in VGG16Features().features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)  # ignored, like torchvision's classifier
    return state


def test_vgg_loader_reads_safetensors_and_torch_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = _standin_vgg_state()
    save_file(state, str(tmp_path / "vgg.safetensors"))
    torch.save(state, tmp_path / "vgg.pth")
    for name in ("vgg.safetensors", "vgg.pth"):
        vgg = load_vgg16_features(tmp_path / name)
        assert torch.equal(vgg.features[0].weight, state["features.0.weight"])
        assert torch.equal(vgg.features[21].bias, state["features.21.bias"])
        assert all(not p.requires_grad for p in vgg.parameters())
    feats = vgg(_img(2))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512]
    x = _img(3)
    assert perceptual_l1(vgg, x, x) == 0 and perceptual_l1(vgg, x, _img(4)) > 0


def test_vgg_loader_rejects_wrong_files_clearly(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_vgg16_features(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable weights file"):
        load_vgg16_features(tmp_path / "junk.pth")
    state = _standin_vgg_state()
    state["features.10.weight"] = torch.zeros(256, 64, 3, 3)  # wrong width
    torch.save(state, tmp_path / "wrong.pth")
    with pytest.raises(InputError, match=r"features\.10\.weight has shape"):
        load_vgg16_features(tmp_path / "wrong.pth")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(InputError, match=r"missing features\.0\.weight"):
        load_vgg16_features(tmp_path / "other.pth")


def test_render_loss_parts_and_perceptual_choice(tmp_path: Path) -> None:
    x = _img(5)
    labels = torch.full((2, 32, 32), 2, dtype=torch.long)
    total, parts = RenderLoss()(_output(x), x, labels)
    assert float(total) < 0.01  # a perfect render (only the tiny entropy term remains)
    assert "pyramid" in parts and "perceptual" not in parts  # no VGG weights: the fallback
    total2, parts2 = RenderLoss()(_output(_img(6)), x, labels)
    assert total2 > 10 * total and parts2["l1"] > 0 and parts2["ssim"] > 0
    torch.save(_standin_vgg_state(), tmp_path / "vgg.pth")
    loss = RenderLoss(vgg_weights=str(tmp_path / "vgg.pth"))
    _, parts3 = loss(_output(_img(6)), x, labels)
    assert "perceptual" in parts3 and "pyramid" not in parts3 and parts3["perceptual"] > 0


def test_mask_terms_and_mouth_weighting() -> None:
    x = _img(7)
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[:, 8:24, 8:24] = 2
    alpha = (labels > 0).float()[:, None]
    _, good = RenderLoss()(_output(x, alpha), x, labels)
    _, bad = RenderLoss()(_output(x, 1 - alpha), x, labels)
    assert good["alpha"] == 0 and bad["alpha"] > 0.4 and bad["head_alpha"] > good["head_alpha"]
    # An error inside the mouth box costs more with mouth weighting than the same error elsewhere.
    err_mouth, err_else = x.clone(), x.clone()
    err_mouth[:, :, 20:24, 12:20] += 0.3
    err_else[:, :, 2:6, 12:20] += 0.3
    box = torch.tensor([[12.0, 20.0, 20.0, 24.0]] * 2)
    loss = RenderLoss(ssim=0, perceptual=0, mouth_weight=4.0)
    l_mouth, _ = loss(_output(err_mouth, alpha), x, labels, mouth=box)
    l_else, _ = loss(_output(err_else, alpha), x, labels, mouth=box)
    assert l_mouth > 1.5 * l_else
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 20:24, 12:20] = 1
    l_mask, _ = loss(_output(err_mouth, alpha), x, labels, mouth=mask)
    assert torch.allclose(l_mask, l_mouth)


def test_shape_errors_are_input_errors() -> None:
    x = _img(8)
    with pytest.raises(InputError, match="target shape"):
        RenderLoss()(_output(x), x[:, :, :16], torch.zeros(2, 32, 32, dtype=torch.long))
    with pytest.raises(InputError, match="masks are"):
        RenderLoss()(_output(x), x, torch.zeros(2, 16, 16, dtype=torch.long))
