"""Multi-device training goes through Lightning's strategies: a two-process CPU DDP smoke run."""

from __future__ import annotations

from pathlib import Path

import torch

from erlnet.render.avatar import load_avatar
from erlnet.train.fit_avatar import train_avatar


def test_two_process_ddp_spawn_on_cpu(tiny_subject: Path, tiny_config, tmp_path: Path) -> None:
    run = tmp_path / "avatar"
    cfg = tiny_config(max_steps=2, strategy="ddp_spawn", devices="2", val_every=2)
    result = train_avatar(tiny_subject, run, cfg, progress=False)
    assert result.steps == 2
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2
    avatar = load_avatar(run, device="cpu")
    assert avatar.meta.train_steps == 2
    # rank 0 exported the weights the processes trained together (identical to the checkpoint's)
    state = {k.removeprefix("renderer."): v for k, v in ckpt["state_dict"].items()}
    assert all(torch.equal(v, state[k]) for k, v in avatar.renderer.state_dict().items())
