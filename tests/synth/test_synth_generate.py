"""End to end: synthetic clips, their files and their ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from erlnet.errors import InputError
from erlnet.face import topology as tp
from erlnet.face.pose import euler_from_matrix
from erlnet.io.audio import save_wav
from erlnet.synth import STYLES, TRUTH_KEYS, SynthConfig, Synthesizer, builtin_speech, generate
from erlnet.synth.face import Expression, project

FAST = dict(seconds=1.0, size=128, speech="builtin")


def _canonical(cam: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Camera-space landmarks back into the canonical frame: R^T (X - t). -> (T, 478, 3)."""
    return np.einsum("tji,tpj->tpi", R, cam - t[:, None])


def test_generate_writes_video_audio_truth_and_config(tmp_path: Path, capsys: pytest.CaptureFixture):
    res = generate(SynthConfig(**FAST, seed=3), tmp_path / "clip", progress=True)
    assert "frame" in capsys.readouterr().err  # the tqdm bar
    assert res.n_frames == 25 and res.speech_source == "builtin" and res.render_fps > 0
    assert res.video == tmp_path / "clip" / "video.mp4" and res.truth == tmp_path / "clip" / "truth.npz"
    with av.open(str(res.video)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (128, 128)
        assert sum(1 for _ in c.decode(v)) == 25
    with av.open(str(res.video)) as c:
        assert len(c.streams.audio) == 1
        samples = sum(f.samples for f in c.decode(c.streams.audio[0]))
        assert abs(samples / c.streams.audio[0].rate - 1.0) < 0.1
    truth = np.load(res.truth)
    assert set(truth.files) == set(TRUTH_KEYS)
    n = 25
    assert truth["R"].shape == (n, 3, 3) and truth["landmarks_2d"].shape == (n, 478, 2)
    assert truth["landmarks_3d"].shape == (n, 478, 3) and truth["blink"].shape == (n,)
    np.testing.assert_allclose(truth["K"], [[256, 0, 64], [0, 256, 64], [0, 0, 1]])
    R = truth["R"].astype(np.float64)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (n, 3, 3)), atol=1e-6)
    # the 2D landmarks are the projection of the 3D ones; the rigid points are the canonical ones
    np.testing.assert_allclose(truth["landmarks_2d"], project(truth["landmarks_3d"], truth["K"]), atol=1e-3)
    can = _canonical(truth["landmarks_3d"].astype(np.float64), R, truth["t"].astype(np.float64))
    np.testing.assert_allclose(can[:, tp.RIGID], np.broadcast_to(truth["canonical"][tp.RIGID], (n, len(tp.RIGID), 3)), atol=1e-5)
    np.testing.assert_allclose(truth["landmarks_px"][..., :2], truth["landmarks_2d"])
    np.testing.assert_allclose(euler_from_matrix(R, degrees=True), truth["euler_deg"], atol=1e-3)
    np.testing.assert_array_equal(truth["yaw"], truth["euler_deg"][:, 1])
    cfg = json.loads(res.config.read_text())
    assert cfg["seed"] == 3 and cfg["speech_source"] == "builtin" and cfg["style"] == json.loads(json.dumps(STYLES["neutral"].to_dict()))
    assert cfg["config"]["size"] == 128 and cfg["n_frames"] == 25
    assert not list(res.out_dir.glob(".*"))  # no scratch or partial files left behind


def test_same_seed_same_clip_different_seed_different_clip(tmp_path: Path):
    a = Synthesizer(SynthConfig(**FAST, seed=11))
    b = Synthesizer(SynthConfig(**FAST, seed=11))
    c = Synthesizer(SynthConfig(**FAST, seed=12))
    for i in (0, 9, 24):
        np.testing.assert_array_equal(a.frame(i)[0], b.frame(i)[0])
    np.testing.assert_array_equal(a.script.speech.wav, b.script.speech.wav)
    np.testing.assert_array_equal(a.landmarks_cam(), b.landmarks_cam())
    assert not np.array_equal(a.script.speech.wav, c.script.speech.wav)
    assert not np.allclose(a.script.euler_deg, c.script.euler_deg)
    assert np.abs(a.frame(20)[0].astype(int) - c.frame(20)[0].astype(int)).mean() > 0.5
    # and the files: two runs with one seed write the same truth
    t1 = np.load(generate(SynthConfig(**FAST, seed=11), tmp_path / "a", progress=False).truth)
    t2 = np.load(generate(SynthConfig(**FAST, seed=11), tmp_path / "b", progress=False).truth)
    for key in TRUTH_KEYS:
        np.testing.assert_array_equal(t1[key], t2[key])


def test_style_mouth_amplitude_is_realised(tmp_path: Path):
    cfg = dict(seconds=4.0, size=128, speech="builtin", seed=5)
    loud = Synthesizer(SynthConfig(**cfg, style="expressive"))
    soft = Synthesizer(SynthConfig(**cfg, style="subdued"))
    np.testing.assert_array_equal(loud.script.speech.wav, soft.script.speech.wav)  # same audio
    asked = STYLES["expressive"].mouth_amplitude / STYLES["subdued"].mouth_amplitude
    param = np.asarray(loud.script.expression().open).mean() / np.asarray(soft.script.expression().open).mean()
    assert param == pytest.approx(asked, rel=0.10)
    gaps = []
    for s in (loud, soft):  # the realised lip gap, measured on the 3D landmarks
        can = _canonical(s.landmarks_cam(), s.script.R, s.script.t)
        gaps.append((can[:, 14, 1] - can[:, 13, 1]).mean())
    assert gaps[0] / gaps[1] == pytest.approx(asked, rel=0.10)


def test_frames_change_where_the_mouth_moves(tmp_path: Path):
    synth = Synthesizer(SynthConfig(seconds=2.0, size=128, speech="builtin", seed=2, style="still"))
    frames = np.stack([f.astype(np.float32) for f in synth.frames()])
    opening = np.asarray(synth.script.expression().open)
    lms = synth.renderer.portrait.landmarks[:, :2]
    x0, y0 = lms[tp.LIPS_OUTER].min(axis=0).astype(int) - 2
    x1, y1 = lms[tp.LIPS_OUTER].max(axis=0).astype(int) + 8
    ref = int(np.argmin(opening))
    mouth = np.abs(frames[:, y0:y1, x0:x1] - frames[ref, y0:y1, x0:x1]).mean(axis=(1, 2, 3))
    assert np.corrcoef(mouth, opening)[0, 1] > 0.7
    # the same poses with the photo's own mouth: only the lower face differs, by the opening
    r, script = synth.renderer, synth.script
    fixed = []
    for i in range(0, synth.n_frames, 5):
        e = script.frame_expression(i)
        e = Expression(**{**e.__dict__, "open": r.model.open0})
        fixed.append(np.abs(frames[i] - r.render(script.R[i], script.t[i], e)))
    fixed = np.stack(fixed)
    above_nose = int(lms[tp.NOSE_TIP, 1]) - 4
    assert fixed[:, :above_nose].max() == 0
    moved = fixed[:, y0:y1, x0:x1].mean(axis=(1, 2, 3))
    assert np.corrcoef(moved, np.abs(opening[::5] - r.model.open0))[0, 1] > 0.9


def test_speech_from_a_file_sets_the_length(tmp_path: Path):
    wav = builtin_speech(1.2, np.random.default_rng(0)).wav
    save_wav(tmp_path / "speech.wav", wav)
    res = generate(SynthConfig(seconds=10, size=64, audio=tmp_path / "speech.wav"), tmp_path / "out", progress=False)
    assert res.n_frames == 30 and res.speech_source == f"file:{tmp_path / 'speech.wav'}"
    cfg = json.loads(res.config.read_text())
    assert cfg["config"]["audio"] == str(tmp_path / "speech.wav")


def test_bad_inputs_raise_input_errors(tmp_path: Path):
    with pytest.raises(InputError, match="not found"):
        generate(SynthConfig(seconds=1, size=64, audio=tmp_path / "nope.wav"), tmp_path / "x", progress=False)
    with pytest.raises(InputError, match="unknown style 'sleepy'; choose one of: neutral"):
        generate(SynthConfig(seconds=1, style="sleepy"), tmp_path / "x", progress=False)
    with pytest.raises(InputError, match="even integer"):
        SynthConfig(size=101).validate()
    with pytest.raises(InputError, match="positive"):
        SynthConfig(seconds=-1).validate()
    with pytest.raises(InputError, match="audio file was given"):
        SynthConfig(audio=tmp_path / "a.wav", speech="builtin").validate()
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="not a directory"):
        generate(SynthConfig(**FAST), tmp_path / "file", progress=False)
