"""`erlnet demo`: stage bookkeeping (skip, redo, resume), the orchestration with stand-in stages, the
CLI, and a tiny real end-to-end run (~10 s on an idle core) whose videos and report are read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import erlnet.demo as demo
from erlnet.demo import DemoConfig, MotionTiming, StageBook, check_output_dir, format_summary, run_demo
from erlnet.errors import InputError


# ---------------------------------------------------------------- StageBook
def _writer(path: Path, calls: list[str], text: str = "x", fail: bool = False):
    def work() -> dict[str, Any]:
        calls.append(path.name)
        path.mkdir(parents=True, exist_ok=True)
        (path / "part.txt").write_text(text)
        if fail:
            raise KeyboardInterrupt
        (path / "done.txt").write_text(text)
        return {"n": len(calls)}

    return work


def test_a_finished_stage_is_skipped_until_its_key_or_outputs_change(tmp_path: Path) -> None:
    out, calls = tmp_path / "a", []
    book = StageBook(tmp_path)
    first = book.run("a", "k1", [out], _writer(out, calls))
    assert not first.skipped and first.info == {"n": 1}
    again = StageBook(tmp_path).run("a", "k1", [out], _writer(out, calls))  # a new process reads demo.json
    assert again.skipped and again.info == {"n": 1} and calls == ["a"]
    (out / "stale.txt").write_text("old")
    StageBook(tmp_path).run("a", "k2", [out], _writer(out, calls))  # other settings: outputs removed, rerun
    assert calls == ["a", "a"] and not (out / "stale.txt").exists()
    import shutil

    shutil.rmtree(out)
    assert not StageBook(tmp_path).run("a", "k2", [out], _writer(out, calls)).skipped  # outputs gone: rerun
    doc = json.loads((tmp_path / "demo.json").read_text())
    assert doc["stages"]["a"]["done"] is True and doc["stages"]["a"]["key"] == "k2"


@pytest.mark.parametrize("resumable", [False, True])  # resumable = deterministic
def test_an_interrupted_stage_is_redone_or_resumed(tmp_path: Path, resumable: bool) -> None:
    out, calls = tmp_path / "s", []
    with pytest.raises(KeyboardInterrupt):
        StageBook(tmp_path).run("s", "k", [out], _writer(out, calls, "first", fail=True), resumable)
    assert json.loads((tmp_path / "demo.json").read_text())["stages"]["s"]["done"] is False
    (out / "marker").write_text("partial work")
    book = StageBook(tmp_path)
    assert not book.finished("s", "k", [out])
    run = book.run("s", "k", [out], _writer(out, calls, "second"), resumable)
    assert calls == ["s", "s"] and (out / "done.txt").read_text() == "second"
    assert (out / "marker").exists() == resumable  # kept only where the stage's own steps resume
    assert (run.token == "k") == resumable  # deterministic outputs are named by their key
    # ... but never across settings: a resumable stage started with other settings starts clean
    with pytest.raises(KeyboardInterrupt):
        StageBook(tmp_path).run("s", "k2", [out], _writer(out, calls, fail=True), resumable)
    (out / "marker").write_text("partial work")
    StageBook(tmp_path).run("s", "k3", [out], _writer(out, calls), resumable)
    assert not (out / "marker").exists()


def test_output_directory_checks(tmp_path: Path) -> None:
    check_output_dir(tmp_path / "new")
    check_output_dir(tmp_path)  # empty
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a demo directory"):
        check_output_dir(tmp_path)
    with pytest.raises(InputError, match="not a directory"):
        check_output_dir(tmp_path / "notes.txt")
    (tmp_path / "demo.json").write_text("{}")
    check_output_dir(tmp_path)  # ours
    old = tmp_path / "old"
    (old / "synth").mkdir(parents=True)
    (old / "synth" / "truth.npz").write_bytes(b"")
    (old / "subject").mkdir()
    check_output_dir(old)  # the first demo's output is replaced
    assert not any(old.iterdir())


def test_config_validation() -> None:
    DemoConfig().validate()
    bad = [dict(avatar_minutes=0.0), dict(motion_minutes=0.0), dict(video_styles=()), dict(corpus_styles=("nope",)),
           dict(video_styles=("happy", "happy")), dict(avatar_minutes=-1.0), dict(style_seconds=0.5),
           dict(corpus_seconds=0.2), dict(speech_seconds=0.01)]
    for kw in bad:
        with pytest.raises(InputError):
            DemoConfig(**kw).validate()


def test_motion_steps_fill_the_time_left() -> None:
    t = MotionTiming(per_step={"stage1": 0.1, "stage2": 0.3}, per_phase={"stage1": 2.0, "stage2": 1.0}, per_call=1.0)
    assert t.steps("stage1", 12.0) == 100 and t.steps("stage2", 31.0) == 100
    assert t.steps("stage2", 0.0) == demo._MIN_MOTION_STEPS  # always a few steps


# ---------------------------------------------------------------- orchestration with stand-in stages
@pytest.fixture
def fake_stages(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace every stage's work by a stand-in that writes its outputs; returns the call log."""
    calls: list[str] = []

    def touch(path: Path, name: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix:
            path.write_text(name)
        else:
            path.mkdir(exist_ok=True)

    def subject(cfg, clip, subj, show):
        calls.append("subject")
        touch(clip, "clip")
        touch(subj, "subject")
        return {"frames": 10}

    def one(name: str, info: dict[str, Any]):
        def work(cfg, *args):  # (cfg, inputs..., output, show)
            calls.append(name)
            touch(args[-2], name)
            return info

        return work

    def inputs(cfg, d, show):
        calls.append("inputs")
        touch(d / "speech.wav", "speech")
        return {}

    def videos(cfg, paths, show):
        calls.append("videos")
        for v in paths.videos.values():
            touch(v, "video")
        return {s: {"frames": 25, "audio_seconds": 1.0, "compute_per_audio_second": 2.0} for s in paths.videos}

    def talking(cfg, paths, show):
        calls.append("talking")
        touch(paths.talking, "talking")
        one = {"r": 0.5, "best_r": 0.61, "best_lag": 1, "frames": 25, "span": 0.12, "by_lag": [0.1, 0.3, 0.5, 0.61, 0.4, 0.2, 0.0]}
        return {"videos": {s: one for s in paths.videos},
                "subject": one | {"r": 0.7, "best_r": 0.72, "best_lag": -1, "frames": 10}}

    def report(cfg, avatar, subj, rep, show):
        calls.append("report")
        touch(rep / "index.html", "report")
        return {"psnr": 30.0, "ssim": 0.9, "frames": 5, "mouth_open_corr": 0.42, "mouth_open_ratio": 0.31}

    monkeypatch.setattr(demo, "_subject", subject)
    monkeypatch.setattr(demo, "_avatar", one("avatar", {"steps": 7, "train_psnr": 29.0}))
    monkeypatch.setattr(demo, "_corpus", one("corpus", {"clips": 5}))
    monkeypatch.setattr(demo, "_motion", one("motion", {"steps": {"stage1": 3, "stage2": 4}}))
    monkeypatch.setattr(demo, "_inputs", inputs)
    monkeypatch.setattr(demo, "_videos", videos)
    monkeypatch.setattr(demo, "_talking", talking)
    monkeypatch.setattr(demo, "_report", report)
    return calls


def test_stages_run_in_order_and_rerun_only_what_settings_change(fake_stages: list[str], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "demo"
    r = run_demo(out, DemoConfig(), show_progress=False)
    assert fake_stages == list(demo.STAGES)
    assert all(not s.skipped for s in r.stages.values())
    assert set(r.paths.videos) == {"expressive", "subdued"} and r.paths.report == out / "report" / "index.html"
    fake_stages.clear()
    r = run_demo(out, DemoConfig(), show_progress=False)
    assert fake_stages == [] and all(s.skipped for s in r.stages.values())
    assert r.stages["avatar"].info == {"steps": 7, "train_psnr": 29.0}  # numbers of the earlier run
    run_demo(out, DemoConfig(avatar_minutes=1.0), show_progress=False)
    assert fake_stages == ["avatar", "videos", "talking", "report"]  # what depends on the avatar
    fake_stages.clear()
    run_demo(out, DemoConfig(avatar_minutes=1.0, motion_steps=5), show_progress=False)
    assert fake_stages == ["motion", "videos", "talking"]
    fake_stages.clear()
    (out / "corpus").rename(out / "corpus_moved")  # a missing output is made again ...
    run_demo(out, DemoConfig(avatar_minutes=1.0, motion_steps=5), show_progress=False)
    assert fake_stages == ["corpus"]  # ... deterministically: the motion model trained on it stays valid
    fake_stages.clear()
    (out / "avatar").rename(out / "avatar_moved")  # a retrained avatar invalidates what used the old one
    run_demo(out, DemoConfig(avatar_minutes=1.0, motion_steps=5), show_progress=False)
    assert fake_stages == ["avatar", "videos", "talking", "report"]
    fake_stages.clear()
    monkeypatch.setattr(demo, "TALKING_VERSION", demo.TALKING_VERSION + 1)  # a new measurement: only it reruns
    run_demo(out, DemoConfig(avatar_minutes=1.0, motion_steps=5), show_progress=False)
    assert fake_stages == ["talking"]


def test_cli_prints_the_paths_and_numbers(fake_stages: list[str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from erlnet.cli import main

    out = tmp_path / "d"
    assert main(["demo", "-o", str(out), "--avatar-minutes", "1", "-q"]) == 0
    text = capsys.readouterr().out
    for name in ("expressive.mp4", "subdued.mp4", "index.html", "avatar", "motion_model"):
        assert name in text
    assert "PSNR 30.00 dB" in text and "7 steps" in text and "stage 2 4 steps" in text
    assert "mouth opening correlation 0.42, amplitude ratio 0.31 on 5 held-out frames" in text
    for style in ("expressive", "subdued"):
        assert (f"mouth ({style:>10}) : opening-loudness correlation 0.50 (best 0.61 at lag +1), "
                f"opening range 0.120, 25 frames") in text
    assert ("opening-loudness correlation 0.70 (best 0.72 at lag -1), opening range 0.120, 10 frames of the "
            "subject's real frames") in text
    assert main(["demo", "-o", str(out), "--avatar-minutes", "1", "-q"]) == 0
    assert "every stage up to date" in capsys.readouterr().out and len(fake_stages) == len(demo.STAGES)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    assert main(["demo", "-o", str(tmp_path / "other"), "-q"]) == 2  # a user error, one line


# ---------------------------------------------------------------- a tiny real run
TINY_DBF = dict(feature_scale=4, feature_dim=6, head_samples=4, torso_samples=4, plane_resolution=16, plane_levels=1,
                plane_channels=4, torso_plane_resolution=8, hidden=8, expression_code_dim=4, expression_hidden=8,
                deform_hidden=8, upsampler_channels=8)


def tiny_config() -> DemoConfig:
    """Every budget a few steps, clips of 1-2 s at 128 px, tiny models."""
    from erlnet.motion.config import ADFConfig
    from erlnet.render.dbf import DBFConfig

    return DemoConfig(seconds=1.6, size=128, avatar_minutes=0.0, avatar_steps=2, corpus_styles=("neutral",),
                      corpus_seconds=1.2, motion_minutes=0.0, motion_steps=2, speech_seconds=1.0, style_seconds=1.2,
                      threads=1, renderer=DBFConfig(**TINY_DBF), motion_model=ADFConfig.tiny())


def test_tiny_demo_writes_two_videos_with_sound_and_the_report(tmp_path: Path, one_thread: None,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import av

    import erlnet.eval.report

    monkeypatch.setattr(erlnet.eval.report, "has_matplotlib", lambda: False)  # OpenCV plots: seconds faster
    cfg = tiny_config()
    out = tmp_path / "demo"
    r = run_demo(out, cfg, show_progress=False)
    n_frames = int(cfg.speech_seconds * 25)
    assert set(r.paths.videos) == {"expressive", "subdued"}
    for video in r.paths.videos.values():
        with av.open(str(video)) as c:
            assert c.streams.video and c.streams.audio
            frames = sum(1 for _ in c.decode(c.streams.video[0]))
            a = c.streams.audio[0]
            audio_s = float(a.duration * a.time_base)
        assert frames == n_frames
        assert abs(audio_s - cfg.speech_seconds) < 0.03
    assert r.paths.videos["expressive"].read_bytes() != r.paths.videos["subdued"].read_bytes()
    html = r.paths.report.read_text()
    assert "side_by_side.mp4" in html and ".png" in html
    assert r.stages["report"].info["frames"] > 0 and r.stages["avatar"].info["steps"] == 2
    assert r.stages["report"].info["train_frames"] > 0 and "mouth opening correlation" in format_summary(r)
    talk = json.loads(r.paths.talking.read_text())  # the talking stage measured both videos and the subject
    assert set(talk["videos"]) == set(r.stages["talking"].info["videos"]) == {"expressive", "subdued"}
    assert len(talk["videos"]["expressive"]["opening"]) == n_frames and len(talk["subject"]["loudness_db"]) == 40
    assert "opening-loudness correlation" in format_summary(r)
    mtimes = {p: p.stat().st_mtime_ns for p in r.paths.videos.values()}
    again = run_demo(out, cfg, show_progress=False)
    assert all(s.skipped for s in again.stages.values())
    assert {p: p.stat().st_mtime_ns for p in again.paths.videos.values()} == mtimes
