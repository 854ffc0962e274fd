from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_thread) -> None:
    """Every test here runs with one torch thread (see tests/conftest.py)."""
