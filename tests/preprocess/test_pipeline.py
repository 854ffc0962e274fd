"""The preprocessing pipeline on a tiny generated clip: completeness, resumability, caching, bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from erlnet.cli import main
from erlnet.errors import InputError
from erlnet.io.subject import Manifest, Subject
from erlnet.io.video import VideoWriter
from erlnet.preprocess import pipeline
from erlnet.preprocess.pipeline import PreprocessConfig, run_preprocess
from media import portrait_frames

N = 16
CFG = PreprocessConfig(size=128)



@pytest.fixture(scope="module")
def face_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vid") / "face.mp4"
    t = np.arange(int(N / 25 * 16000)) / 16000
    wav = (0.2 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    with VideoWriter(path, fps=25, audio=wav) as w:
        for f in portrait_frames(N):
            w.write(f)
    return path


@pytest.fixture(scope="module")
def subject_dir(face_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("subj") / "s"
    run_preprocess(face_video, root, CFG, show_progress=False)
    return root


def test_complete_subject(subject_dir: Path) -> None:
    s = Subject(subject_dir)
    m = s.manifest
    assert m.complete and m.n_frames == N and m.size == 128 and m.has_audio
    assert m.K.shape == (3, 3) and m.K[0, 0] == pytest.approx(2.0 * 128)
    assert len(list((subject_dir / "frames").glob("*.jpg"))) == N
    assert len(list((subject_dir / "masks").glob("*.png"))) == N
    assert s.frame(3).shape == (128, 128, 3) and s.mask(3).shape == (128, 128)
    assert set(np.unique(s.mask(0))) <= {0, 1, 2} and (s.mask(0) == 2).any()
    tr = s.tracking()
    assert tr["landmarks"].shape == (N, 478, 3) and tr["rotation"].shape == (N, 3, 3)
    assert tr["expression"].shape[0] == N and tr["blink"].shape == (N,)
    assert tr["valid"].all()
    (feat,) = (subject_dir / "audio").glob("*.npy")
    assert s.audio_features(feat.stem).shape[0] == N
    assert m.split["train"][0] == 0 and m.split["test"][1] == N
    assert m.source["sha256"] and m.tools["mediapipe"] == "0.10.21"


def test_rerun_skips_and_changed_params_redo_only_dependants(face_video: Path, tmp_path: Path) -> None:
    root = tmp_path / "s"
    first = run_preprocess(face_video, root, CFG, show_progress=False)
    assert not any(r.skipped for r in first)
    again = run_preprocess(face_video, root, CFG, show_progress=False)
    assert all(r.skipped for r in again)
    changed = run_preprocess(face_video, root, replace(CFG, jpeg_quality=80), show_progress=False)
    assert {r.name for r in changed if not r.skipped} == {"frames"}
    changed = run_preprocess(face_video, root, replace(CFG, crop_scale=2.4, jpeg_quality=80), show_progress=False)
    assert {r.name for r in changed if not r.skipped} == {"motion", "frames", "features"}
    assert Subject(root).manifest.complete


def test_interrupted_run_never_looks_complete_and_resumes(
    face_video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "s"
    calls = {"n": 0}
    real = pipeline.label_map

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "label_map", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_preprocess(face_video, root, CFG, show_progress=False)
    m = Manifest.from_json((root / "manifest.json").read_text())
    assert not m.complete and set(m.steps) == {"track", "motion"}
    assert not (root / "frames").exists()  # the partial output was never moved into place
    monkeypatch.setattr(pipeline, "label_map", real)
    resumed = run_preprocess(face_video, root, CFG, show_progress=False)
    assert {r.name for r in resumed if r.skipped} == {"track", "motion"}
    assert Subject(root).manifest.complete


def test_video_without_audio_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "mute.mp4"
    with VideoWriter(path, fps=25) as w:
        for f in portrait_frames(8):
            w.write(f)
    run_preprocess(path, tmp_path / "s", CFG, show_progress=False)
    s = Subject(tmp_path / "s")
    assert not s.manifest.has_audio and not (tmp_path / "s" / "audio.wav").exists()


def test_refuses_a_non_subject_directory(face_video: Path, tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match="not an erlnet subject"):
        run_preprocess(face_video, tmp_path, CFG, show_progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def _bad_inputs(tmp_path: Path, face_video: Path) -> dict[str, tuple[Path, str]]:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 100)
    cut = tmp_path / "cut.mp4"
    data = face_video.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    blank = tmp_path / "blank.mp4"
    with VideoWriter(blank, fps=25) as w:
        for i in range(10):
            w.write(np.full((96, 96, 3), 40 + i, np.uint8))
    return {
        "missing": (tmp_path / "nope.mp4", "no such file"),
        "zero length": (empty, "zero length"),
        "not a video": (text, "not a readable video"),
        "corrupt": (cut, "erlnet: error:"),
        "no face": (blank, "no face found"),
    }


@pytest.mark.parametrize("case", ["missing", "zero length", "not a video", "corrupt", "no face"])
def test_bad_input_gives_one_line_error_and_leaves_nothing(
    case: str, face_video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video, message = _bad_inputs(tmp_path, face_video)[case]
    out = tmp_path / "subject"
    code = main(["preprocess", str(video), "-o", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and err.startswith("erlnet: error:")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_cli_preprocess_prints_summary(face_video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s"
    code = main(["preprocess", str(face_video), "-o", str(out), "--size", "128", "-q"])
    assert code == 0
    assert f"{N} frames" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["complete"] is True


def test_competing_faces_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "two.mp4"
    with VideoWriter(path, fps=25) as w:
        for f in portrait_frames(12):
            w.write(np.ascontiguousarray(np.concatenate([f, f[:, ::-1]], axis=1)))
    code = main(["preprocess", str(path), "-o", str(tmp_path / "s"), "-q"])
    assert code == 2
    assert "several faces compete" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
