from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from erlnet.errors import FormatError
from erlnet.io.subject import Manifest, StepRecord, Subject, atomic_write_text, params_hash, staged_dir
from erlnet.types import Motion


def test_manifest_roundtrip() -> None:
    m = Manifest(fps=25.0, size=256, n_frames=10, intrinsics=np.eye(3).tolist(), crop={"x0": 1, "y0": 2, "side": 300},
                 split={"train": [0, 8], "val": [8, 9], "test": [9, 10]},
                 steps={"track": StepRecord(key="abc", params={"fps": 25.0}, info={"n_frames": 10})}, complete=True)
    back = Manifest.from_json(m.to_json())
    assert back == m
    assert back.K.shape == (3, 3)


def test_manifest_rejects_other_files_and_versions() -> None:
    with pytest.raises(FormatError, match="not valid JSON"):
        Manifest.from_json("{nope")
    with pytest.raises(FormatError, match="not an erlnet subject"):
        Manifest.from_json('{"schema": "other"}')
    text = Manifest().to_json().replace('"schema_version": 1', '"schema_version": 99')
    with pytest.raises(FormatError, match="version 99"):
        Manifest.from_json(text)


def test_params_hash_is_order_independent_and_sensitive() -> None:
    assert params_hash({"a": 1, "b": [1, 2]}) == params_hash({"b": [1, 2], "a": 1})
    assert params_hash({"a": 1}) != params_hash({"a": 2})


def test_incomplete_subject_is_refused(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "manifest.json", Manifest(complete=False).to_json())
    with pytest.raises(FormatError, match="did not finish"):
        Subject(tmp_path)
    with pytest.raises(FormatError, match="no manifest"):
        Subject(tmp_path / "nothing")


def test_staged_dir_only_appears_on_success(tmp_path: Path) -> None:
    final = tmp_path / "frames"
    with pytest.raises(ValueError), staged_dir(final) as d:
        (d / "a.txt").write_text("x")
        raise ValueError
    assert not final.exists() and not list(tmp_path.iterdir())
    with staged_dir(final) as d:
        (d / "a.txt").write_text("x")
    assert (final / "a.txt").read_text() == "x"


def test_motion_roundtrip_and_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    t = 7
    m = Motion(expression=rng.normal(size=(t, 12)).astype(np.float32), blink=np.zeros(t, np.float32),
               rotation=np.tile(np.eye(3, dtype=np.float32), (t, 1, 1)), translation=np.zeros((t, 3), np.float32))
    m.save(tmp_path / "m.npz")
    back = Motion.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.expression, m.expression)
    assert len(back) == t and back.fps == 25.0
    with pytest.raises(FormatError, match="rotation"):
        Motion(expression=m.expression, blink=m.blink, rotation=m.rotation[:3], translation=m.translation)
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(FormatError, match="not an erlnet motion"):
        Motion.load(tmp_path / "bad.npz")
    with pytest.raises(FormatError, match="no such"):
        Motion.load(tmp_path / "missing.npz")
