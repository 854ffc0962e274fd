"""Shared data types that cross stage boundaries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from erlnet.errors import FormatError

MOTION_SCHEMA_VERSION = 1


@dataclass
class Motion:
    """A motion sequence: what the motion model produces and the renderer consumes.

    Shapes: expression (T, D) in the units of `representation`; blink (T,) in [0, 1] (1 = closed);
    rotation (T, 3, 3) and translation (T, 3) metres: the head pose, X_cam = R X_canonical + t
    (docs/conventions.md).
    """

    expression: np.ndarray
    blink: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    fps: float = 25.0
    representation: str = "landmarks"

    def __post_init__(self) -> None:
        t = len(self.expression)
        shapes = {
            "blink": (self.blink.shape, (t,)),
            "rotation": (self.rotation.shape, (t, 3, 3)),
            "translation": (self.translation.shape, (t, 3)),
        }
        for name, (got, want) in shapes.items():
            if tuple(got) != want:
                raise FormatError(f"motion: {name} has shape {tuple(got)}, expected {want}")
        if self.expression.ndim != 2:
            raise FormatError(f"motion: expression must be (T, D), got {self.expression.shape}")

    def __len__(self) -> int:
        return len(self.expression)

    def save(self, path: str | Path) -> None:
        """Write an npz of plain numeric arrays plus a JSON header."""
        header = {"schema_version": MOTION_SCHEMA_VERSION, "fps": self.fps, "representation": self.representation}
        np.savez(
            path,
            header=np.array(json.dumps(header)),
            expression=self.expression.astype(np.float32),
            blink=self.blink.astype(np.float32),
            rotation=self.rotation.astype(np.float32),
            translation=self.translation.astype(np.float32),
        )

    @classmethod
    def load(cls, path: str | Path) -> Motion:
        """Read a motion npz; a wrong or corrupt file gives a `FormatError`."""
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                arrays = {k: z[k] for k in ("expression", "blink", "rotation", "translation")}
        except FileNotFoundError:
            raise FormatError(f"{path}: no such motion file") from None
        except (KeyError, ValueError, OSError, json.JSONDecodeError) as exc:
            raise FormatError(f"{path}: not an erlnet motion file ({exc})") from None
        if header.get("schema_version") != MOTION_SCHEMA_VERSION:
            raise FormatError(f"{path}: motion schema version {header.get('schema_version')} is not supported")
        return cls(**arrays, fps=float(header["fps"]), representation=str(header["representation"]))
