"""`erlnet evaluate` and its HTML report on a tiny subject: the files a person opens, metrics that
are exact for a perfect renderer, the plots without matplotlib, and clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from erlnet.errors import InputError
from erlnet.eval.avatar import EvaluateConfig, evaluate_subject, format_table
from erlnet.eval.report import PLOTS, STRIP, write_report
from erlnet.io.subject import Subject
from erlnet.io.video import count_streams
from media import talking_subject
from standin_avatars import TruthAvatar

N_FRAMES = 24  # preprocessing splits 19 train / 3 val / 2 test: 5 held-out frames
SIZE = 64
TINY = dict(feature_scale=4, feature_dim=6, head_samples=4, torso_samples=4, plane_resolution=16, plane_levels=1,
            plane_channels=4, torso_plane_resolution=8, hidden=8, expression_code_dim=4, expression_hidden=8,
            deform_hidden=8, upsampler_channels=8)


@pytest.fixture(autouse=True)
def _single_thread(one_thread) -> None:
    """One torch thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A preprocessed 24-frame portrait subject with audio, and a randomly initialised avatar of it."""
    from erlnet.render.avatar import AvatarMeta, save_avatar
    from erlnet.render.dbf import DBFConfig

    base = tmp_path_factory.mktemp("report")
    talking_subject(base, N_FRAMES)
    meta = AvatarMeta.from_subject(Subject(base / "subject"), SIZE)
    torch.manual_seed(0)
    save_avatar(base / "avatar", DBFConfig(**TINY).setup(meta.expression_dim, SIZE), meta)
    return {"subject": base / "subject", "avatar": base / "avatar", "base": base}


def test_cli_writes_a_report_that_names_its_video_and_plots(env: dict[str, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from erlnet.cli import main

    out = tmp_path / "report"
    assert main(["evaluate", str(env["avatar"]), str(env["subject"]), "-o", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "PSNR (dB)" in printed and "not computed (no weights)" in printed and str(out / "index.html") in printed
    assert "mouth opening correlation" in printed and "training frames: mouth opening amplitude ratio" in printed
    assert "5 held-out frames (+ 19 training frames)" in printed
    page = (out / "index.html").read_text()
    for name in ("side_by_side.mp4", *PLOTS, STRIP, "metrics.json"):
        assert f'"{name}"' in page and (out / name).stat().st_size > 0, name  # relative links to existing files
    assert "/" not in page.split('<video controls preload=metadata src="')[1].split('"')[0]
    counts = count_streams(out / "side_by_side.mp4")  # truth | generated, with the held-out audio
    assert counts.video_frames == 5 and (counts.width, counts.height) == (2 * SIZE, SIZE)
    assert 0.2 <= counts.audio_seconds <= 0.2 + 1024 / 16000
    data = json.loads((out / "metrics.json").read_text())
    assert data["frames"] == [19, 20, 21, 22, 23] and len(data["series"]["psnr"]) == 5
    assert data["train_frames"] == list(range(19)) and len(data["train_series"]["mouth_open_truth"]) == 19
    m = data["metrics"]
    assert 0 < m["psnr"] < 40 and -1 < m["ssim"] < 1 and m["render_fps"] > 0 and m["neck_l1"] > 0
    assert 0 <= m["cpbd_generated"] <= 1 and 0 <= m["cpbd_truth"] <= 1
    assert 0 < m["mouth_psnr"] < 40 and 0 < m["train_psnr"] < 40 and 0 < m["train_mouth_psnr"] < 40
    assert m["face_found_generated"] == 0  # an untrained avatar draws no face: the opening cannot be measured
    assert m["mouth_open_corr"] == m["train_mouth_open_ratio"] == "not computed (no face found in the rendered frames)"
    assert "Mouth opening over time" in page and "amplitude ratio" in page
    assert m["lpips"] == m["fid"] == m["lse_d"] == m["lse_c"] == m["av_offset"] == "not computed (no weights)"
    strip = cv2.imread(str(out / STRIP))
    assert strip.shape == (3 * SIZE, 5 * SIZE, 3)  # truth / generated / error for the 5 frames


def test_a_perfect_renderer_scores_perfectly(env: dict[str, Path], tmp_path: Path) -> None:
    perfect = TruthAvatar(env["subject"])
    ev = evaluate_subject(perfect, env["subject"], tmp_path, EvaluateConfig(batch_size=2, train_frames=7))
    m = ev.metrics
    # the held-out frames, then 7 training frames spread over the train split 0..18
    assert ev.train_frames.tolist() == [0, 3, 6, 9, 12, 15, 18]
    assert perfect.rendered == [19, 20, 21, 22, 23, 0, 3, 6, 9, 12, 15, 18]
    assert m["psnr"] == float("inf") and m["ssim"] == pytest.approx(1.0) and m["neck_l1"] == 0.0
    assert m["mouth_psnr"] == m["train_psnr"] == m["train_mouth_psnr"] == float("inf")
    assert m["mouth_ssim"] == pytest.approx(1.0) and m["train_frames"] == 7
    assert m["cpbd_generated"] == m["cpbd_truth"] and 0 < m["cpbd_truth"] < 1
    assert m["face_found_generated"] == 1.0 and m["mouth_lmd_frames"] == 5
    assert m["mouth_lmd_px"] == 0.0 and m["pose_error_deg"] < 0.05  # float32 poses: arccos noise
    assert np.allclose(ev.series["mouth_open_generated"], ev.series["mouth_open_truth"])
    # the head pose seen in the real frames follows the driving (tracked) motion
    assert np.nanmax(np.abs(ev.pose["truth"] - ev.pose["driving"])) < 5.0
    assert "audio_db" in ev.series and len(ev.series["audio_db"]) == 5
    assert "inf" in format_table(ev)


def test_plots_without_matplotlib_and_subsampled_frames(env: dict[str, Path], tmp_path: Path) -> None:
    cfg = EvaluateConfig(stride=2, track=False, cpbd_every=0)
    ev = evaluate_subject(env["avatar"], env["subject"], tmp_path, cfg)
    assert ev.frames.tolist() == [19, 21, 23] and ev.video is not None
    assert ev.metrics["mouth_lmd_px"] == "not computed (tracking off)"
    assert ev.metrics["mouth_open_corr"] == ev.metrics["train_mouth_open_ratio"] == "not computed (tracking off)"
    assert ev.metrics["cpbd_generated"].startswith("not computed")
    index = write_report(ev, tmp_path, use_matplotlib=False)
    for name in PLOTS:
        img = cv2.imread(str(tmp_path / name))
        assert img is not None and img.shape[1] == 900 and (img < 250).any()  # drawn, not blank
    assert "not computed (tracking off)" in index.read_text()
    assert count_streams(tmp_path / "side_by_side.mp4").audio_seconds == 0.0  # skipped frames: no audio


def test_bad_inputs_give_clear_errors(env: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such avatar directory"):
        evaluate_subject(tmp_path / "nope", env["subject"])
    with pytest.raises(InputError, match="LPIPS weights file not found"):
        evaluate_subject(env["avatar"], env["subject"], config=EvaluateConfig(lpips_weights=tmp_path / "alex.pth"))
    weights = tmp_path / "fid.pt"
    weights.write_bytes(b"0")
    with pytest.raises(InputError, match="not a readable weights file for FID"):
        evaluate_subject(env["avatar"], env["subject"], config=EvaluateConfig(fid_weights=weights))
    with pytest.raises(InputError, match="train_frames >= 0"):
        evaluate_subject(env["avatar"], env["subject"], config=EvaluateConfig(train_frames=-1))
    ev = evaluate_subject(env["avatar"], env["subject"], config=EvaluateConfig(max_frames=1, track=False, train_frames=0))
    assert ev.metrics["fid"] == "not computed (no weights)" and ev.video is None
    assert ev.metrics["train_psnr"] == "not computed (train_frames = 0)" and len(ev.train_frames) == 0
    assert ev.metrics["mouth_open_ratio"] == "not computed (tracking off)"
    trained_on_all = shutil.copytree(env["subject"], tmp_path / "all")
    manifest = json.loads((trained_on_all / "manifest.json").read_text())
    manifest["split"] = {"train": [0, N_FRAMES], "val": [N_FRAMES, N_FRAMES], "test": [N_FRAMES, N_FRAMES]}
    (trained_on_all / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="no held-out frames"):
        evaluate_subject(env["avatar"], trained_on_all)
