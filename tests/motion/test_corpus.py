"""The motion corpus: naming rules, held-out choice, envelope, neutral re-referencing, and a build
from tiny generated face clips (one bad file among them) that resumes without redoing work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from erlnet.errors import FormatError, InputError
from erlnet.face import topology as tp
from erlnet.face.representation import LandmarkRepresentationConfig
from erlnet.motion.corpus import (
    ClipInfo,
    Corpus,
    CorpusConfig,
    build_corpus,
    choose_heldout,
    discover_clips,
    find_audio,
    frame_envelope,
    parse_clip_name,
    rereference,
    toy_corpus,
)
from media import portrait_frames

N = 16



def _speech(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.2 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)


def _write_video(path: Path, audio: bool) -> Path:
    from erlnet.io.video import VideoWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(path, fps=25, audio=_speech(N / 25) if audio else None) as w:
        for f in portrait_frames(N):
            w.write(f)
    return path


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """set1/video/{W009_front_angry_level3_001, obama_clip1, broken}.mp4 and set1/wav/obama_clip1.wav."""
    from erlnet.io.audio import save_wav

    root = tmp_path_factory.mktemp("clips") / "set1"
    _write_video(root / "video" / "W009_front_angry_level3_001.mp4", audio=True)
    _write_video(root / "video" / "obama_clip1.mp4", audio=False)
    (root / "wav").mkdir()
    save_wav(root / "wav" / "obama_clip1.wav", _speech(0.7), 16000)
    (root / "video" / "broken.mp4").write_bytes(b"this is not a video" * 50)
    return root


@pytest.fixture(scope="module")
def built(clip_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("corpus") / "c"
    report = build_corpus([clip_dir / "video"], out, CorpusConfig(size=128), show_progress=False)
    return out, report


# ---------------------------------------------------------------- pure functions
def test_parse_clip_names() -> None:
    assert parse_clip_name("M030_front_angry_level3_001") == {"speaker": "M030", "emotion": "angry"}
    assert parse_clip_name("bbaf2n", Path("/data/grid_s1/video/bbaf2n.mpg")) == {"speaker": "s1", "emotion": None}
    assert parse_clip_name("feifeili_clip2_short") == {"speaker": "feifeili", "emotion": None}
    assert parse_clip_name("face_3") == {"speaker": None, "emotion": None}


def _info(cid: str, source: str, audio: bool = True, speaker: str = "s", emotion: str | None = None) -> ClipInfo:
    return ClipInfo(id=cid, source=source, speaker=speaker, video="", file="", n_frames=10, fps=25.0,
                    has_audio=audio, emotion=emotion)


def test_heldout_is_whole_clips_deterministic_and_per_source() -> None:
    grid = [_info(f"grid-{i:03d}", "grid") for i in range(40)]
    small = [_info(f"st-{i}", "styletalk") for i in range(3)]
    single = [_info("sad-0", "sadtalker")]
    mead = [_info(f"mead-{s}_{e}", "mead", audio=False, speaker=s, emotion=e)
            for s in ("M030", "W009") for e in ("angry", "happy", "neutral")]
    clips = grid + small + single + mead
    held = choose_heldout(clips, fraction=0.1, min_clips_for_fraction=20)
    assert held == choose_heldout(list(reversed(clips)), 0.1, 20)  # order does not matter
    assert sum(h.startswith("grid-") for h in held) == 4
    assert sum(h.startswith("st-") for h in held) == 1
    assert "sad-0" not in held  # a lone clip stays in training
    held_mead = [c for c in mead if c.id in held]
    assert len(held_mead) == 3 and len({c.speaker for c in held_mead}) == 1  # one whole actor


def test_frame_envelope_levels() -> None:
    sr, fps = 16000, 25.0
    t = np.arange(sr) / sr
    tone = (0.5 * np.sin(2 * np.pi * 250 * t)).astype(np.float32)  # 250 Hz: whole periods per frame
    env = frame_envelope(np.concatenate([tone, np.zeros(sr, np.float32)]), sr, 60, fps)
    assert env.shape == (60,)
    assert np.allclose(env[:25], 20 * np.log10(0.5 / np.sqrt(2)), atol=0.05)
    assert np.all(env[25:] == pytest.approx(-100.0))  # silence, also past the end of the audio


def test_find_audio_next_to_or_beside_the_video_folder(tmp_path: Path) -> None:
    video = tmp_path / "set" / "video" / "x.mp4"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"")
    assert find_audio(video) is None
    (tmp_path / "set" / "wav").mkdir()
    (tmp_path / "set" / "wav" / "x.wav").write_bytes(b"")
    assert find_audio(video) == tmp_path / "set" / "wav" / "x.wav"
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "x.flac").write_bytes(b"")
    assert find_audio(video, audio_dir=other) == other / "x.flac"


def test_discover_rejects_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        discover_clips([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no video files"):
        discover_clips([tmp_path / "empty"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not a video file"):
        discover_clips([tmp_path / "notes.txt"])
    (tmp_path / "v.mp4").write_bytes(b"")
    (src,) = discover_clips([f"mine={tmp_path / 'v.mp4'}"])
    assert src.source == "mine"


def test_rereference_keeps_expression_under_similarity_and_exposes_held_offsets() -> None:
    rep = LandmarkRepresentationConfig().setup()
    rng = np.random.default_rng(0)
    neutral = rng.normal(0, 0.04, size=(478, 3)).astype(np.float32)
    neutral[33], neutral[263] = (-0.0475, 0, 0), (0.0475, 0, 0)
    expr = rng.normal(0, 0.01, size=(5, rep.dim)).astype(np.float32)
    moved = 1.1 * neutral + np.array([0.01, -0.02, 0.3], np.float32)  # same face, other scale and place
    assert np.allclose(rereference(expr, neutral, moved, rep), expr, atol=1e-5)
    # A clip whose calm frames frown: against the true neutral the frown reappears in every frame.
    frowning = neutral.copy()
    frowning[tp.BROWS, 1] += 0.005
    out = rereference(expr, frowning, neutral, rep).reshape(5, 478, 3)
    unit = 0.095
    assert np.allclose(out[:, tp.BROWS, 1] - expr.reshape(5, 478, 3)[:, tp.BROWS, 1], 0.005 / unit, atol=2e-3)


def test_toy_corpus_is_loadable_and_in_sync(tmp_path: Path) -> None:
    c = toy_corpus(tmp_path / "toy", n_speech=3, n_style=1, seconds=2.0)
    assert len(c.select("all", audio=True)) == 3 and len(c.select("all", audio=False)) == 8
    clip = c.load(c.select("all", audio=True)[0])
    lms = c.representation.decode(clip.expression, clip.neutral)
    r = np.corrcoef(tp.mouth_opening(lms), clip.envelope)[0, 1]
    assert r > 0.8
    with pytest.raises(InputError, match="not empty"):
        toy_corpus(tmp_path / "toy")


def test_corpus_rejects_foreign_directories(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such"):
        Corpus(tmp_path / "nothing")
    (tmp_path / "x").mkdir()
    with pytest.raises(FormatError, match="not an erlnet motion corpus"):
        Corpus(tmp_path / "x")


# ---------------------------------------------------------------- a real (tiny) build
def test_build_keeps_good_clips_and_logs_the_bad_one(built: tuple[Path, object]) -> None:
    root, report = built
    assert len(report.failed) == 1 and "broken.mp4" in report.failed[0]["video"]
    doc = json.loads((root / "corpus.json").read_text())
    assert doc["failed"][0]["reason"]
    c = Corpus(root)
    by_name = {Path(x.video).stem: x for x in c.clips}
    mead, obama = by_name["W009_front_angry_level3_001"], by_name["obama_clip1"]
    assert (mead.speaker, mead.emotion, mead.source) == ("W009", "angry", "set1")
    assert obama.speaker == "obama" and obama.has_audio and obama.audio.endswith("obama_clip1.wav")
    for info in (mead, obama):
        d = c.load(info)
        assert len(d) == N and d.expression.shape == (N, c.expression_dim)
        assert d.audio.shape == (N, c.audio_dim) and d.envelope.shape == (N,)
        assert d.rotation.shape == (N, 3, 3) and np.isfinite(d.expression).all()
    # 0.7 s of speech for 0.64 s of video; the wav's end is cut, the start is loud
    assert c.load(obama).envelope.max() > -30
    assert not (root / "cache").exists() or not any((root / "cache").iterdir())  # cache removed by default


def test_rerun_skips_finished_clips_and_resumes_without_corpus_json(built: tuple[Path, object],
                                                                     clip_dir: Path) -> None:
    root, _ = built
    again = build_corpus([clip_dir / "video"], root, CorpusConfig(size=128), show_progress=False)
    assert not again.added and len(again.skipped) == 2 and len(again.failed) == 1
    (root / "corpus.json").unlink()  # as if the first build had been interrupted before the end
    resumed = build_corpus([clip_dir / "video"], root, CorpusConfig(size=128), show_progress=False)
    assert not resumed.added and len(resumed.skipped) == 2
    with pytest.raises(InputError, match="other size"):
        build_corpus([clip_dir / "video"], root, CorpusConfig(size=160), show_progress=False)



def test_corpus_command(clip_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from erlnet.cli import main

    out = tmp_path / "cli"
    assert main(["corpus", str(clip_dir / "video" / "obama_clip1.mp4"), "-o", str(out), "--size", "128", "-q"]) == 0
    assert "1 clips" in capsys.readouterr().out and Corpus(out).clips[0].speaker == "obama"
    assert main(["corpus", "-o", str(tmp_path / "none"), "-q"]) == 2  # nothing to add: a one-line error
    assert "give clips" in capsys.readouterr().err

@pytest.mark.realdata
def test_real_clips_get_labels_and_speech_in_sync(shared_data: Path, tmp_path: Path) -> None:
    grid = shared_data / "grid_s1" / "video" / "bbaf2n.mpg"
    mead = shared_data / "mead_style" / "W009_front_happy_level3_001.mp4"
    if not grid.exists() or not mead.exists():
        pytest.skip("GRID / MEAD clips not found in the shared data")
    report = build_corpus([grid, mead], tmp_path / "c", show_progress=False)
    assert not report.failed
    c = Corpus(tmp_path / "c")
    by_source = {x.source: x for x in c.clips}
    g, m = by_source["grid_s1"], by_source["mead_style"]
    assert (g.speaker, g.has_audio, g.n_frames) == ("s1", True, 75)
    assert (m.speaker, m.emotion, m.has_audio) == ("W009", "happy", False)
    d = c.load(g)
    opening = tp.mouth_opening(c.representation.decode(d.expression, d.neutral))
    assert np.corrcoef(opening, d.envelope)[0, 1] > 0.2  # the tracked mouth opens with the speech
