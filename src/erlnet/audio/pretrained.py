"""Plumbing shared by the encoders built on pretrained speech models (`hf.py`, `whisper.py`).

Optional imports with an install hint, checks of local model directories, content fingerprints for
cache keys, device names, windowing of long audio and resampling of model-rate states to video rows.
Nothing here imports a model library: `import erlnet` must stay light.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from erlnet.errors import InputError

_DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")
_BLOCK = 1 << 22  # bytes read at a time when hashing weights


def require(module: str, encoder: str, package: str, extra: str) -> ModuleType:
    """Import an optional dependency or raise a one-line InputError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise InputError(
            f"the {encoder} audio encoder needs the '{package}' package: pip install 'erlnet[{extra}]'"
        ) from e


def check_device(device: Any) -> str:
    """Validate a device name: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N"."""
    if not isinstance(device, str) or not _DEVICE_RE.fullmatch(device):
        raise InputError(f"audio encoder config: device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return device


def check_path_field(value: Any) -> str:
    """`model_path` as a string ("" = not set yet; required by `setup()`). Path objects are accepted."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise InputError(f"audio encoder config: model_path must be a path string, got {value!r}")
    return value


def check_number(cfg: Any, name: str, *, low: float = 0.0, allow_low: bool = False, integer: bool = False) -> None:
    """Check `cfg.<name>` is a finite number above `low` (or equal, with `allow_low`); store it as float/int.

    Storing `25` as `25.0` keeps `to_dict`, and so the cache key, identical for equal configs.
    """
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"audio encoder config: {name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < low or (value == low and not allow_low):
        bound = f">= {low:g}" if allow_low else f"> {low:g}"
        raise InputError(f"audio encoder config: {name} must be a finite number {bound}, got {value!r}")
    if integer and value != int(value):
        raise InputError(f"audio encoder config: {name} must be an integer, got {value!r}")
    object.__setattr__(cfg, name, int(value) if integer else float(value))


def model_dir(model_path: str, encoder: str, required: Iterable[str], what: str) -> Path:
    """Resolve `model_path` to an existing directory holding every file in `required`.

    `what` describes the expected format for the error message, e.g. "a Hugging Face model directory".
    """
    if not model_path:
        raise InputError(f"the {encoder} audio encoder needs model_path: {what}")
    p = Path(model_path).expanduser()
    if not p.exists():
        raise InputError(f"{encoder} model directory not found: {p}")
    if not p.is_dir():
        raise InputError(f"{encoder} model_path is not a directory: {p} (expected {what})")
    missing = [name for name in required if not (p / name).is_file()]
    if missing:
        raise InputError(f"{p} is not {what}: missing {', '.join(missing)}")
    return p


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; one-line InputError when it is unreadable or not an object."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read {path}: {first_line(e)}") from e
    if not isinstance(d, dict):
        raise InputError(f"{path} is not a JSON object")
    return d


def first_line(e: BaseException) -> str:
    """First line of an exception's message (library errors can span pages), for one-line errors."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, remembered per (path, size, mtime, inode) so each process hashes a
    large weights file once even though encoders are set up repeatedly."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    digest = _DIGESTS.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(_BLOCK):
                h.update(block)
        digest = _DIGESTS[key] = h.hexdigest()
    return digest


def dir_fingerprint(root: Path, names: Iterable[str]) -> str:
    """Hash of the named files of `root` (names and contents; absent ones are skipped).

    Content, not paths or times: the same model copied elsewhere keeps its cache key; any edit changes it.
    """
    h = hashlib.sha256()
    for name in sorted(set(names)):
        p = root / name
        if p.is_file():
            h.update(f"{name}\0{file_digest(p)}\n".encode())
    return h.hexdigest()[:16]


def plan_windows(n: int, window: int, context: int) -> list[tuple[int, int, int, int]]:
    """Cover states `[0, n)` with model windows of `window` states overlapping by `2 * context`.

    Returns `(start, stop, keep_start, keep_stop)` per window: the model runs on states
    `[start, stop)` and only `[keep_start, keep_stop)` is kept, so every kept state (except at the
    start and end of the audio) has at least `context` states of real context on both sides.
    Kept ranges tile `[0, n)` in order. Needs `window > 2 * context`.
    """
    if window <= 2 * context:
        raise InputError(f"audio window of {window} model frames must exceed twice its context ({context})")
    out = []
    start, keep_start = 0, 0
    while True:
        keep_stop = min(start + window - context, n) if n > window else n
        out.append((start, start + window, keep_start, keep_stop))
        if keep_stop >= n:
            return out
        keep_start = keep_stop
        start += window - 2 * context


def states_needed(n_frames: int, fps: float, first_s: float, step_s: float) -> int:
    """Model states (state `j` centred on `first_s + j * step_s` s) needed to interpolate `n_frames`
    video rows centred on `(i + 0.5) / fps`: up to the state just after the last row's centre."""
    last = ((n_frames - 0.5) / fps - first_s) / step_s
    return max(int(math.floor(last)) + 2, 1)


def states_to_frames(states: np.ndarray, first_s: float, step_s: float, fps: float, n_frames: int) -> np.ndarray:
    """Model states `(J, D)` (state `j` centred on `first_s + j * step_s` s) -> `(n_frames, D) float32`,
    row `i` linearly interpolated at `(i + 0.5) / fps` s (held constant outside the states' span)."""
    if states.shape[0] == 1:
        return np.repeat(states.astype(np.float32), n_frames, axis=0)
    pos = (((np.arange(n_frames) + 0.5) / fps) - first_s) / step_s
    j0 = np.clip(np.floor(pos).astype(np.int64), 0, states.shape[0] - 2)
    w = np.clip(pos - j0, 0.0, 1.0)[:, None]
    out = (1.0 - w) * states[j0].astype(np.float64) + w * states[j0 + 1].astype(np.float64)
    return np.ascontiguousarray(out, dtype=np.float32)


class ModelCache:
    """Loaded models shared by encoder instances (configs call `setup()` per clip; loading is slow).

    Keeps the `size` most recently used entries, so memory stays bounded when models are switched.
    """

    def __init__(self, size: int = 2) -> None:
        self._size = size
        self._items: dict[Any, Any] = {}

    def get(self, key: Any, load: Any) -> Any:
        if key in self._items:
            self._items[key] = self._items.pop(key)  # most recent last
        else:
            value = load()
            while len(self._items) >= self._size:
                self._items.pop(next(iter(self._items)))
            self._items[key] = value
        return self._items[key]

    def clear(self) -> None:
        self._items.clear()
