"""Avatar bundles and `erlnet render`: save/load round trip, clear errors, streamed mp4 with audio,
and no Lightning on the inference path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from erlnet.cli import main
from erlnet.errors import FormatError, InputError
from erlnet.inference.render_video import render_motion
from erlnet.io.video import count_streams
from erlnet.render.avatar import AvatarMeta, load_avatar, save_avatar
from erlnet.render.dbf import DBFConfig
from erlnet.types import Motion

SIZE = 32
DIM = 12
TINY = DBFConfig(feature_scale=4, feature_dim=6, head_samples=4, torso_samples=4, plane_resolution=16,
                 plane_levels=1, plane_channels=4, torso_plane_resolution=8, hidden=8, expression_code_dim=4,
                 expression_hidden=8, deform_hidden=8, upsampler_channels=8)
POSE_T = np.array([0.0, 0.03, 0.9], np.float32)  # head 0.9 m in front of the camera


def _meta() -> AvatarMeta:
    f = 2.0 * SIZE
    rng = np.random.default_rng(0)
    return AvatarMeta(
        expression_dim=DIM, image_size=SIZE, fps=25.0, representation="landmarks",
        K=np.array([[f, 0, SIZE / 2], [0, f, SIZE / 2], [0, 0, 1]], np.float32),
        ref_rotation=np.eye(3, dtype=np.float32), ref_translation=POSE_T,
        neutral=rng.normal(size=(478, 3)).astype(np.float32) * 0.05,
        background=rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8),
    )


def _motion(n: int, dim: int = DIM, representation: str = "landmarks") -> Motion:
    rng = np.random.default_rng(1)
    return Motion(expression=rng.normal(size=(n, dim)).astype(np.float32) * 0.02,
                  blink=np.linspace(0, 1, n, dtype=np.float32),
                  rotation=np.repeat(np.eye(3, dtype=np.float32)[None], n, 0),
                  translation=np.repeat(POSE_T[None], n, 0), fps=25.0, representation=representation)


@pytest.fixture
def avatar_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    renderer = TINY.setup(DIM, SIZE)
    with torch.no_grad():  # move weights off their init so a failed load cannot look like a success
        for p in renderer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    root = tmp_path / "avatar"
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "keep.txt").write_text("not part of the bundle")
    save_avatar(root, renderer, _meta())
    return root


def test_round_trip_renders_identically_and_keeps_other_files(avatar_dir: Path) -> None:
    a = load_avatar(avatar_dir, device="cpu")
    b = load_avatar(avatar_dir, device="cpu")
    assert not a.renderer.training
    m = _motion(3)
    ra, rb = a.render(m).rgb, b.render(m).rgb
    assert ra.shape == (3, 3, SIZE, SIZE) and torch.equal(ra, rb)
    assert a.meta.K[0, 0] == pytest.approx(2.0 * SIZE) and np.array_equal(a.meta.background, _meta().background)
    # re-saving keeps the training files next to the bundle
    save_avatar(avatar_dir, a.renderer, a.meta)
    assert (avatar_dir / "checkpoints" / "keep.txt").exists()
    assert torch.equal(load_avatar(avatar_dir, device="cpu").render(m).rgb, ra)


def test_wrong_or_corrupt_avatar_gives_format_error(avatar_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="no such avatar"):
        load_avatar(tmp_path / "none", device="cpu")
    header = json.loads((avatar_dir / "config.json").read_text())
    header["config"]["renderer"]["config"]["hidden"] = 12  # weights no longer fit the config
    (avatar_dir / "config.json").write_text(json.dumps(header))
    with pytest.raises(FormatError, match="weights do not match"):
        load_avatar(avatar_dir, device="cpu")
    header["config"]["renderer"]["type"] = "GaussianConfig"
    (avatar_dir / "config.json").write_text(json.dumps(header))
    with pytest.raises(FormatError, match="renderer is 'GaussianConfig'"):
        load_avatar(avatar_dir, device="cpu")
    (avatar_dir / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(FormatError, match="corrupt weights"):
        load_avatar(avatar_dir, device="cpu")


def test_render_three_frames_with_audio(avatar_dir: Path, tmp_path: Path) -> None:
    avatar = load_avatar(avatar_dir, device="cpu")
    wav = (0.2 * np.sin(np.arange(int(16000 * 3 / 25)) * 0.07)).astype(np.float32)
    out = render_motion(avatar, _motion(3), tmp_path / "out.mp4", audio=wav, batch_size=2, progress=False)
    counts = count_streams(out)
    assert counts.video_frames == 3 and (counts.width, counts.height) == (SIZE, SIZE)
    assert counts.audio_seconds == pytest.approx(3 / 25, abs=0.05)


def test_mismatched_motion_is_refused(avatar_dir: Path, tmp_path: Path) -> None:
    avatar = load_avatar(avatar_dir, device="cpu")
    with pytest.raises(InputError, match="expects 12"):
        render_motion(avatar, _motion(2, dim=9), tmp_path / "x.mp4", progress=False)
    with pytest.raises(InputError, match="representation"):
        render_motion(avatar, _motion(2, representation="flame"), tmp_path / "x.mp4", progress=False)
    assert not (tmp_path / "x.mp4").exists()


def test_cli_render(avatar_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _motion(4).save(tmp_path / "m.npz")
    out = tmp_path / "cli.mp4"
    assert main(["render", str(avatar_dir), "--motion", str(tmp_path / "m.npz"), "-o", str(out), "-q"]) == 0
    assert count_streams(out).video_frames == 4 and count_streams(out).audio_seconds == 0.0
    code = main(["render", str(tmp_path / "nope"), "--motion", str(tmp_path / "m.npz"), "-o", str(out), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("erlnet: error:") and "no such avatar" in err and len(err.splitlines()) == 1


def test_inference_path_does_not_import_lightning() -> None:
    code = ("import sys, erlnet.inference, erlnet.inference.render_video, erlnet.render, erlnet.render.avatar, "
            "erlnet.render.dbf; bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_unavailable_device_is_a_clear_error(avatar_dir: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InputError, match="CUDA is not available"):
        load_avatar(avatar_dir, device="cuda")
