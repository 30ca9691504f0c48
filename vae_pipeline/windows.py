"""Sliding windows over a sequence.

Windows are the unit of reconstruction: each holds ``window_size`` consecutive frames, starts ``stride`` frames
after the previous one, and the last one is moved back to end at the last frame, so no frame is dropped and no
window is short. (Batches, the unit of a forward pass, are formed by the executor; a window's folder name
depends only on its index and the requested batch size, see ``jobs.WindowJob``.)
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceType
from typing import TypeVar

T = TypeVar("T")


def _check_positive(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}")


def window_starts(num_items: int, window_size: int, stride: int) -> list[int]:
    """First item index of every window, in increasing order (see :func:`create_windows`)."""
    _check_positive(window_size, "window size")
    _check_positive(stride, "window stride")
    if stride > window_size:
        raise ValueError(
            f"window stride ({stride}) must be <= window size ({window_size}) so no frame is dropped"
        )
    if num_items < 0:
        raise ValueError(f"number of items must be >= 0, got {num_items}")
    if num_items == 0:
        return []
    if num_items <= window_size:
        return [0]
    last_start = num_items - window_size
    starts = list(range(0, last_start + 1, stride))
    if starts[-1] != last_start:
        starts.append(last_start)
    return starts


def create_windows(items: SequenceType[T], window_size: int, stride: int) -> list[list[T]]:
    """Split ``items`` into overlapping windows of consecutive items.

    Windows start at 0, stride, 2*stride, ...; when the last regular window does not reach the last item, one more
    window ending exactly at the last item is added (it overlaps its predecessor by more than usual). Every window
    has exactly ``window_size`` items, except when there are fewer items than that: then the only window holds all
    of them (callers warn about it; check ``len(items) < window_size``). No items, no windows.

    Raises:
        ValueError: ``window_size`` or ``stride`` below 1, or ``stride > window_size`` (frames between windows
            would never be reconstructed).
    """
    return [list(items[start : start + window_size]) for start in window_starts(len(items), window_size, stride)]
