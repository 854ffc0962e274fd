"""VQ-VAE of motion windows: codebook lookup, EMA updates, dead-code restart, reconstruction of toy motion."""

from __future__ import annotations

import math

import pytest
import torch

from erlnet.motion.config import VQConfig
from erlnet.motion.vqvae import Block, EMAQuantizer, SequenceVQVAE

_MIX = torch.randn(2, 6, generator=torch.Generator().manual_seed(5))


def toy_motion(batch: int, window: int, g: torch.Generator) -> torch.Tensor:
    """(batch, window, 6): two sinusoids of fixed frequency, random phase and amplitude, mixed into 6 channels."""
    t = torch.arange(window, dtype=torch.float32)
    freq = torch.tensor([0.04, 0.09])
    phase = 2 * math.pi * torch.rand(batch, 1, 2, generator=g)
    amp = 0.5 + torch.rand(batch, 1, 2, generator=g)
    return (amp * torch.sin(2 * math.pi * freq * t[None, :, None] + phase)) @ _MIX


def tiny_vq(**kw) -> SequenceVQVAE:
    cfg = VQConfig(d_model=32, n_layers=1, n_heads=2, ff_mult=2, dropout=0.0, codebook_size=32, code_dim=8,
                   n_groups=2, ema_decay=0.9, **kw)
    return SequenceVQVAE(6, cfg, downsample=4, n_emotions=9, emotion_dim=8)


def test_codebook_lookup_shapes_and_straight_through():
    q = EMAQuantizer(n_codes=16, code_dim=4, n_groups=3).eval()  # eval: no codebook update
    z = torch.randn(2, 5, 12, requires_grad=True)
    out = q(z)
    assert out.z_q.shape == (2, 5, 12)
    assert out.indices.shape == (2, 5, 3) and out.indices.dtype == torch.long
    assert int(out.indices.max()) < 16
    # The quantised vector is exactly the looked-up codes, group by group.
    assert torch.allclose(out.z_q, q.lookup(out.indices))
    assert torch.equal(q.lookup(out.indices)[0, 0, 4:8], q.codebook[1, out.indices[0, 0, 1]])
    # Each code is the nearest of its group.
    flat = z.detach().reshape(-1, 3, 4)
    d = ((flat[:, :, None] - q.codebook[None]) ** 2).sum(-1)
    assert torch.equal(d.argmin(-1), out.indices.reshape(-1, 3))
    out.z_q.sum().backward()  # straight-through: gradients reach the encoder output
    assert z.grad is not None and torch.allclose(z.grad, torch.ones_like(z))


def test_soft_lookup_of_one_hot_equals_lookup():
    q = EMAQuantizer(n_codes=8, code_dim=3, n_groups=2)
    idx = torch.randint(0, 8, (4, 2))
    probs = torch.nn.functional.one_hot(idx, 8).float()
    assert torch.allclose(q.soft_lookup(probs), q.lookup(idx))


def test_ema_moves_codes_to_cluster_means():
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])
    q = EMAQuantizer(n_codes=4, code_dim=2, decay=0.5, dead_fraction=0.0).train()
    q.codebook[0] = centres + torch.tensor([1.0, -1.5])  # each code starts nearest its own cluster, off-centre
    q.ema_sum[0] = q.codebook[0].clone()
    q.initialized.fill_(True)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        z = centres[torch.randint(0, 4, (256,), generator=g)] + 0.1 * torch.randn(256, 2, generator=g)
        q(z[None])
    assert float((q.codebook[0] - centres).norm(dim=1).max()) < 0.05


def test_dead_codes_are_restarted_near_the_data():
    q = EMAQuantizer(n_codes=16, code_dim=4, decay=0.8, dead_fraction=0.1).train()
    g = torch.Generator().manual_seed(0)
    q(torch.randn(1, 512, 4, generator=g))  # data-initialised
    q.codebook[0, :4] = 100.0  # four codes far from any data: never chosen
    q.ema_sum[0, :4] = 100.0 * q.ema_count[0, :4, None]
    before = int(q.restarts)
    for _ in range(30):
        q(torch.randn(1, 512, 4, generator=g))
    assert int(q.restarts) > before
    assert float(q.codebook[0, :4].abs().max()) < 10.0  # moved back among the data
    out = q(torch.randn(1, 4096, 4, generator=g))
    used = torch.bincount(out.indices.flatten(), minlength=16)
    assert bool((used[:4] > 0).all()), used


def test_perplexity_counts_codes_in_use():
    q = EMAQuantizer(n_codes=8, code_dim=2, n_groups=1)
    q.ema_count.fill_(1.0)
    assert q.perplexity() == pytest.approx(8.0, rel=1e-4)
    q.ema_count.zero_()
    q.ema_count[0, :2] = 1.0
    assert q.perplexity() == pytest.approx(2.0, rel=1e-3)


def test_vqvae_reconstructs_toy_sequences():
    torch.manual_seed(0)
    vq = tiny_vq()
    opt = torch.optim.Adam(vq.parameters(), 1e-2)
    g = torch.Generator().manual_seed(1)
    emo, p0 = torch.zeros(32, dtype=torch.long), torch.zeros(32, 6)
    for _ in range(80):
        x = toy_motion(32, 16, g)
        out = vq(x, emo, p0)
        loss = ((out.recon - x) ** 2).mean() + 0.25 * out.commitment
        opt.zero_grad()
        loss.backward()
        opt.step()
    vq.eval()
    x = toy_motion(64, 16, torch.Generator().manual_seed(99))
    with torch.no_grad():
        out = vq(x, torch.zeros(64, dtype=torch.long), torch.zeros(64, 6))
        idx = vq.tokenize(x, torch.zeros(64, dtype=torch.long), torch.zeros(64, 6))
        again = vq.decode_indices(idx, torch.zeros(64, dtype=torch.long), torch.zeros(64, 6))
    rel = float(((out.recon - x) ** 2).mean() / x.var())
    assert rel < 0.1, rel
    assert out.indices.shape == (64, 4, 2) and torch.equal(idx, out.indices)
    assert torch.allclose(again, out.recon, atol=1e-5)
    stats = vq.usage_stats()
    assert vq.codebook_perplexity() > 8.0, stats  # of 32 codes per group
    assert stats["used_fraction"] > 0.5


def test_vqvae_decoder_uses_its_conditioning():
    vq = tiny_vq().eval()
    z = torch.randn(2, 4, 16)
    a = vq.decode(z, torch.tensor([0, 0]), torch.zeros(2, 6))
    b = vq.decode(z, torch.tensor([5, 5]), torch.zeros(2, 6))
    c = vq.decode(z, torch.tensor([0, 0]), torch.ones(2, 6))
    assert a.shape == (2, 16, 6)
    assert not torch.allclose(a, b) and not torch.allclose(a, c)


def test_cached_causal_block_matches_full_pass():
    blk = Block(16, 2).eval()
    x = torch.randn(3, 7, 16)
    full = blk(x, causal=True)
    cache: dict[str, torch.Tensor] = {}
    steps = torch.cat([blk(x[:, i:i + 1], causal=True, cache=cache) for i in range(7)], dim=1)
    assert torch.allclose(full, steps, atol=1e-5)
    # Causality: changing a later position does not change earlier outputs.
    y = x.clone()
    y[:, 5:] += 1.0
    assert torch.allclose(blk(y, causal=True)[:, :5], full[:, :5], atol=1e-6)


def test_residual_levels_sum_their_codes_and_quantise_finer():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(1, 2048, 8, generator=g)
    errors = []
    for levels in (1, 3):
        torch.manual_seed(0)
        q = EMAQuantizer(n_codes=16, code_dim=4, n_groups=2, decay=0.8, levels=levels).train()
        for _ in range(15):
            q(data)
        q.eval()
        out = q(data)
        assert out.indices.shape == (1, 2048, 2 * levels)
        assert torch.equal(q.nearest(data), out.indices)  # tokenising = what the forward pass chose
        # The code vector is the sum over levels of each level's code.
        i = out.indices[0, 0]
        parts = torch.stack([q.codebook[k, i[k]] for k in range(2 * levels)]).view(levels, 2, 4).sum(0)
        assert torch.allclose(out.z_q[0, 0], parts.flatten(), atol=1e-6)
        one_hot = torch.nn.functional.one_hot(out.indices, 16).float()
        assert torch.allclose(q.soft_lookup(one_hot), out.z_q, atol=1e-6)
        errors.append(float(((out.z_q - data) ** 2).mean()))
    assert errors[1] < 0.6 * errors[0], errors


def test_codes_idle_for_dead_steps_batches_are_restarted():
    g = torch.Generator().manual_seed(0)
    for dead_steps, expect_restart in ((5, True), (0, False)):
        q = EMAQuantizer(n_codes=8, code_dim=2, decay=0.99, dead_fraction=0.0, dead_steps=dead_steps).train()
        q(torch.randn(1, 256, 2, generator=g))
        q.codebook[0, 0] = 50.0  # never chosen again; with decay 0.99 its EMA usage stays high for long
        q.ema_sum[0, 0] = 50.0 * q.ema_count[0, 0]
        for _ in range(6):
            q(torch.randn(1, 256, 2, generator=g))
        assert (float(q.codebook[0, 0].abs().max()) < 10.0) == expect_restart


def test_weights_saved_before_idle_counters_still_load():
    q = EMAQuantizer(n_codes=8, code_dim=2)
    state = {k: v for k, v in q.state_dict().items() if k != "idle"}
    fresh = EMAQuantizer(n_codes=8, code_dim=2)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.codebook, q.codebook) and not fresh.idle.any()
