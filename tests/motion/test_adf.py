"""The ADF motion model end to end on a toy corpus: config, statistics, stage 1 and 2 training,
generation (shapes, determinism, poses, smooth joins), input errors, and the regression baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

import erlnet.motion.adf as adf
from erlnet.errors import FormatError, InputError
from erlnet.face import topology as tp
from erlnet.motion.adf import ADFModel, MotionBatch, chain_windows, motion_batch, to_motion
from erlnet.motion.config import (
    EMOTIONS,
    ADFConfig,
    MotionStatistics,
    RegressorConfig,
    compute_statistics,
    emotion_index,
    mouth_columns,
    setup,
)
from erlnet.motion.windows import window_starts

D, A, FPS = 12, 8, 25
MOUTH = np.arange(6)  # toy: the first two "points" are the mouth




def toy_clip(n: int, seed: int) -> dict:
    """A speaking toy subject: expression follows the audio, blinks every 2.4 s, smooth head motion."""
    g = np.random.default_rng(seed)
    t = np.arange(n) / FPS
    audio = np.stack([np.sin(2 * np.pi * g.uniform(0.5, 3) * t + g.uniform(0, 6)) for _ in range(A)], 1)
    mix = np.random.default_rng(0).normal(size=(A, D)) * 0.02
    blink = np.zeros(n)
    for s in range(int(g.uniform(5, 30)), n - 6, 60):
        blink[s:s + 5] = [0.3, 0.8, 1.0, 0.7, 0.2]
    rv = 0.08 * np.sin(2 * np.pi * g.uniform(0.1, 0.4, 3) * t[:, None] + g.uniform(0, 6, 3))
    tr = 0.005 * np.sin(2 * np.pi * g.uniform(0.1, 0.3, 3) * t[:, None] + g.uniform(0, 6, 3)) + [0, 0, 0.5]
    f = np.float32
    return {"expression": (np.tanh(audio) @ mix).astype(f), "blink": blink.astype(f),
            "rotation": Rotation.from_rotvec(rv).as_matrix().astype(f), "translation": tr.astype(f),
            "audio": audio.astype(f), "emotion": ("happy", "sad", None)[seed % 3]}


CLIPS = [toy_clip(160, s) for s in range(6)]


def toy_stats(window: int) -> MotionStatistics:
    return compute_statistics([c["expression"] for c in CLIPS], [c["rotation"] for c in CLIPS],
                              [c["translation"] for c in CLIPS], [c["audio"] for c in CLIPS], window=window)


def sample_batch(g: np.random.Generator, window: int, size: int = 16) -> MotionBatch:
    windows = []
    for _ in range(size):
        c = CLIPS[g.integers(len(CLIPS))]
        s = g.integers(0, len(c["audio"]) - window)
        w = {k: c[k][s:s + window] for k in ("expression", "blink", "rotation", "translation", "audio")}
        a, n = g.integers(0, 100), g.integers(25, 60)  # style clips of different lengths
        w.update(emotion=c["emotion"], style_expression=c["expression"][a:a + n],
                 style_rotation=c["rotation"][a:a + n], style_translation=c["translation"][a:a + n])
        windows.append(w)
    return motion_batch(windows)


def style_of(c: dict, n: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return c["expression"][:n], c["rotation"][:n], c["translation"][:n]


@pytest.fixture(scope="module")
def trained():
    """A tiny model after a short stage 1 and stage 2 (overfitting one fixed batch), with its history."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = ADFConfig.tiny()
    model = setup(D, A, cfg, MOUTH, toy_stats(cfg.window))
    g = np.random.default_rng(0)
    opt = torch.optim.Adam(model.stage1_parameters(), 3e-3)
    s1 = []
    for _ in range(40):
        out = model.stage1_losses(sample_batch(g, cfg.window, 12))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        s1.append({k: float(v.detach()) for k, v in out.items()})
    vq_before = {k: v.clone() for k, v in model.vq_expression.state_dict().items()}
    # An optimiser over *all* parameters: stage 2 must still leave the VQ-VAEs alone.
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    fixed = sample_batch(np.random.default_rng(1), cfg.window, 8)
    s2 = []
    for _ in range(30):
        out = model.stage2_losses(fixed)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        s2.append({k: float(v.detach()) for k, v in out.items()})
    torch.set_num_threads(n)
    return {"model": model, "s1": s1, "s2": s2, "vq_before": vq_before}


# ----------------------------------------------------------------------------- config and setup


def test_config_round_trip_and_validation():
    cfg = ADFConfig.tiny()
    again = ADFConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.to_dict() == cfg.to_dict()
    assert ADFConfig.from_dict({"window": 32, "pose_vq": {"codebook_size": 64}}).pose_vq.codebook_size == 64
    with pytest.raises(FormatError, match="unknown fields bogus"):
        ADFConfig.from_dict({"bogus": 1})
    with pytest.raises(FormatError, match="pose_vq"):
        ADFConfig.from_dict({"pose_vq": {"codebook_sise": 64}})
    with pytest.raises(InputError, match="multiple of downsample"):
        ADFConfig(window=30)
    with pytest.raises(InputError, match="overlap"):
        ADFConfig(overlap=40)
    with pytest.raises(InputError, match="n_heads"):
        ADFConfig(style=ADFConfig().style.__class__(d_model=30))
    with pytest.raises(InputError, match="continue_windows must be true or false"):
        ADFConfig(continue_windows=2)


def test_spec_rebuilds_the_same_model():
    model = setup(D, A, ADFConfig.tiny(), MOUTH, toy_stats(16))
    clone = ADFModel.from_spec(model.spec())
    clone.load_state_dict(model.state_dict())
    assert clone.spec() == model.spec()
    assert bool(clone.norm.ready)  # statistics travel with the weights


def test_mouth_columns_of_the_landmark_layouts():
    cols = mouth_columns(3 * tp.N_LANDMARKS)
    assert len(cols) == 3 * len(tp.MOUTH)
    assert set(cols[::3] // 3) == set(tp.MOUTH.tolist()) and (cols[1::3] == cols[::3] + 1).all()
    exp = mouth_columns(3 * len(tp.EXPRESSIVE))
    assert (tp.EXPRESSIVE[exp[::3] // 3] == tp.MOUTH).all()
    with pytest.raises(InputError, match="mouth columns"):
        mouth_columns(D)
    model = setup(3 * tp.N_LANDMARKS, 171, ADFConfig.tiny())
    assert model.norm.mouth_columns.shape == (3 * len(tp.MOUTH),)


def test_emotions():
    assert emotion_index(None) == EMOTIONS.index("unknown") == emotion_index("")
    assert emotion_index("Happy") == EMOTIONS.index("happy")
    with pytest.raises(InputError, match="unknown emotion 'joyful'"):
        emotion_index("joyful")


def test_statistics_are_required_and_checked():
    model = setup(D, A, ADFConfig.tiny(), MOUTH)
    batch = sample_batch(np.random.default_rng(0), 16, 2)
    with pytest.raises(InputError, match="no data statistics"):
        model.stage1_losses(batch)
    stats = toy_stats(16)
    wrong = MotionStatistics(**{**stats.__dict__, "audio_mean": np.zeros(A + 1, np.float32)})
    with pytest.raises(InputError, match="audio_mean has shape"):
        model.set_statistics(wrong)
    with pytest.raises(InputError, match="no PCA basis"):
        setup(D, A, ADFConfig.from_dict({**ADFConfig.tiny().to_dict(), "pca_dim": 4}), MOUTH, stats)
    assert MotionStatistics.from_dict(stats.to_dict()).audio_std.shape == (A,)


def test_pca_basis_reduces_the_expression():
    cfg = ADFConfig.from_dict({**ADFConfig.tiny().to_dict(), "pca_dim": 4})
    stats = compute_statistics([c["expression"] for c in CLIPS], [c["rotation"] for c in CLIPS],
                               [c["translation"] for c in CLIPS], [c["audio"] for c in CLIPS], 16, pca_dim=4)
    basis = stats.expression_basis
    assert basis.shape == (D, 4) and np.allclose(basis.T @ basis, np.eye(4), atol=1e-5)
    model = setup(D, A, cfg, MOUTH, stats)
    assert model.vq_expression.in_dim == 5  # 4 components + blink
    x = torch.from_numpy(CLIPS[0]["expression"])
    back = model.norm.expression_inverse(model.norm.expression(x))
    # The toy expression is a mix of 8 audio channels: 4 components keep most of it.
    assert float(((back - x) ** 2).mean() / x.var()) < 0.3
    out = model.stage1_losses(sample_batch(np.random.default_rng(0), 16, 4))
    assert torch.isfinite(out["loss"])


# ----------------------------------------------------------------------------- batches


def test_batch_checks_name_the_problem():
    model = setup(D, A, ADFConfig.tiny(), MOUTH, toy_stats(16))
    g = np.random.default_rng(0)
    b = sample_batch(g, 16, 2)
    with pytest.raises(InputError, match=r"expression has shape \(2, 16, 11\)"):
        model.stage1_losses(MotionBatch(**{**b.__dict__, "expression": b.expression[..., :11]}))
    with pytest.raises(InputError, match="multiple of the VQ downsampling"):
        model.stage1_losses(sample_batch(g, 14, 2))
    bad = b.translation.clone()
    bad[0, 3, 1] = float("nan")
    with pytest.raises(InputError, match="translation holds NaN"):
        model.stage1_losses(MotionBatch(**{**b.__dict__, "translation": bad}))
    with pytest.raises(InputError, match="needs audio"):
        model.stage2_losses(MotionBatch(**{**b.__dict__, "audio": None}))
    short = motion_batch([{**{k: CLIPS[0][k][:16] for k in ("expression", "blink", "rotation", "translation",
                                                               "audio")}, "emotion": "sad",
                           "style_expression": CLIPS[0]["expression"][:20],
                           "style_rotation": CLIPS[0]["rotation"][:20],
                           "style_translation": CLIPS[0]["translation"][:20]}])
    with pytest.raises(InputError, match="style clip has 20 frames"):
        model.stage2_losses(short)


def test_motion_batch_pads_style_clips_and_maps_emotions():
    b = sample_batch(np.random.default_rng(3), 16, 4)
    lengths = b.style_valid.sum(1)
    assert b.style_expression.shape[1] == int(lengths.max()) and int(lengths.min()) >= 25
    assert b.emotion.dtype == torch.long and set(b.emotion.tolist()) <= set(range(len(EMOTIONS)))


def test_invalid_frames_do_not_count():
    torch.manual_seed(0)
    model = setup(D, A, ADFConfig.tiny(), MOUTH, toy_stats(16)).eval()
    b = sample_batch(np.random.default_rng(0), 16, 4)
    valid = torch.ones(4, 16, dtype=torch.bool)
    valid[:, 12:] = False
    junk = b.blink.clone()
    junk[:, 12:] = 0.7  # changes at invalid frames only reach the loss through the network, not the target
    with torch.no_grad():
        base = model.stage1_losses(MotionBatch(**{**b.__dict__, "valid": valid}))
        other = model.stage1_losses(MotionBatch(**{**b.__dict__, "valid": valid, "blink": junk}))
        full = model.stage1_losses(MotionBatch(**{**b.__dict__, "blink": junk}))
    assert abs(float(other["blink"]) - float(base["blink"])) < abs(float(full["blink"]) - float(base["blink"]))


# ----------------------------------------------------------------------------- training


def test_stage1_learns_and_reports(trained):
    s1 = trained["s1"]
    first, last = s1[0], np.mean([[h["expression"], h["pose"], h["blink"]] for h in s1[-10:]], axis=0)
    assert last[0] < 0.7 * first["expression"] and last[1] < 0.7 * first["pose"] and last[2] < first["blink"]
    for key in ("expression_perplexity", "pose_perplexity", "expression_rmse", "rotation_error_deg",
                "translation_error_mm", "expression_commitment"):
        assert np.isfinite(s1[-1][key])
    assert s1[-1]["expression_perplexity"] > 3
    stats = trained["model"].codebook_stats()
    assert stats["expression_perplexity"] > 3 and stats["pose_perplexity"] > 1
    assert 0 < stats["expression_used_fraction"] <= 1


def test_stage2_overfits_a_tiny_dataset(trained):
    s2 = trained["s2"]
    # Pose: code classification; expression: latents regressed through the frozen decoder.
    assert s2[0]["pose_accuracy"] < 0.3 and s2[-1]["pose_accuracy"] > 0.8, (s2[0]["pose_accuracy"], s2[-1]["pose_accuracy"])
    # (The decoded motion cannot get better than what the tiny, briefly trained VQ-VAE reconstructs.)
    assert s2[-1]["expression_feature"] < 0.75 * s2[0]["expression_feature"]
    assert s2[-1]["expression_latent"] < 0.6 * s2[0]["expression_latent"]
    assert s2[-1]["expression_accuracy"] > s2[0]["expression_accuracy"]
    assert s2[-1]["loss"] < 0.3 * s2[0]["loss"]
    assert s2[-1]["contrast"] < s2[0]["contrast"]
    assert "expression_ce" not in s2[-1] and "pose_latent" not in s2[-1]
    for key in ("pose_feature", "sync", "contrast_accuracy"):
        assert np.isfinite(s2[-1][key])


@pytest.mark.parametrize("expression, pose", [("codes", "latent"), ("latent", "codes")])
def test_both_decoder_objectives_train_and_generate(expression, pose):
    cfg = ADFConfig.tiny()
    cfg.expression_decoder.objective, cfg.pose_decoder.objective = expression, pose
    cfg.expression_decoder.quantize = cfg.pose_decoder.quantize = False
    torch.manual_seed(0)
    model = setup(D, A, cfg, MOUTH, toy_stats(cfg.window))
    batch = sample_batch(np.random.default_rng(0), cfg.window, 4)
    model.stage1_losses(batch)  # initialises the codebooks
    out = model.stage2_losses(batch)
    out["loss"].backward()
    other = {"codes": "latent", "latent": "codes"}
    for name, objective in (("expression", expression), ("pose", pose)):
        assert (f"{name}_ce" in out) == (objective == "codes") and (f"{name}_latent" in out) == (objective == "latent")
        assert not hasattr(getattr(model, f"decoder_{name}"), "latent_head" if objective == "codes" else "head")
        assert f"{name}_{'latent' if other[objective] == 'latent' else 'ce'}" not in out
    assert model.decoder_expression.ar.blocks[0].qkv.weight.grad is not None
    c = CLIPS[0]
    gen = model.generate(c["audio"][:40], *style_of(c))
    assert gen["expression"].shape == (40, D) and np.isfinite(gen["expression"]).all()


def test_reconstruction_codes_a_clip_relative_to_its_mean(trained):
    """With style_offset the VQ-VAE sees a clip relative to its own mean: shifting the whole clip shifts
    the reconstruction by exactly as much."""
    model = trained["model"]
    c = CLIPS[3]
    args = (c["blink"], c["rotation"], c["translation"])
    rec = model.reconstruct(c["expression"], *args)
    shift = np.linspace(-0.02, 0.02, D).astype(np.float32)
    moved = model.reconstruct(c["expression"] + shift, *args)
    assert rec["expression"].shape == (160, D) and rec["blink"].shape == (160,)
    assert rec["codes"].shape[1:] == (model.config.tokens, model.vq_expression.n_groups)
    assert np.allclose(moved["expression"], rec["expression"] + shift, atol=1e-5)
    assert np.array_equal(moved["codes"], rec["codes"])
    err = np.mean((rec["expression"] - c["expression"]) ** 2)
    assert err < 0.8 * np.mean((c["expression"] - c["expression"].mean(0)) ** 2)
    plain = model.reconstruct(c["expression"], *args, quantize=False)
    assert not np.array_equal(plain["expression"], rec["expression"])
    with pytest.raises(InputError, match="blink must be"):
        model.reconstruct(c["expression"], c["blink"][:5], c["rotation"], c["translation"])


def test_stage2_leaves_the_vq_vaes_alone(trained):
    model = trained["model"]
    for k, v in model.vq_expression.state_dict().items():
        assert torch.equal(v, trained["vq_before"][k]), k
    model.train()
    assert model.training and not model.vq_expression.training and not model.vq_pose.training
    assert all(not p.requires_grad for p in model.stage1_parameters())


# ----------------------------------------------------------------------------- generation


@pytest.mark.parametrize("n_frames", [1, 7, 16, 50, 123])
def test_generate_shapes_and_ranges(trained, n_frames):
    model = trained["model"]
    c = CLIPS[0]
    out = model.generate(c["audio"][:n_frames], *style_of(c), emotion="happy")
    assert out["expression"].shape == (n_frames, D) and out["blink"].shape == (n_frames,)
    assert out["rotation"].shape == (n_frames, 3, 3) and out["translation"].shape == (n_frames, 3)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in out.values())
    assert out["blink"].min() >= 0 and out["blink"].max() <= 1
    r = out["rotation"]
    assert np.allclose(r @ r.transpose(0, 2, 1), np.eye(3), atol=1e-5) and np.allclose(np.linalg.det(r), 1, atol=1e-5)
    assert model.training  # restored after generating
    assert len(to_motion(out)) == n_frames


def test_generated_motion_follows_the_toy_subject(trained):
    """After a short fit the expression tracks the audio-driven truth better than the mean expression."""
    model = trained["model"]
    c = CLIPS[1]
    out = model.generate(c["audio"], *style_of(c), emotion="sad")
    err = np.mean((out["expression"] - c["expression"]) ** 2)
    base = np.mean((c["expression"].mean(0) - c["expression"]) ** 2)
    assert err < base
    # The head stays near the subject's pose: within a few degrees and a few centimetres.
    assert np.abs(out["translation"] - c["translation"].mean(0)).max() < 0.05
    angle = Rotation.from_matrix(out["rotation"]).magnitude()
    assert angle.max() < np.radians(20)


def test_same_seed_same_output(trained):
    model = trained["model"]
    c = CLIPS[2]
    a = model.generate(c["audio"][:90], *style_of(c), seed=3)
    b = model.generate(c["audio"][:90], *style_of(c), seed=3)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    other = model.generate(c["audio"][:90], *style_of(c), seed=4)
    assert not np.array_equal(a["rotation"], other["rotation"])  # the head pose is sampled
    greedy = [model.generate(c["audio"][:90], *style_of(c), seed=s, pose_temperature=0.0) for s in (1, 2)]
    assert np.array_equal(greedy[0]["rotation"], greedy[1]["rotation"])


def test_first_pose_and_static_mode(trained):
    model = trained["model"]
    c = CLIPS[0]
    r0 = Rotation.from_rotvec([0.1, -0.2, 0.05]).as_matrix().astype(np.float32)
    t0 = np.array([0.01, -0.02, 0.6], np.float32)
    moving = model.generate(c["audio"][:70], *style_of(c), first_pose=(r0, t0))
    assert np.allclose(moving["rotation"][0], r0, atol=1e-5) and np.allclose(moving["translation"][0], t0, atol=1e-6)
    assert np.abs(np.diff(moving["translation"], axis=0)).max() > 0
    still = model.generate(c["audio"][:70], *style_of(c), first_pose=(r0, t0), pose_mode="static")
    assert np.allclose(still["rotation"], r0, atol=1e-6) and np.allclose(still["translation"], t0)
    default = model.generate(c["audio"][:70], *style_of(c), pose_mode="static")
    assert np.allclose(default["translation"], c["translation"][:40].mean(0), atol=1e-6)


def test_windows_join_without_jumps(trained, monkeypatch):
    """The largest frame-to-frame change of the joined motion is about that inside the generated windows
    (within 5%: windows that disagree slightly add a little motion where they hand over, see
    `erlnet.motion.windows.blend`)."""
    model = trained["model"]
    chunks: list[torch.Tensor] = []
    real_blend = adf.blend

    def spy(x, starts, n):
        chunks.append(x.clone())
        return real_blend(x, starts, n)

    monkeypatch.setattr(adf, "blend", spy)
    c = CLIPS[3]
    for seed in range(4):
        chunks.clear()
        out = model.generate(c["audio"], *style_of(c), seed=seed)
        assert len(window_starts(160, 16, 8, 4)) == chunks[0].shape[0] > 5
        expr_windows = model.norm.expression_inverse(chunks[0]).numpy()
        inside = np.linalg.norm(np.diff(expr_windows, axis=1), axis=2).max()
        joined = np.linalg.norm(np.diff(out["expression"], axis=0), axis=1).max()
        assert joined <= 1.05 * inside, (seed, joined / inside)
        trans_windows = chunks[-1].numpy()  # each window starts where the previous one is at that frame
        inside_t = np.linalg.norm(np.diff(trans_windows, axis=1), axis=2).max()
        assert np.linalg.norm(np.diff(out["translation"], axis=0), axis=1).max() <= 1.05 * inside_t


def test_chained_windows_continue_each_others_pose():
    g = np.random.default_rng(0)
    starts = [0, 12, 24]
    deltas = torch.from_numpy(np.cumsum(g.normal(size=(3, 16, 6)) * 0.01, axis=1))
    deltas = deltas - deltas[:, :1]
    r0 = torch.from_numpy(Rotation.from_rotvec([0.1, 0.2, 0.3]).as_matrix())[None]
    t0 = torch.tensor([[0.0, 0.0, 0.5]], dtype=torch.float64)
    rot, trans = chain_windows(deltas, starts, r0, t0)
    assert torch.allclose(rot[0, 0], r0[0]) and torch.allclose(trans[0, 0], t0[0])
    for k in (1, 2):
        j = starts[k] - starts[k - 1]
        assert torch.allclose(rot[k, 0], rot[k - 1, j]) and torch.allclose(trans[k, 0], trans[k - 1, j])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"audio_feats": np.zeros((0, A), np.float32)}, "shorter than one video frame"),
        ({"audio_feats": np.zeros((30, A + 1), np.float32)}, f"9 columns but the motion model was trained on {A}"),
        ({"audio_feats": np.zeros(30, np.float32)}, "audio features must be"),
        ({"audio_feats": np.full((30, A), np.nan, np.float32)}, "NaN"),
        ({"audio_feats": np.zeros((30, A), np.int16)}, "must hold floats"),
        ({"style_expr": CLIPS[0]["expression"][:24]}, r"style clip is 24 frames \(0.96 s\); it needs at least 25"),
        ({"style_expr": CLIPS[0]["expression"][:40, :10]}, r"style expression must be \(S, 12\)"),
        ({"style_rotation": CLIPS[0]["rotation"][:39]}, "style clip pose must be"),
        ({"emotion": "joyful"}, "unknown emotion"),
        ({"pose_mode": "wobbly"}, "pose_mode must be"),
        ({"first_pose": (np.eye(3), np.zeros(2))}, "first pose must be"),
        ({"first_pose": np.eye(3)}, "first_pose must be a pair"),
        ({"first_pose": (2 * np.eye(3), np.zeros(3))}, "not a rotation matrix"),
    ],
)
def test_bad_generation_inputs(trained, change, message):
    c = CLIPS[0]
    args = {"audio_feats": c["audio"][:30], "style_expr": c["expression"][:40], "style_rotation": c["rotation"][:40],
            "style_translation": c["translation"][:40], **change}
    with pytest.raises(InputError, match=message):
        trained["model"].generate(**args)


# ----------------------------------------------------------------------------- baseline


def test_expression_regressor_fits_and_generates():
    torch.manual_seed(0)
    cfg = RegressorConfig(d_model=32, n_blocks=3, dropout=0.0, emotion_dim=4)
    reg = cfg.setup(D, A, toy_stats(16))
    opt = torch.optim.Adam(reg.parameters(), 3e-3)
    g = np.random.default_rng(0)
    losses = []
    for _ in range(60):
        out = reg.losses(sample_batch(g, 32, 8))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["expression"].detach()))
    assert np.mean(losses[-5:]) < 0.5 * losses[0]
    c = CLIPS[4]
    gen = reg.generate(c["audio"], emotion="happy")
    assert gen["expression"].shape == (160, D) and gen["blink"].shape == (160,)
    assert np.mean((gen["expression"] - c["expression"]) ** 2) < np.mean((c["expression"].mean(0) - c["expression"]) ** 2)
    assert reg.generate(c["audio"][:1])["expression"].shape == (1, D)
    clone = type(reg).from_spec(reg.spec())
    clone.load_state_dict(reg.state_dict())
    with pytest.raises(InputError, match="columns but the motion model was trained on"):
        reg.generate(np.zeros((10, A + 2), np.float32))
    with pytest.raises(InputError, match="shorter than one video frame"):
        reg.generate(np.zeros((0, A), np.float32))


def test_offset_head_shifts_the_expression_of_a_window_not_the_blink():
    """The offset head adds one learned static offset per window to the decoded expression (zero before
    training, so stage 2 starts from the codes alone) and is trained towards a constant shift of the speech
    relative to its style clip."""
    cfg = ADFConfig.tiny()
    assert cfg.offset_head is False and ADFConfig.from_dict({}).offset_head is False  # older bundles load
    cfg.offset_head = True
    torch.manual_seed(0)
    model = setup(D, A, cfg, MOUTH, toy_stats(cfg.window))
    model.stage1_losses(sample_batch(np.random.default_rng(0), cfg.window, 8))  # initialises the codebooks
    c = CLIPS[0]
    before = model.generate(c["audio"][:50], *style_of(c))
    head = model.expression_offset
    assert head is not None and float(head.weight.abs().sum() + head.bias.abs().sum()) == 0.0
    shift = torch.linspace(-1.0, 1.0, model.norm.latent_dim)
    with torch.no_grad():
        head.bias.copy_(shift)
    after = model.generate(c["audio"][:50], *style_of(c))
    assert np.array_equal(after["blink"], before["blink"])
    want = (shift * model.norm.expression_scale).numpy()  # no PCA here: latent = scaled expression
    assert np.allclose(after["expression"] - before["expression"], want[None], atol=1e-4)

    # stage 2 trains the head towards a constant shift of the speech relative to its style clip
    batch = sample_batch(np.random.default_rng(1), cfg.window, 8)
    with torch.no_grad():
        head.bias.zero_()
    lift = 3 * float(model.norm.expression_scale)
    grads = []
    for sign in (1.0, -1.0):
        shifted = MotionBatch(**{**batch.__dict__, "expression": batch.expression + sign * lift})
        model.zero_grad()
        model.stage2_losses(shifted)["loss"].backward()
        grads.append(head.bias.grad.clone())
    # gradient descent raises the offset for speech above its style clip and lowers it for speech below
    assert float(grads[0].mean()) < 0 < float(grads[1].mean())
