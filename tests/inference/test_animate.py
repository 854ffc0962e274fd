"""`erlnet animate`: frame count, retargeting, pose modes, the bundle round trip and bad inputs.

The motion model is untrained (statistics only): these tests check the plumbing, not motion quality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from erlnet.errors import FormatError, InputError
from erlnet.face.pose import matrix_from_euler, rotation_angle_deg
from erlnet.inference.animate import (
    AnimateConfig,
    StyleClip,
    animate,
    fit_track,
    load_motion_model,
    mean_pose,
    retarget_pose,
    save_motion_model,
)
from erlnet.io.audio import save_wav
from erlnet.types import Motion

N_STYLE = 30  # frames of the style video (the tiny model needs >= 25)


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * 16000))) / 16000
    env = np.clip(np.sin(2 * np.pi * 3.3 * t), 0, None)
    return (0.3 * env * np.sin(2 * np.pi * 160 * t) + 1e-3 * rng.normal(size=t.size)).astype(np.float32)


def _bundle(corpus_root: Path, out: Path, stages: dict[str, int] | None = None, audio=None) -> Path:
    from erlnet.motion.config import ADFConfig, compute_statistics
    from erlnet.motion.corpus import Corpus

    c = Corpus(corpus_root)
    clips = [c.load(x) for x in c.select("train")]
    stats = compute_statistics([x.expression for x in clips], [x.rotation for x in clips],
                               [x.translation for x in clips], [x.audio for x in clips], window=16)
    model = ADFConfig.tiny().setup(c.expression_dim, c.audio_dim, statistics=stats)
    return save_motion_model(out, model, None, audio or c.audio_config, c.representation_config,
                             {"stages": stages or {"stage1": 1, "stage2": 1}})


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A toy corpus, an untrained bundle, a face video (with speech) and its tracking-only subject."""
    from skimage import data

    from erlnet.io.video import VideoWriter
    from erlnet.motion.corpus import toy_corpus
    from erlnet.preprocess.pipeline import PreprocessConfig, run_preprocess

    base = tmp_path_factory.mktemp("animate")
    toy_corpus(base / "corpus", n_speech=3, n_style=1, seconds=2.0)
    img = data.astronaut()
    video = base / "style.mp4"
    with VideoWriter(video, fps=25, audio=_speech(N_STYLE / 25)) as w:
        for i in range(N_STYLE):
            dx, dy = int(round(3 * np.sin(i / 3))), int(round(2 * np.cos(i / 4)))
            w.write(np.ascontiguousarray(img[10 + dy : 266 + dy, 110 + dx : 366 + dx]))
    run_preprocess(video, base / "subject", PreprocessConfig(size=128, tracking_only=True), show_progress=False)
    save_wav(base / "speech.wav", _speech(1.3), 16000)
    return {"corpus": base / "corpus", "model": _bundle(base / "corpus", base / "model"), "video": video,
            "subject": base / "subject", "wav": base / "speech.wav", "base": base}


@pytest.fixture(scope="module")
def style(env: dict[str, Path]) -> StyleClip:
    from erlnet.motion.corpus import Corpus

    c = Corpus(env["corpus"])
    d = c.load(c.select("train", audio=True)[0])
    return StyleClip(d.expression, d.rotation, d.translation, d.neutral, 25.0, d.info.id)


@pytest.mark.parametrize(("seconds", "frames"), [(1.0, 25), (1.23, 30), (0.04, 1)])
def test_one_frame_per_40_ms_of_audio(env: dict[str, Path], style: StyleClip, seconds: float, frames: int) -> None:
    m = animate(_speech(seconds), style, env["model"])
    assert len(m) == frames and m.fps == 25.0 and m.representation == "landmarks"
    assert m.expression.shape == (frames, style.expression.shape[1])
    assert np.isfinite(m.expression).all() and np.all((m.blink >= 0) & (m.blink <= 1))
    assert np.allclose(m.rotation @ np.swapaxes(m.rotation, 1, 2), np.eye(3), atol=1e-4)


def test_style_video_and_subject_retargeting_through_the_cli(env: dict[str, Path], tmp_path: Path) -> None:
    from erlnet.cli import main

    out = tmp_path / "motion.npz"
    code = main(["animate", "--audio", str(env["wav"]), "--style", str(env["video"]), "--model", str(env["model"]),
                 "--subject", str(env["subject"]), "--pose", "static", "-o", str(out), "-q"])
    assert code == 0
    m = Motion.load(out)
    assert len(m) == 32  # 1.3 s
    from erlnet.io.subject import Subject

    tr = Subject(env["subject"]).tracking()
    r_ref, t_ref = mean_pose(tr["rotation"], tr["translation"])
    assert np.abs(m.rotation - r_ref).max() < 1e-5  # static head: exactly the subject's mean pose
    assert np.allclose(m.translation, t_ref, atol=1e-6)


def test_pose_from_another_clip_keeps_its_motion(env: dict[str, Path], style: StyleClip) -> None:
    m = animate(_speech(1.0), style, env["model"], config=AnimateConfig(pose=f"from:{env['subject']}"))
    from erlnet.io.subject import Subject

    rot = Subject(env["subject"]).tracking()["rotation"]
    want = np.swapaxes(rot[:-1], 1, 2) @ rot[1:]  # frame-to-frame motion in the head frame
    got = np.swapaxes(m.rotation[:-1], 1, 2) @ m.rotation[1:]
    assert len(m) == 25 and np.abs(got - want[:24]).max() < 1e-5  # same motion, re-attached elsewhere
    assert np.abs(m.rotation[0] - rot[0]).max() > 1e-3  # ... to the style clip's reference, not the clip's


def test_retarget_and_fit_track() -> None:
    R = matrix_from_euler(np.array([[0, 5, 0], [0, 10, 0]]), degrees=True)
    t = np.array([[0.0, 0.0, 0.5], [0.01, 0.0, 0.5]])
    src = (matrix_from_euler(np.array([0, 5, 0]), degrees=True), np.array([0.0, 0.0, 0.5]))
    tgt = (np.eye(3), np.array([0.0, 0.0, 0.8]))
    r2, t2 = retarget_pose(R, t, src, tgt)
    assert rotation_angle_deg(r2[0], np.eye(3)) == pytest.approx(0.0, abs=1e-4)
    assert rotation_angle_deg(r2[1], np.eye(3)) == pytest.approx(5.0, abs=1e-3)
    assert np.allclose(t2, [[0, 0, 0.8], [0.01, 0, 0.8]])
    x = np.arange(4)
    assert fit_track(x, 9).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2]  # forwards and back: no jumps
    assert fit_track(x, 2).tolist() == [0, 1]


def test_bundle_round_trip_generates_the_same_motion(env: dict[str, Path], style: StyleClip) -> None:
    mm = load_motion_model(env["model"])
    a = animate(_speech(1.0), style, mm, config=AnimateConfig(seed=3))
    b = animate(_speech(1.0), style, load_motion_model(env["model"]), config=AnimateConfig(seed=3))
    assert np.array_equal(a.expression, b.expression) and np.array_equal(a.rotation, b.rotation)


def test_bad_inputs_give_clear_errors(env: dict[str, Path], style: StyleClip, tmp_path: Path) -> None:
    model = load_motion_model(env["model"])
    with pytest.raises(InputError, match="shorter than one video frame"):
        animate(_speech(0.02), style, model)
    silent = tmp_path / "silent.wav"
    save_wav(silent, np.zeros(16000, np.float32), 16000)
    with pytest.raises(InputError, match="silent"):
        animate(silent, style, model)
    with pytest.raises(InputError, match="unknown emotion"):
        animate(_speech(1.0), style, model, config=AnimateConfig(emotion="grumpy"))
    with pytest.raises(InputError, match="--pose"):
        animate(_speech(1.0), style, model, config=AnimateConfig(pose="wobbly"))
    short = StyleClip(style.expression[:10], style.rotation[:10], style.translation[:10], style.neutral, 25.0, "s")
    with pytest.raises(InputError, match="style clip is 10 frames"):
        animate(_speech(1.0), short, model)


def test_style_clip_without_a_face(env: dict[str, Path], tiny_video) -> None:
    blank = tiny_video(n=N_STYLE, size=96, audio=False, name="blank.mp4")
    with pytest.raises(InputError, match="no face found"):
        animate(_speech(1.0), blank, env["model"])


def test_mismatched_rates_are_refused(env: dict[str, Path], style: StyleClip, tmp_path: Path) -> None:
    import json
    import shutil

    from erlnet.audio.base import MelFormantConfig

    other = _bundle(env["corpus"], tmp_path / "m30", audio=MelFormantConfig(fps=30.0))
    with pytest.raises(InputError, match="30 rows/s but the motion model runs at 25"):
        animate(_speech(1.0), style, other)
    s30 = shutil.copytree(env["subject"], tmp_path / "s30")  # a style subject tracked at 30 frames/s
    manifest = json.loads((s30 / "manifest.json").read_text())
    (s30 / "manifest.json").write_text(json.dumps(manifest | {"fps": 30.0}))
    with pytest.raises(InputError, match="30 frames/s"):
        animate(_speech(1.0), s30, env["model"])
    with pytest.raises(InputError, match="30 frames/s"):
        animate(_speech(1.0), style, env["model"], subject=s30)


def test_unfinished_or_foreign_bundles(env: dict[str, Path], style: StyleClip, tmp_path: Path) -> None:
    half = _bundle(env["corpus"], tmp_path / "half", stages={"stage1": 5, "stage2": 0})
    with pytest.raises(InputError, match="stage 2"):
        animate(_speech(1.0), style, half)
    with pytest.raises(FormatError, match="no such"):
        load_motion_model(tmp_path / "nothing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{}")
    (tmp_path / "junk" / "model.safetensors").write_bytes(b"")
    with pytest.raises(FormatError):
        load_motion_model(tmp_path / "junk")
