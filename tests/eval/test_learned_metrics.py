"""LPIPS, FID and SyncNet (erlnet.eval.learned) with random-weight stand-ins saved in the reference
file layouts: the parameter names and shapes of the reference releases, the loaders on real files
(torch.save and safetensors), properties of each score, the MFCC against python_speech_features'
numbers, the AV-offset search on planted shifts, every bad-file error, and `erlnet evaluate`
returning the numbers when weights are given."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from erlnet.errors import InputError
from erlnet.eval import learned as L
from erlnet.eval.avatar import EvaluateConfig, evaluate_subject, format_table, held_out_frames
from erlnet.eval.report import write_report
from erlnet.io.subject import Subject
from erlnet.render.losses import VGG16Features


@pytest.fixture(autouse=True)
def _single_thread(one_thread) -> None:
    """One torch thread (tests/conftest.py)."""


def _randomised(module: nn.Module, seed: int, nonneg_heads: bool = False) -> dict[str, torch.Tensor]:
    """A random state dict of `module` that keeps activations O(1) through deep stacks: He-normal
    conv/linear weights, BatchNorm with random affine and running statistics; no
    `num_batches_tracked` (the reference files were saved by torch versions without it).
    `nonneg_heads`: LPIPS heads >= 0, as the trained ones are."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in module.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                if nonneg_heads and name.startswith("lin"):
                    m.weight.abs_()
                if m.bias is not None:
                    m.bias.copy_(0.01 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.weight.copy_(1 + 0.1 * torch.randn(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return {k: v.clone() for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Stand-in weight files in the reference layouts, and their state dicts."""
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("weights")
    lp = L.LPIPS()
    lp_state = _randomised(lp, 0, nonneg_heads=True)
    vgg = {k[len("net."):]: v for k, v in lp_state.items() if k.startswith("net.features.")}  # features.N.*
    vgg["classifier.0.weight"] = torch.zeros(4, 4)  # torchvision's classifier: ignored
    lin = {k: v for k, v in lp_state.items() if k.startswith("lin")}
    save_file(vgg, str(d / "vgg16.safetensors"))
    torch.save(lin, d / "vgg.pth")  # as lpips/weights/v0.1/vgg.pth
    # a whole lpips.LPIPS(net="vgg").state_dict(): backbone under net.slice{k}.{index}
    slices = {1: range(0, 4), 2: range(4, 9), 3: range(9, 16), 4: range(16, 23), 5: range(23, 30)}
    full = dict(lin, **{"scaling_layer.shift": lp.shift.clone(), "scaling_layer.scale": lp.scale.clone()})
    for k, idx in slices.items():
        for i in idx:
            for p in ("weight", "bias"):
                if f"features.{i}.{p}" in vgg:
                    full[f"net.slice{k}.{i}.{p}"] = vgg[f"features.{i}.{p}"]
    torch.save(full, d / "lpips_full.pth")
    fid_state = _randomised(L.FIDInceptionV3(), 1)
    fid_state["fc.weight"], fid_state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)  # ignored
    torch.save(fid_state, d / "pt_inception.pth")
    sync_state = _randomised(L.SyncNet(), 2)
    torch.save(sync_state, d / "syncnet_v2.model")
    return SimpleNamespace(dir=d, vgg=d / "vgg16.safetensors", lin=d / "vgg.pth", full=d / "lpips_full.pth",
                           fid=d / "pt_inception.pth", syncnet=d / "syncnet_v2.model", lin_state=lin,
                           sync_state=sync_state, fid_state=fid_state)


def _images(seed: int, n: int = 4, size: int = 48) -> np.ndarray:
    """Smooth random images (n, size, size, 3) uint8."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(n, 3, size // 8, size // 8, generator=g), size=(size, size),
                                        mode="bilinear", align_corners=False)
    return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def _noisy(images: np.ndarray, sigma: float, seed: int = 9) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(images + rng.normal(0, sigma, images.shape), 0, 255).round().astype(np.uint8)


# ---------------------------------------------------------------- the reference layouts


def test_parameter_names_and_shapes_are_those_of_the_reference_files() -> None:
    """Keys and shapes written out from the reference sources (lpips, torchvision's vgg16 and
    inception_v3 as patched by pytorch-fid, syncnet_python's SyncNetModel.S)."""
    lp = L.LPIPS().state_dict()
    for k, c in enumerate((64, 128, 256, 512, 512)):
        assert lp[f"lin{k}.model.1.weight"].shape == (1, c, 1, 1)
    vgg = VGG16Features(blocks=5).state_dict()
    convs = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256), 14: (256, 256),
             17: (512, 256), 19: (512, 512), 21: (512, 512), 24: (512, 512), 26: (512, 512), 28: (512, 512)}
    assert sorted(k for k in vgg if k.endswith(".weight")) == sorted(f"features.{i}.weight" for i in convs)
    for i, (o, c) in convs.items():
        assert vgg[f"features.{i}.weight"].shape == (o, c, 3, 3) and vgg[f"features.{i}.bias"].shape == (o,)
    assert len(VGG16Features().features) == 23  # the perceptual loss keeps its relu4_3 network

    net = L.FIDInceptionV3()
    fid = net.state_dict()
    expected = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "Conv2d_2a_3x3.conv.weight": (32, 32, 3, 3),
        "Conv2d_2b_3x3.conv.weight": (64, 32, 3, 3), "Conv2d_3b_1x1.conv.weight": (80, 64, 1, 1),
        "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3), "Conv2d_1a_3x3.bn.running_mean": (32,),
        "Mixed_5b.branch1x1.conv.weight": (64, 192, 1, 1), "Mixed_5b.branch5x5_2.conv.weight": (64, 48, 5, 5),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1), "Mixed_5d.branch_pool.conv.weight": (64, 288, 1, 1),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3), "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7), "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3), "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
        "Mixed_7c.branch3x3_2b.conv.weight": (384, 384, 3, 1), "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
        "Mixed_7c.branch_pool.bn.running_var": (192,),
    }
    for k, shape in expected.items():
        assert fid[k].shape == shape, k
    assert sum(isinstance(m, L.BasicConv2d) for m in net.modules()) == 94
    assert all(m.bn.eps == 1e-3 for m in net.modules() if isinstance(m, L.BasicConv2d))
    # torchvision's inception_v3 has 27,161,264 parameters; without AuxLogits (3,326,696) and fc (2,049,000):
    assert sum(p.numel() for p in net.parameters()) == 21_785_568

    sync = L.SyncNet().state_dict()
    expected = {
        "netcnnaud.0.weight": (64, 1, 3, 3), "netcnnaud.1.running_var": (64,), "netcnnaud.4.weight": (192, 64, 3, 3),
        "netcnnaud.8.weight": (384, 192, 3, 3), "netcnnaud.11.weight": (256, 384, 3, 3),
        "netcnnaud.14.weight": (256, 256, 3, 3), "netcnnaud.18.weight": (512, 256, 5, 4), "netcnnaud.19.bias": (512,),
        "netfcaud.0.weight": (512, 512), "netfcaud.1.running_mean": (512,), "netfcaud.3.weight": (1024, 512),
        "netcnnlip.0.weight": (96, 3, 5, 7, 7), "netcnnlip.4.weight": (256, 96, 1, 5, 5),
        "netcnnlip.8.weight": (256, 256, 1, 3, 3), "netcnnlip.11.weight": (256, 256, 1, 3, 3),
        "netcnnlip.14.weight": (256, 256, 1, 3, 3), "netcnnlip.18.weight": (512, 256, 1, 6, 6),
        "netcnnlip.19.running_var": (512,), "netfclip.3.bias": (1024,),
    }
    for k, shape in expected.items():
        assert sync[k].shape == shape, k
    convs = [k for k in sync if k.endswith(".weight") and sync[k].dim() > 2]
    assert len(convs) == 12 and not any(f"{k.rsplit('.', 1)[0]}.bias" not in sync for k in convs)  # convs have biases


# ---------------------------------------------------------------- LPIPS


def test_lpips_is_zero_for_identical_images_symmetric_and_grows_with_noise(weights: SimpleNamespace) -> None:
    model = L.load_lpips(weights.lin, weights.vgg)
    assert torch.equal(model.lin2.model[1].weight, weights.lin_state["lin2.model.1.weight"])
    x = _images(0)
    a = L.to_signed(x)
    assert a.shape == (4, 3, 48, 48) and float(a.min()) >= -1 and float(a.max()) <= 1
    with torch.inference_mode():
        assert model(a, a).shape == (4,) and torch.all(model(a, a) == 0)
        d = [model(a, L.to_signed(_noisy(x, s))) for s in (4, 16, 48)]
        b = L.to_signed(_images(1))
        assert torch.allclose(model(a, b), model(b, a), rtol=1e-5, atol=1e-7)
    assert torch.all(d[0] > 0) and torch.all(d[0] < d[1]) and torch.all(d[1] < d[2])
    # the same network from one whole lpips.LPIPS state dict (backbone under net.sliceK.N)
    full = L.load_lpips(weights.full)
    with torch.inference_mode():
        assert torch.allclose(full(a, b), model(a, b))
    with pytest.raises(InputError, match="two"):
        model(a, b[:, :, :32])


# ---------------------------------------------------------------- FID


def test_frechet_distance_matches_the_closed_form_of_diagonal_gaussians() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    closed = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum())
    assert L.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(closed, rel=1e-9)
    assert L.frechet_distance(mu1, np.diag(s1), mu1, np.diag(s1)) == pytest.approx(0, abs=1e-9)
    # rotated alike (commuting covariances): the same distance
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    d = L.frechet_distance(q @ mu1, q @ np.diag(s1) @ q.T, q @ mu2, q @ np.diag(s2) @ q.T)
    assert d == pytest.approx(closed, rel=1e-7)
    # a singular product (rank-1 covariances): the eps fallback still gives a finite number
    u = rng.normal(size=(6, 1))
    assert np.isfinite(L.frechet_distance(mu1, u @ u.T, mu2, 2 * u @ u.T))
    with pytest.raises(ValueError, match="imaginary"):  # not a covariance: no real square root
        L.frechet_distance(mu1[:2], np.diag([1.0, 1.0]), mu2[:2], np.diag([-1.0, 1.0]))


def test_fid_sample_space_route_equals_pytorch_fids_sqrtm_route() -> None:
    rng = np.random.default_rng(1)
    mix = rng.normal(size=(64, 64))
    a = rng.normal(size=(20, 64)) @ mix
    b = rng.normal(size=(30, 64)) @ mix * 1.3 + 0.5
    sqrtm_route = L.frechet_distance(*L.activation_statistics(a), *L.activation_statistics(b))
    assert L.fid_from_features(a, b) == pytest.approx(sqrtm_route, rel=1e-6)  # N < D: singular covariances
    c, e = rng.normal(size=(200, 8)), rng.normal(size=(150, 8)) * 2  # N > D: the sqrtm route itself
    assert L.fid_from_features(c, e) == pytest.approx(
        L.frechet_distance(*L.activation_statistics(c), *L.activation_statistics(e)))
    assert L.fid_from_features(a, a) == pytest.approx(0, abs=1e-6 * float(np.trace(np.cov(a, rowvar=False))))
    with pytest.raises(ValueError, match="at least 2"):
        L.fid_from_features(a[:1], b)


def test_fid_network_features_and_distances(weights: SimpleNamespace) -> None:
    net = L.load_fid_inception(weights.fid)
    assert torch.equal(net.Mixed_6e.branch7x7dbl_5.bn.running_var, weights.fid_state["Mixed_6e.branch7x7dbl_5.bn.running_var"])
    x = _images(2, n=6, size=64)
    with torch.inference_mode():
        def feats(imgs: np.ndarray) -> np.ndarray:
            return net(L.to_unit(imgs), size=75).numpy()

        fx = feats(x)
        near, far = feats(_noisy(x, 8)), feats(_noisy(x, 60))
        other = feats(_images(3, n=6, size=64))
        with pytest.raises(InputError, match="at least 75"):
            net(L.to_unit(x), size=64)
    assert fx.shape == (6, 2048) and np.isfinite(fx).all() and fx.std() > 0
    assert L.fid_from_features(fx, fx) == pytest.approx(0, abs=1e-6 * float((fx**2).sum()))
    d_near, d_far, d_other = L.fid_from_features(fx, near), L.fid_from_features(fx, far), L.fid_from_features(fx, other)
    assert 0 < d_near < d_far and d_other > 0


# ---------------------------------------------------------------- SyncNet

# python_speech_features 0.6 `mfcc(i16, 16000)` of the signal in the test below (installed only in a
# throwaway directory: pip install --target /tmp/psf python_speech_features==0.6): rows 0, 9, 18.
MFCC_REFERENCE = {
    0: [18.189119, 23.3211, 9.166215, 0.84727, 1.92295, 2.10916, -9.108841, -26.604035, -31.188609, -21.671287,
        -13.666662, -19.074205, -25.626043],
    9: [18.789921, 28.109541, -4.637382, -6.775819, 19.298766, 27.719572, -2.806027, -39.061122, -38.75629,
        -12.677007, -0.799791, -16.966034, -31.427598],
    18: [19.284687, 19.122521, -9.118904, -8.4427, 17.304734, 24.857365, -4.900354, -39.426538, -37.881837,
         -10.967714, 1.783625, -13.381589, -28.284321],
}


def test_mfcc_matches_python_speech_features_and_feeds_the_audio_net(weights: SimpleNamespace) -> None:
    t = np.arange(3200) / 16000
    wav = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1250 * t) * np.linspace(0, 1, t.size)
    i16 = np.round(wav * 32768).clip(-32768, 32767).astype(np.int16)
    c = L.mfcc(i16 / 32768.0)
    assert c.shape == (19, 13)  # 0.2 s: 1 + ceil((3200 - 400) / 160) rows
    for row, ref in MFCC_REFERENCE.items():
        assert np.allclose(c[row], ref, atol=1e-5), row
    assert L.mfcc(np.zeros(16000, np.float32)).shape == (99, 13) and np.isfinite(L.mfcc(np.zeros(400))).all()
    assert L.mfcc(np.zeros(100)).shape == (1, 13)  # shorter than a frame: one zero-padded frame
    win = L.audio_windows(L.mfcc(np.zeros(8 * 640)), 3)  # 8 frames of audio: 31 rows, windows at 0, 4, 8
    assert win.shape == (3, 1, 13, 20) and win.dtype == np.float32
    with pytest.raises(InputError, match="MFCC rows"):
        L.audio_windows(c, 2)  # 2 windows need 24 rows
    net = L.load_syncnet(weights.syncnet)
    with torch.inference_mode():
        emb = net.forward_aud(torch.from_numpy(win))
    assert emb.shape == (3, 1024) and torch.isfinite(emb).all()


def test_face_boxes_and_crops_follow_syncnet_pythons_geometry() -> None:
    lms = np.zeros((7, 478, 3), np.float32)
    xs, ys = np.linspace(20, 60, 468), np.linspace(10, 70, 468)  # mesh box x 20..60, y 10..70
    lms[:, :468, 0], lms[:, :468, 1] = xs, ys[::-1]
    lms[1] = np.nan  # a frame without a face: interpolated
    lms[3, :468, :2] += 2.0  # a one-frame jump: removed by the median filter
    box = L.face_boxes(lms)
    assert box.shape == (7, 3) and np.allclose(box, [40, 40, 30])  # centre, half the larger side
    with pytest.raises(ValueError, match="no tracked face"):
        L.face_boxes(np.full((3, 478, 3), np.nan))
    # the crop spans y in [cy - s, cy + 1.8 s), x in [cx - 1.4 s, cx + 1.4 s): a 10 px box centred at
    # (20, 20) in a 40 px frame: rows 10..37, columns 6..33 of the frame
    frame = np.zeros((40, 40, 3), np.uint8)
    frame[..., 0] = np.arange(40)[:, None]  # red = row (becomes channel 2 in BGR)
    frame[..., 1] = np.arange(40)[None, :]  # green = column
    crop = L.face_crop(frame, np.array([20.0, 20.0, 10.0]))
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    assert abs(int(crop[0, 112, 2]) - 10) <= 1 and abs(int(crop[223, 112, 2]) - 37) <= 1
    assert abs(int(crop[112, 0, 1]) - 6) <= 1 and abs(int(crop[112, 223, 1]) - 33) <= 1
    edge = L.face_crop(frame, np.array([2.0, 2.0, 10.0]))  # beyond the frame: the gray padding
    assert (edge[0, 0] == L.CROP_PAD_VALUE).all()
    wins = L.lip_windows(np.stack([crop] * 7))
    assert wins.shape == (3, 3, 5, 224, 224) and float(wins.max()) <= 255


@pytest.mark.parametrize("shift", [-4, 0, 3])
def test_offset_search_finds_a_planted_shift(shift: int) -> None:
    g = torch.Generator().manual_seed(5)
    w, d = 40, 16
    aud = torch.randn(w, d, generator=g)
    lip = torch.randn(w, d, generator=g)
    for i in range(w):  # the lips of window i say what the audio of window i - shift says
        if 0 <= i - shift < w:
            lip[i] = aud[i - shift] + 0.01 * torch.randn(d, generator=g)
    s = L.sync_scores(lip, aud)
    assert s.offset == shift and s.dists.shape == (w, 31)
    assert np.isfinite([s.lse_d, s.lse_c]).all() and s.lse_c > 1.0 and s.lse_d < float(np.median(s.dists.mean(0)))
    assert s.lse_d == pytest.approx(float(s.dists.mean(0).min()))
    unrelated = L.sync_scores(torch.randn(w, d, generator=g), aud)
    assert unrelated.lse_c < s.lse_c and unrelated.lse_d > s.lse_d
    with pytest.raises(ValueError, match="one shape"):
        L.sync_scores(lip[:5], aud)


def _clip(n: int, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n frames (n, size, size, 3), a face box's landmarks (n, 478, 3) and n frames of audio."""
    frames = _images(11, n=n, size=size)
    lms = np.zeros((n, 478, 3), np.float32)
    lms[:, :468, 0] = np.linspace(16, 48, 468)
    lms[:, :468, 1] = np.linspace(12, 52, 468)
    t = np.arange(n * 640) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 180 * t) * np.clip(np.sin(2 * np.pi * 3 * t), 0, None)).astype(np.float32)
    return frames, lms, wav


def test_streamed_sync_scores_equal_a_direct_computation(weights: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(L, "NET_BATCH", 1)  # windows embedded one at a time, frames added one at a time
    n = 7  # the reference's min_length - 5: 2 windows
    frames, lms, wav = _clip(n)
    truth = frames[:, :, ::-1].copy()
    m = L.LearnedMetrics(syncnet=L.load_syncnet(weights.syncnet))
    m.begin(n, fps=25, wav=wav, landmarks=lms)
    for k in range(n):
        m.add(k, frames[k:k + 1], truth[k:k + 1])
    got, series = m.finish()
    assert got["sync_windows"] == 2 and got["lpips"] == got["fid"] == L.NOT_GIVEN and series == {}
    boxes = L.face_boxes(lms)
    net = m.syncnet
    with torch.inference_mode():
        aud = net.forward_aud(torch.from_numpy(L.audio_windows(L.mfcc(wav), 2)))
        for imgs, suffix in ((frames, ""), (truth, "_truth")):
            crops = np.stack([L.face_crop(f, b) for f, b in zip(imgs[:6], boxes, strict=False)])
            ref = L.sync_scores(net.forward_lip(L.lip_windows(crops)), aud)
            assert np.allclose(m.sync["truth" if suffix else "generated"].dists, ref.dists, rtol=1e-5)
            assert got[f"lse_d{suffix}"] == pytest.approx(ref.lse_d, rel=1e-5)
            assert got[f"lse_c{suffix}"] == pytest.approx(ref.lse_c, rel=1e-4, abs=1e-4)
            assert got[f"av_offset{suffix}"] == ref.offset and abs(ref.offset) <= 15
            assert np.isfinite([ref.lse_d, ref.lse_c]).all()


def test_sync_scores_say_why_they_are_missing(weights: SimpleNamespace) -> None:
    frames, lms, wav = _clip(6)
    m = L.LearnedMetrics(syncnet=L.load_syncnet(weights.syncnet))
    for kwargs, why in ((dict(wav=None, no_audio="no audio here"), "no audio here"),
                        (dict(wav=wav, fps=30.0), "25 frames/s"),
                        (dict(wav=wav[:5 * 640]), "at least 6 frames"),
                        (dict(wav=wav, landmarks=np.full_like(lms, np.nan)), "no tracked face")):
        m.begin(6, **{"fps": 25.0, "landmarks": lms, **kwargs})
        m.add(0, frames, frames)
        out, _ = m.finish()
        assert out["lse_d"] == out["lse_c_truth"] == out["av_offset"] and why in out["lse_d"], (kwargs, out)


# ---------------------------------------------------------------- bad files


def test_every_bad_weights_file_is_a_one_line_error(weights: SimpleNamespace, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    loaders = {"lpips": lambda p: L.load_lpips(p, weights.vgg), "fid": L.load_fid_inception, "syncnet": L.load_syncnet}
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    torch.save(nn.Linear(2, 2), tmp_path / "module.pth")  # a pickled object: weights_only refuses it
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    for name, load in loaders.items():
        for path, why in ((tmp_path / "missing.pth", "weights file not found"),
                          (tmp_path / "junk.pth", "not a readable weights file"),
                          (tmp_path / "module.pth", "not a readable weights file"),
                          (tmp_path / "list.pth", "not a state dict of tensors")):
            with pytest.raises(InputError, match=why) as err:
                load(path)
            assert "\n" not in str(err.value) and str(path) in str(err.value), (name, why)
    # wrong keys / shapes name the key
    lin = dict(weights.lin_state)
    del lin["lin4.model.1.weight"]
    torch.save(lin, tmp_path / "lin_missing.pth")
    with pytest.raises(InputError, match=r"missing lin4\.model\.1\.weight"):
        L.load_lpips(tmp_path / "lin_missing.pth", weights.vgg)
    save_file(dict(weights.lin_state, **{"lin1.model.1.weight": torch.zeros(1, 64, 1, 1)}), str(tmp_path / "lin.pth"))
    with pytest.raises(InputError, match=r"lin1\.model\.1\.weight has shape \(1, 64, 1, 1\), expected \(1, 128, 1, 1\)"):
        L.load_lpips(tmp_path / "lin.pth", weights.vgg)  # a safetensors file by its header, whatever its name
    with pytest.raises(InputError, match="linear layers only"):
        L.load_lpips(weights.lin)
    vgg4 = {f"features.{k}": v for k, v in VGG16Features(blocks=4).features.state_dict().items()}
    torch.save(vgg4, tmp_path / "vgg_relu4.pth")  # a perceptual-loss VGG cut after relu4_3: no conv5
    with pytest.raises(InputError, match=r"missing features\.24\.weight"):
        L.load_lpips(weights.lin, tmp_path / "vgg_relu4.pth")
    with pytest.raises(InputError, match="needs the LPIPS linear layers"):
        L.LearnedMetrics.load(lpips_vgg_weights=weights.vgg)
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 5, 5)}, tmp_path / "fid_shape.pth")
    with pytest.raises(InputError, match=r"Conv2d_1a_3x3\.conv\.weight has shape \(32, 3, 5, 5\)"):
        L.load_fid_inception(tmp_path / "fid_shape.pth")
    torch.save(weights.lin_state, tmp_path / "lpips_as_fid.pth")
    with pytest.raises(InputError, match=r"not FID Inception-v3 \(pytorch-fid\) weights \(missing Conv2d_1a_3x3"):
        L.load_fid_inception(tmp_path / "lpips_as_fid.pth")
    sync = {k: v for k, v in weights.sync_state.items() if k != "netfclip.1.running_var"}
    torch.save(sync, tmp_path / "sync_missing.model")
    with pytest.raises(InputError, match=r"missing netfclip\.1\.running_var"):
        L.load_syncnet(tmp_path / "sync_missing.model")


# ---------------------------------------------------------------- through `erlnet evaluate`

HELD_OUT = 8  # frames after the train split: 3 SyncNet windows


@pytest.fixture(scope="module")
def subject(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A preprocessed 24-frame portrait subject with audio, its last 8 frames held out."""
    from media import talking_subject

    base = tmp_path_factory.mktemp("learned")
    n = 24
    talking_subject(base, n)
    manifest = json.loads((base / "subject" / "manifest.json").read_text())
    manifest["split"] = {"train": [0, n - HELD_OUT], "val": [n - HELD_OUT, n - 4], "test": [n - 4, n]}
    (base / "subject" / "manifest.json").write_text(json.dumps(manifest))
    return base / "subject"


class NoisyAvatar:
    """Renders the subject's held-out real frames in order (so: no training frames) at 64 px plus fixed noise."""

    image_size = 64

    def __init__(self, subject: Path, sigma: float) -> None:
        self.subject = Subject(subject)
        self.frames = held_out_frames(self.subject)
        self.sigma = sigma

    def check_motion(self, motion: object) -> None:
        pass

    def render(self, motion: object, start: int = 0, stop: int | None = None) -> SimpleNamespace:
        from erlnet.render.avatar import resize_rgb

        imgs = np.stack([resize_rgb(self.subject.frame(int(i)), self.image_size) for i in self.frames[start:stop]])
        imgs = _noisy(imgs.astype(np.float32), self.sigma, seed=start) if self.sigma else imgs
        return SimpleNamespace(rgb=torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0)


def _all_weights(weights: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> EvaluateConfig:
    monkeypatch.setattr(L, "FID_SIZE", 75)  # the stand-in Inception at 75 px: a 299 px pass is slow on a CPU
    return EvaluateConfig(batch_size=3, track=False, cpbd_every=0, video=False, train_frames=0, lpips_weights=weights.lin,
                          lpips_vgg_weights=weights.vgg, fid_weights=weights.fid, syncnet_weights=weights.syncnet)


def test_evaluate_reports_lpips_fid_and_sync_scores_with_weights(subject: Path, weights: SimpleNamespace,
                                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ev = evaluate_subject(NoisyAvatar(subject, 12.0), subject, tmp_path, _all_weights(weights, monkeypatch))
    m = ev.metrics
    for key in ("lpips", "fid", "lse_d", "lse_c", "lse_d_truth", "lse_c_truth"):
        assert isinstance(m[key], float) and math.isfinite(m[key]), (key, m[key])
    assert m["lpips"] > 0 and m["fid"] > 0 and m["lse_d"] > 0 and m["lse_c"] >= 0
    assert isinstance(m["av_offset"], int) and abs(m["av_offset"]) <= 15 and m["sync_windows"] == HELD_OUT - 5
    assert any("SyncNet scored 3 windows only" in note for note in ev.notes)
    assert ev.series["lpips"].shape == (HELD_OUT,) and np.isfinite(ev.series["lpips"]).all()
    assert m["lpips"] == pytest.approx(float(ev.series["lpips"].mean()))
    table = format_table(ev)
    assert f"{m['lpips']:.4f}" in table and f"{m['lse_c']:.3f}" in table and "not computed" not in table.split("LPIPS")[1]
    page = write_report(ev, tmp_path / "report", use_matplotlib=False).read_text()
    assert "LSE-C (SyncNet confidence)" in page and f"{m['fid']:.2f}" in page
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["metrics"]["lse_d"] == pytest.approx(m["lse_d"])


def test_a_perfect_renderer_scores_lpips_zero_fid_zero_and_the_real_sync(
        subject: Path, weights: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    perfect = evaluate_subject(NoisyAvatar(subject, 0.0), subject, None, _all_weights(weights, monkeypatch)).metrics
    assert perfect["lpips"] < 1e-6 and abs(perfect["fid"]) < 1e-6
    assert perfect["lse_d"] == pytest.approx(perfect["lse_d_truth"]) and perfect["av_offset"] == perfect["av_offset_truth"]
    # stride > 1: no contiguous audio, sync scores say why; the CLI has the flags
    strided = evaluate_subject(NoisyAvatar(subject, 0.0), subject, None, EvaluateConfig(
        stride=2, track=False, cpbd_every=0, train_frames=0, syncnet_weights=weights.syncnet)).metrics
    assert "stride 1" in strided["lse_c"] and strided["lpips"] == "not computed (no weights)"


def test_cli_has_the_weight_flags(capsys: pytest.CaptureFixture[str]) -> None:
    from erlnet.cli import main

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    for flag in ("--lpips-weights", "--lpips-vgg-weights", "--fid-weights", "--syncnet-weights"):
        assert flag in text


def test_bad_weights_stop_evaluate_before_rendering(subject: Path, tmp_path: Path) -> None:
    class Untouchable(NoisyAvatar):
        def render(self, *args: object, **kwargs: object) -> SimpleNamespace:
            raise AssertionError("rendered despite bad weights")

    junk = tmp_path / "syncnet_v2.model"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="not a readable weights file for SyncNet"):
        evaluate_subject(Untouchable(subject, 0.0), subject, None, EvaluateConfig(syncnet_weights=junk))
