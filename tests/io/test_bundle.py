from __future__ import annotations

from pathlib import Path

import pytest
import torch

from erlnet.errors import FormatError
from erlnet.io.bundle import load_bundle, save_bundle


def test_roundtrip_and_overwrite(tmp_path: Path) -> None:
    t = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3)}
    save_bundle(tmp_path / "m", "avatar", 1, {"width": 3}, t, meta={"steps": 5})
    save_bundle(tmp_path / "m", "avatar", 1, {"width": 4}, t)  # replaces atomically
    cfg, back, meta = load_bundle(tmp_path / "m", "avatar", 1)
    assert cfg == {"width": 4} and meta == {}
    assert torch.equal(back["w"], t["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_errors_are_clear(tmp_path: Path) -> None:
    t = {"w": torch.ones(2)}
    with pytest.raises(FormatError, match="no such avatar"):
        load_bundle(tmp_path / "none", "avatar", 1)
    save_bundle(tmp_path / "m", "motion-model", 1, {}, t)
    with pytest.raises(FormatError, match="expected an erlnet avatar"):
        load_bundle(tmp_path / "m", "avatar", 1)
    with pytest.raises(FormatError, match="schema version 1 is not supported"):
        load_bundle(tmp_path / "m", "motion-model", 2)
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(FormatError, match="corrupt weights"):
        load_bundle(tmp_path / "m", "motion-model", 1)
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(FormatError, match="corrupt"):
        load_bundle(tmp_path / "m", "motion-model", 1)
