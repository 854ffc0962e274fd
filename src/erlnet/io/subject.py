"""The on-disk subject format written by `erlnet preprocess` and read by training.

```
SUBJECT/
  manifest.json         schema version, fps, size, intrinsics, source hash, tool versions,
                        per-step parameters and completion, split
  frames/000000.jpg     working-resolution crops, (size, size) RGB
  masks/000000.png      uint8 labels: 0 background, 1 torso+neck, 2 head
  background.png        static background plate
  tracking.npz          landmarks, head pose, expression, blink (see `Tracking`)
  audio.wav             16 kHz mono (absent when the source has no audio)
  audio/<cache_key>.npy per-frame audio features, one file per audio encoder
```
Each step writes to a temporary name and is renamed into place, and the manifest is rewritten
atomically after each finished step, so an interrupted run never looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from erlnet.errors import FormatError

SCHEMA = "erlnet.subject"
SCHEMA_VERSION = 1


def params_hash(params: Any) -> str:
    """Stable short hash of JSON-able parameters (key order does not matter)."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file so readers see either the old or the new content, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Atomically save numeric arrays (no pickled objects)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Load an npz written by erlnet; never unpickles."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise FormatError(f"{path}: missing") from None
    except (ValueError, OSError) as exc:
        raise FormatError(f"{path}: unreadable or corrupt ({exc})") from None


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces `final` only when the block ends without error."""
    tmp = final.with_name(f".{final.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


@dataclass
class StepRecord:
    """Completion record of one preprocessing step."""

    key: str  # hash of the step's parameters and of the keys of the steps it depends on
    params: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)  # what the step measured (counts, timings)


@dataclass
class Manifest:
    """`manifest.json` of a subject directory."""

    source: dict[str, Any] = field(default_factory=dict)  # path, sha256, size, fps, duration
    fps: float = 25.0
    size: int = 512
    n_frames: int = 0
    intrinsics: list[list[float]] = field(default_factory=list)  # K (3, 3) in working-crop pixels
    crop: dict[str, Any] = field(default_factory=dict)  # square box in source pixels
    has_audio: bool = False
    split: dict[str, list[int]] = field(default_factory=dict)  # name -> [start, stop) frame range
    steps: dict[str, StepRecord] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    complete: bool = False
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["steps"] = {k: vars(v) for k, v in self.steps.items()}
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "manifest.json") -> Manifest:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FormatError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise FormatError(f"{where}: not an erlnet subject manifest")
        if d.get("schema_version") != SCHEMA_VERSION:
            raise FormatError(
                f"{where}: subject schema version {d.get('schema_version')} is not supported "
                f"(this erlnet reads version {SCHEMA_VERSION}); preprocess the video again"
            )
        known = {f.name for f in fields(cls)}
        steps = {k: StepRecord(**v) for k, v in d.pop("steps", {}).items()}
        return cls(**{k: v for k, v in d.items() if k in known}, steps=steps)

    @property
    def K(self) -> np.ndarray:
        """Camera intrinsics (3, 3) float64."""
        return np.asarray(self.intrinsics, dtype=np.float64)


class Subject:
    """Read access to a preprocessed subject; frames and masks are loaded lazily, one at a time."""

    def __init__(self, root: str | Path, require_complete: bool = True) -> None:
        self.root = Path(root)
        mpath = self.root / "manifest.json"
        if not mpath.exists():
            raise FormatError(f"{self.root}: not an erlnet subject (no manifest.json)")
        self.manifest = Manifest.from_json(mpath.read_text(), where=str(mpath))
        if require_complete and not self.manifest.complete:
            raise FormatError(f"{self.root}: preprocessing did not finish; run `erlnet preprocess` again to resume")
        self._tracking: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.manifest.n_frames

    @property
    def fps(self) -> float:
        return self.manifest.fps

    def frame_path(self, i: int) -> Path:
        return self.root / "frames" / f"{i:06d}.jpg"

    def mask_path(self, i: int) -> Path:
        return self.root / "masks" / f"{i:06d}.png"

    def frame(self, i: int) -> np.ndarray:
        """Frame i as (size, size, 3) uint8 RGB."""
        import cv2

        img = cv2.imread(str(self.frame_path(i)), cv2.IMREAD_COLOR)
        if img is None:
            raise FormatError(f"{self.frame_path(i)}: missing or unreadable")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def mask(self, i: int) -> np.ndarray:
        """Labels of frame i as (size, size) uint8: 0 background, 1 torso+neck, 2 head."""
        import cv2

        m = cv2.imread(str(self.mask_path(i)), cv2.IMREAD_UNCHANGED)
        if m is None:
            raise FormatError(f"{self.mask_path(i)}: missing or unreadable")
        return m

    def background(self) -> np.ndarray:
        """Static background plate (size, size, 3) uint8 RGB."""
        import cv2

        img = cv2.imread(str(self.root / "background.png"), cv2.IMREAD_COLOR)
        if img is None:
            raise FormatError(f"{self.root / 'background.png'}: missing or unreadable")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def tracking(self) -> dict[str, np.ndarray]:
        """Arrays of tracking.npz (cached): landmarks (T,478,3), rotation (T,3,3), translation (T,3),
        expression (T,D), blink (T,), valid (T,), canonical (478,3), neutral (478,3), ..."""
        if self._tracking is None:
            self._tracking = load_npz(self.root / "tracking.npz")
        return self._tracking

    def audio_features(self, cache_key: str) -> np.ndarray:
        """Per-frame audio features (T, D) of the encoder with this cache key."""
        path = self.root / "audio" / f"{cache_key}.npy"
        if not path.exists():
            raise FormatError(f"{path}: no audio features for encoder {cache_key!r}; preprocess with that encoder")
        return np.load(path, allow_pickle=False)

    def split_indices(self, name: str) -> np.ndarray:
        """Frame indices of a split ('train', 'val' or 'test')."""
        if name not in self.manifest.split:
            raise FormatError(f"{self.root}: no split named {name!r} (have {sorted(self.manifest.split)})")
        start, stop = self.manifest.split[name]
        return np.arange(start, stop)
