"""Sliding windows over a sequence, and their grouping into forward-pass batches.

Windows are the unit of reconstruction: each holds ``window_size`` consecutive frames, starts ``stride`` frames
after the previous one, and the last one is moved back to end at the last frame, so no frame is dropped and no
window is short. Batches are the unit of a forward pass; a window's folder name depends only on its global index
and the requested batch size, never on how the work was actually split.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from collections.abc import Sequence as SequenceType
from dataclasses import dataclass
from typing import Generic, TypeVar

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


@dataclass(frozen=True)
class WindowBatch(Generic[T]):
    """Windows stacked into one forward pass.

    ``batch_idx`` is ``global_window_idx // requested_batch_size`` for every window in it: a batch of windows of
    mixed shapes is split into several ``WindowBatch`` objects that share ``batch_idx``, so output folders
    (``batch_{batch_idx:03d}/window_{i:03d}``) stay the same however the work is split.
    """

    batch_idx: int
    windows: list[tuple[int, list[T]]]

    @property
    def window_indices(self) -> list[int]:
        return [index for index, _ in self.windows]

    def __len__(self) -> int:
        return len(self.windows)


def batch_windows(
    windows: SequenceType[list[T]],
    batch_size: int,
    shape_of: Callable[[list[T]], Hashable] | None = None,
) -> list[WindowBatch[T]]:
    """Group consecutive windows into forward-pass batches of at most ``batch_size`` windows.

    Windows with different ``shape_of(window)`` (e.g. the model input size of their frames) are never put in one
    batch: a nominal batch is cut into runs of consecutive same-shape windows. Runs, rather than grouping all
    same-shape windows of a nominal batch together, keep windows in increasing order overall, which is what lets a
    frame loader release frames as soon as the windows past them have started.

    Args:
        windows: windows of one sequence, in order; their position is the global window index.
        batch_size: requested windows per forward pass (the folder-naming batch size).
        shape_of: key that must be equal for windows stacked together; ``None`` treats all windows as stackable.
    """
    _check_positive(batch_size, "window batch size")
    batches: list[WindowBatch[T]] = []
    for first in range(0, len(windows), batch_size):
        batch_idx = first // batch_size
        run: list[tuple[int, list[T]]] = []
        run_shape: Hashable = None
        for index in range(first, min(first + batch_size, len(windows))):
            window = windows[index]
            shape = shape_of(window) if shape_of is not None else None
            if run and shape != run_shape:
                batches.append(WindowBatch(batch_idx, run))
                run = []
            run.append((index, window))
            run_shape = shape
        batches.append(WindowBatch(batch_idx, run))
    return batches
