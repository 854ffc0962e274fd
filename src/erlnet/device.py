"""Device choice: CUDA when present, else CPU."""

from __future__ import annotations

import torch


def default_device() -> torch.device:
    """The device erlnet computes on unless told otherwise: CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
