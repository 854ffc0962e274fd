"""`erlnet generate` end to end on tiny untrained models: frame count, audio track, head-pose
attachment, text-to-speech, and clear errors for bad inputs (plumbing, not quality)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from erlnet.errors import InputError
from erlnet.inference.generate import GenerateConfig, generate
from erlnet.io.audio import save_wav
from erlnet.io.video import count_streams
from erlnet.types import Motion
from media import portrait_frames

SIZE = 32  # avatar output, pixels
N_FRAMES = 30  # the tiny motion model needs >= 25 style frames
TINY = dict(feature_scale=4, feature_dim=6, head_samples=4, torso_samples=4, plane_resolution=16, plane_levels=1,
            plane_channels=4, torso_plane_resolution=8, hidden=8, expression_code_dim=4, expression_hidden=8,
            deform_hidden=8, upsampler_channels=8)


@pytest.fixture(autouse=True)
def _single_thread(one_thread) -> None:
    """One torch thread (tests/conftest.py)."""


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Syllable-like bursts of a 160 Hz buzz, (S,) float32 at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * 16000))) / 16000
    env = np.clip(np.sin(2 * np.pi * 3.3 * t), 0, None)
    return (0.3 * env * np.sin(2 * np.pi * 160 * t) + 1e-3 * rng.normal(size=t.size)).astype(np.float32)


def _avatar(subject: Path, out: Path, dim: int | None = None, keep_source: bool = True) -> Path:
    """A randomly initialised tiny avatar of `subject` (expression width `dim`, default the subject's)."""
    from erlnet.io.subject import Subject
    from erlnet.render.avatar import AvatarMeta, save_avatar
    from erlnet.render.dbf import DBFConfig

    meta = AvatarMeta.from_subject(Subject(subject), SIZE)
    if dim is not None:
        meta.expression_dim = dim
    if not keep_source:
        meta.source = {"subject": str(out / "gone"), "sha256": ""}
    torch.manual_seed(0)
    save_avatar(out, DBFConfig(**TINY).setup(meta.expression_dim, SIZE), meta)
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A preprocessed portrait subject (style + pose reference), its avatar, an untrained motion model."""
    from erlnet.inference.animate import save_motion_model
    from erlnet.io.video import VideoWriter
    from erlnet.motion.config import ADFConfig, compute_statistics
    from erlnet.motion.corpus import toy_corpus
    from erlnet.preprocess.pipeline import PreprocessConfig, run_preprocess

    base = tmp_path_factory.mktemp("generate")
    with VideoWriter(base / "face.mp4", fps=25, audio=speech(N_FRAMES / 25)) as w:
        for f in portrait_frames(N_FRAMES):
            w.write(f)
    run_preprocess(base / "face.mp4", base / "subject", PreprocessConfig(size=128), show_progress=False)
    c = toy_corpus(base / "corpus", n_speech=2, n_style=1, seconds=2.0)
    clips = [c.load(x) for x in c.select("train")]
    stats = compute_statistics([x.expression for x in clips], [x.rotation for x in clips],
                               [x.translation for x in clips], [x.audio for x in clips], window=16)
    model = ADFConfig.tiny().setup(c.expression_dim, c.audio_dim, statistics=stats)
    save_motion_model(base / "model", model, None, c.audio_config, c.representation_config,
                      {"stages": {"stage1": 1, "stage2": 1}})
    save_wav(base / "speech.wav", speech(1.3), 16000)
    return {"subject": base / "subject", "avatar": _avatar(base / "subject", base / "avatar"),
            "model": base / "model", "wav": base / "speech.wav", "base": base}


def audio_track_seconds(path: Path) -> float:
    """Duration of the audio stream as the mp4 records it (read with PyAV). Decoding yields up to one
    AAC frame (1024 samples) more: the encoder pads the last frame and the edit list trims it."""
    import av

    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        return float(a.duration * a.time_base)


def _config(env: dict[str, Path], out: Path, **kw: object) -> GenerateConfig:
    return GenerateConfig(avatar=env["avatar"], model=env["model"], style=env["subject"], output=out, **kw)


def test_cli_writes_one_frame_per_40_ms_and_the_whole_audio(env: dict[str, Path], tmp_path: Path) -> None:
    from erlnet.cli import main

    out, motion = tmp_path / "out.mp4", tmp_path / "motion.npz"
    code = main(["generate", "--avatar", str(env["avatar"]), "--model", str(env["model"]), "--style",
                 str(env["subject"]), "--audio", str(env["wav"]), "--motion-output", str(motion), "-o", str(out), "-q"])
    assert code == 0
    counts = count_streams(out)  # decoded back with PyAV
    assert counts.video_frames == 32 and (counts.width, counts.height) == (SIZE, SIZE)  # floor(1.3 s x 25)
    assert audio_track_seconds(out) == pytest.approx(1.3, abs=1e-3)
    assert 1.3 <= counts.audio_seconds <= 1.3 + 1024 / 16000
    m = Motion.load(motion)
    assert len(m) == 32 and m.expression.shape[1] == 1434


def test_head_is_attached_to_the_subject_or_the_avatar_reference_pose(env: dict[str, Path], tmp_path: Path) -> None:
    from erlnet.inference.animate import AnimateConfig, mean_pose
    from erlnet.io.subject import Subject
    from erlnet.render.avatar import load_avatar

    static = AnimateConfig(pose="static")
    tr = Subject(env["subject"]).tracking()
    r_subj, t_subj = mean_pose(tr["rotation"], tr["translation"])
    res = generate(_config(env, tmp_path / "a.mp4", audio=env["wav"], motion_output=tmp_path / "a.npz", animate=static))
    m = Motion.load(tmp_path / "a.npz")
    assert np.abs(m.rotation - r_subj).max() < 1e-5 and np.allclose(m.translation, t_subj, atol=1e-6)
    assert res.frames == 32 and res.audio_seconds == pytest.approx(1.3)
    assert res.motion_seconds > 0 and res.render_seconds > 0 and res.compute_per_audio_second > 0
    # an avatar whose training subject is gone: the head goes to the avatar's reference pose
    lone = _avatar(env["subject"], tmp_path / "lone", keep_source=False)
    generate(GenerateConfig(avatar=lone, model=env["model"], style=env["subject"], output=tmp_path / "b.mp4",
                            audio=env["wav"], motion_output=tmp_path / "b.npz", animate=static))
    m = Motion.load(tmp_path / "b.npz")
    meta = load_avatar(lone, device="cpu").meta
    assert np.abs(m.rotation - meta.ref_rotation).max() < 1e-5 and np.allclose(m.translation, meta.ref_translation, atol=1e-6)


def _fake_tts(bin_dir: Path) -> None:
    """An `espeak-ng` on PATH that writes 0.9 s of buzz to the file after -w (the real one speaks)."""
    bin_dir.mkdir()
    exe = bin_dir / "espeak-ng"
    exe.write_text(f"""#!{sys.executable}
import array, math, sys, wave
n = int(0.9 * 16000)
x = array.array("h", (int(9000 * max(0.0, math.sin(2 * math.pi * 3 * i / 16000)) * math.sin(2 * math.pi * 150 * i / 16000))
                      for i in range(n)))
with wave.open(sys.argv[sys.argv.index("-w") + 1], "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000); w.writeframes(x.tobytes())
""")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)


def test_text_is_spoken_by_a_local_tts_or_says_how_to_install_one(env: dict[str, Path], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(InputError, match=r"apt install espeak-ng.*brew install espeak-ng"):
        generate(_config(env, tmp_path / "t.mp4", text="Hello there."))
    _fake_tts(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ.get("PATH", ""))
    res = generate(_config(env, tmp_path / "t.mp4", text="Hello there."))
    assert res.speech_source == "tts:espeak-ng" and res.frames == 22  # floor(0.9 s x 25)
    assert audio_track_seconds(res.video) == pytest.approx(0.9, abs=1e-3)


def test_bad_inputs_give_clear_errors(env: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "x.mp4"
    with pytest.raises(InputError, match="no such avatar directory"):
        generate(GenerateConfig(avatar=tmp_path / "nope", model=env["model"], style=env["subject"], output=out,
                                audio=env["wav"]))
    short = tmp_path / "short.wav"
    save_wav(short, speech(0.02), 16000)
    with pytest.raises(InputError, match="shorter than one video frame"):
        generate(_config(env, out, audio=short))
    with pytest.raises(InputError, match="exactly one of --audio"):
        generate(_config(env, out, audio=env["wav"], text="hi"))
    with pytest.raises(InputError, match="exactly one of --audio"):
        generate(_config(env, out))
    with pytest.raises(InputError, match=r"\.mp4"):
        generate(_config(env, tmp_path / "x.avi", audio=env["wav"]))
    with pytest.raises(InputError, match="no such style clip"):
        generate(GenerateConfig(avatar=env["avatar"], model=env["model"], style=tmp_path / "none.mp4", output=out,
                                audio=env["wav"]))
    other = _avatar(env["subject"], tmp_path / "other", dim=12)
    with pytest.raises(InputError, match="1434 values, the avatar expects 'landmarks' with 12"):
        generate(GenerateConfig(avatar=other, model=env["model"], style=env["subject"], output=out, audio=env["wav"]))
    assert not out.exists()
