"""A tiny preprocessed subject (built once per session) and tiny training configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from media import portrait_frames

N_FRAMES = 24
SIZE = 128



@pytest.fixture(scope="session")
def tiny_subject(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete 24-frame, 128 px subject with audio (train 19 / val 3 / test 2 frames)."""
    from erlnet.io.video import VideoWriter
    from erlnet.preprocess.pipeline import PreprocessConfig, run_preprocess

    base = tmp_path_factory.mktemp("train_subject")
    video = base / "face.mp4"
    t = np.arange(int(N_FRAMES / 25 * 16000)) / 16000
    wav = (0.2 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    with VideoWriter(video, fps=25, audio=wav) as w:
        for f in portrait_frames(N_FRAMES):
            w.write(f)
    root = base / "subject"
    run_preprocess(video, root, PreprocessConfig(size=SIZE), show_progress=False)
    return root


# A DBF renderer small enough for CPU tests (64 px output, 16 x 16 rays).
TINY_DBF = dict(feature_scale=4, feature_dim=8, head_samples=8, torso_samples=6, plane_resolution=32,
                plane_levels=1, plane_channels=8, torso_plane_resolution=16, hidden=16, expression_code_dim=8,
                expression_hidden=16, deform_hidden=8, upsampler_channels=16)
IMAGE_SIZE = 64


@pytest.fixture
def tiny_dbf() -> dict[str, int]:
    """The fields of TINY_DBF (tests import fixtures, not the conftest module, whose name is not unique)."""
    return dict(TINY_DBF)


@pytest.fixture
def tiny_config():
    """Factory of a tiny CPU training config: tiny_config(max_steps, **trainer_overrides)."""
    from erlnet.render.dbf import DBFConfig
    from erlnet.train.avatar import OptimConfig, PhaseConfig
    from erlnet.train.data import DataConfig
    from erlnet.train.fit_avatar import AvatarTrainConfig
    from erlnet.train.trainer import TrainerConfig

    def make(max_steps: int = 3, phases: PhaseConfig | None = None, **trainer: object) -> AvatarTrainConfig:
        t = dict(max_steps=max_steps, accelerator="cpu", devices="1", log_every=1, preview_every=0,
                 checkpoint_every=0, val_every=0) | trainer
        return AvatarTrainConfig(
            trainer=TrainerConfig(**t),
            data=DataConfig(image_size=IMAGE_SIZE, batch_size=2, val_frames=2),
            renderer=DBFConfig(**TINY_DBF),
            optim=OptimConfig(lr_warmup_steps=0, lr_cnn=1e-2),
            phases=phases or PhaseConfig(warmup_fraction=1.0),
        )

    return make
