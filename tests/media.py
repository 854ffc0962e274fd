"""Small generated media shared by tests (importable: tests/ is on sys.path through its conftest)."""

from __future__ import annotations

import numpy as np


def portrait_frames(n: int) -> list[np.ndarray]:
    """n head-and-shoulders crops (256, 256, 3) uint8 of the astronaut photo drifting a few pixels,
    so every frame has one face."""
    from skimage import data

    img = data.astronaut()
    out = []
    for i in range(n):
        dx, dy = int(round(3 * np.sin(i / 3))), int(round(2 * np.cos(i / 4)))
        out.append(np.ascontiguousarray(img[10 + dy : 266 + dy, 110 + dx : 366 + dx]))
    return out
