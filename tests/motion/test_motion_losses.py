"""Losses: masked reconstruction, code cross-entropy, InfoNCE and the audio <-> mouth contrastive module."""

from __future__ import annotations

import math

import pytest
import torch

from erlnet.motion.config import ContrastConfig
from erlnet.motion.losses import SpeechContrast, code_cross_entropy, info_nce, masked_mse, velocity_mse


def test_masked_mse_ignores_invalid_frames():
    target = torch.zeros(2, 6, 3)
    pred = torch.ones(2, 6, 3)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[:, 3:] = False
    pred[:, 3:] = 1e6  # garbage where tracking failed
    assert float(masked_mse(pred, target, valid)) == pytest.approx(1.0)
    assert float(masked_mse(torch.ones(2, 6, 3), target)) == pytest.approx(1.0)


def test_velocity_mse_counts_pairs_of_valid_frames_only():
    x = torch.arange(8.0).view(1, 8, 1)
    y = x.clone()
    y[0, 4] = 100.0
    valid = torch.ones(1, 8, dtype=torch.bool)
    assert float(velocity_mse(y, x)) > 100
    valid[0, 4] = False
    assert float(velocity_mse(y, x, valid)) == pytest.approx(0.0)


def test_code_cross_entropy_and_accuracy():
    codes = torch.randint(0, 5, (2, 4, 3))
    good = 10.0 * torch.nn.functional.one_hot(codes, 5).float()
    ce, acc = code_cross_entropy(good, codes)
    assert float(acc) == 1.0 and float(ce) < 1e-3
    bad = torch.roll(good, 1, dims=-1)
    ce_bad, acc_bad = code_cross_entropy(bad, codes)
    assert float(acc_bad) == 0.0 and float(ce_bad) > 5
    valid = torch.tensor([[True, True, False, False], [True, False, False, False]])
    mixed = good.clone()
    mixed[:, 2:] = bad[:, 2:]
    mixed[1, 1] = bad[1, 1]
    _, acc_masked = code_cross_entropy(mixed, codes, valid)
    assert float(acc_masked) == 1.0


def test_info_nce_prefers_aligned_pairs():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 16, generator=g)
    b = a + 0.3 * torch.randn(64, 16, generator=g)
    aligned, acc = info_nce(a, b, 0.1)
    shuffled, _ = info_nce(a, b[torch.randperm(64, generator=g)], 0.1)
    assert float(aligned) < 0.5 * float(shuffled)
    assert float(acc) > 0.9
    assert float(shuffled) > math.log(64) - 1.0  # about chance


def _speech(batch: int, window: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Toy audio features (B, W, 6) and a mouth (B, W, 4) that follows them with one frame of lag."""
    t = torch.arange(window + 1, dtype=torch.float32)
    freq = 0.05 + 0.2 * torch.rand(batch, 1, 6, generator=g)
    phase = 2 * math.pi * torch.rand(batch, 1, 6, generator=g)
    audio = torch.sin(2 * math.pi * freq * t[None, :, None] + phase)
    mix = torch.linspace(-1, 1, 24).view(6, 4)
    mouth = torch.tanh(audio[:, :-1] @ mix) + 0.05 * torch.randn(batch, window, 4, generator=g)
    return audio[:, 1:], mouth


def test_speech_contrast_learns_to_match_audio_and_mouth():
    torch.manual_seed(0)
    cfg = ContrastConfig(sub_window=8, embed_dim=16, hidden=32, temperature=0.1)
    model = SpeechContrast(audio_dim=6, mouth_dim=4, cfg=cfg)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(150):
        audio, mouth = _speech(16, 32, g)
        loss, _ = model(audio, mouth)
        opt.zero_grad()
        loss.backward()
        opt.step()
    audio, mouth = _speech(16, 32, torch.Generator().manual_seed(7))
    with torch.no_grad():
        aligned, acc = model(audio, mouth)
        shuffled, _ = model(audio, mouth[torch.randperm(16, generator=g)])
        shifted, _ = model(audio, torch.roll(mouth, 8, dims=1))  # same clip, mouth half a second late
    assert float(aligned) < 0.6 * float(shuffled), (float(aligned), float(shuffled))
    assert float(aligned) < float(shifted)
    assert float(acc) > 0.3  # chance: 1 / 64 pairs


def test_speech_contrast_skips_windows_with_invalid_frames():
    cfg = ContrastConfig(sub_window=4, embed_dim=8, hidden=8)
    model = SpeechContrast(audio_dim=3, mouth_dim=2, cfg=cfg)
    audio, mouth = torch.randn(2, 8, 3), torch.randn(2, 8, 2)
    valid = torch.ones(2, 8, dtype=torch.bool)
    with torch.no_grad():
        base, _ = model(audio, mouth, valid)
    valid[0, 5] = False  # second sub-window of the first clip drops out
    poisoned = mouth.clone()
    poisoned[0, 4:] = 1e4
    with torch.no_grad():
        partial, _ = model(audio, poisoned, valid)
    assert torch.isfinite(partial) and float(partial) < 1e3 and float(partial) != float(base.detach())
    valid[:] = False
    none, _ = model(audio, mouth, valid)
    assert float(none) == 0.0
