"""Progress bars for long work (tqdm on stderr)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None = None, desc: str = "", enabled: bool = True,
             unit: str = "frame") -> Iterator[T]:
    """Iterate over `items` (counted in `unit`s), with a progress bar when `enabled` (the CLI turns it off
    with --quiet)."""
    if not enabled:
        yield from items
        return
    yield from tqdm(items, total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)
