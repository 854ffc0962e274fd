"""Stand-in avatars for evaluation tests (importable: tests/ is on sys.path through its conftest).

They implement what `erlnet.eval.avatar.evaluate_subject` needs (`image_size`, `check_motion`,
`render`) without a renderer: one returns the real frame of the motion it is given, one a fixed frame.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from erlnet.io.subject import Subject
from erlnet.types import Motion


def _motion_keys(expression: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """(T, D) rows identifying a frame's tracked motion."""
    n = len(expression)
    return np.concatenate([np.asarray(expression, np.float64).reshape(n, -1),
                           np.asarray(rotation, np.float64).reshape(n, 9),
                           np.asarray(translation, np.float64).reshape(n, 3)], axis=1)


def _to_output(images: list[np.ndarray]) -> SimpleNamespace:
    return SimpleNamespace(rgb=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0)


class TruthAvatar:
    """Renders, for each frame of the motion it is driven by, the real subject frame whose tracked
    motion that is (found by nearest tracked expression and head pose): a perfect renderer, on any
    subset of the subject's frames (held-out or training)."""

    def __init__(self, subject: Path) -> None:
        self.subject = Subject(subject)
        self.image_size = self.subject.manifest.size
        tr = self.subject.tracking()
        self.keys = _motion_keys(tr["expression"], tr["rotation"], tr["translation"])
        self.rendered: list[int] = []  # subject frames rendered so far, in order

    def check_motion(self, motion: Motion) -> None:
        pass

    def frames_of(self, motion: Motion, start: int = 0, stop: int | None = None) -> np.ndarray:
        key = _motion_keys(motion.expression[start:stop], motion.rotation[start:stop], motion.translation[start:stop])
        return ((key[:, None] - self.keys[None]) ** 2).sum(axis=2).argmin(axis=1)

    def render(self, motion: Motion, start: int = 0, stop: int | None = None) -> SimpleNamespace:
        idx = self.frames_of(motion, start, stop)
        self.rendered += idx.tolist()
        return _to_output([self.subject.frame(int(i)) for i in idx])


class FixedAvatar:
    """Renders one fixed real frame whatever the motion: a renderer whose mouth never moves."""

    def __init__(self, subject: Path, frame: int) -> None:
        s = Subject(subject)
        self.image_size = s.manifest.size
        self.image = s.frame(frame)

    def check_motion(self, motion: Motion) -> None:
        pass

    def render(self, motion: Motion, start: int = 0, stop: int | None = None) -> SimpleNamespace:
        n = len(motion.expression[start:stop])
        return _to_output([self.image] * n)
