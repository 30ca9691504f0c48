"""Decode frames to 8-bit RGB, each frame once per sequence.

Images are decoded with Pillow as a viewer shows them: EXIF orientation applied, transparency composited over
white, 16-bit data scaled (not clipped) to 8 bits. Videos are decoded sequentially with OpenCV: seeking is slow
and, for many codecs, lands on a nearby keyframe rather than the requested frame.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

import cv2
import numpy as np
from PIL import Image, ImageOps

from .discover import Frame, InputError, Sequence

T = TypeVar("T")

_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
# Modes any RGB reader shows the same way as decode_image does.
_PLAIN_MODES = ("RGB", "L", "P", "1")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class FrameError(InputError):
    """A frame cannot be decoded; the message names the file (and the frame, for videos)."""


def _sixteen_bit_to_u8(data: np.ndarray) -> np.ndarray:
    """Round 0..65535 to 0..255 (x / 257, so white stays white and black stays black)."""
    wide = np.clip(data, 0, 65535).astype(np.uint32)
    return ((wide + 128) // 257).astype(np.uint8)


def _to_rgb_u8(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        # Pillow keeps 16-bit grey as I;16 (or I); convert("L") would clip everything above 255 to white.
        gray = _sixteen_bit_to_u8(np.asarray(image))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        raise ValueError("floating-point images are not supported (their value range is not defined)")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    # 16-bit RGB PNG/TIFF arrive as RGB already reduced by Pillow (high byte, at most 1 level below x / 257).
    return np.array(image.convert("RGB"))


def decode_image(path: Path) -> np.ndarray:
    """Decode an image file as a viewer shows it.

    Returns:
        uint8 array [H, W, 3], RGB, H x W after the EXIF orientation is applied.

    Raises:
        FrameError: missing, unreadable, corrupt or truncated file, or an unsupported pixel format.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return _to_rgb_u8(ImageOps.exif_transpose(image))
    except _DECODE_ERRORS as exc:
        raise FrameError(f"cannot decode image {path}: {exc}") from exc


def _exif_orientation(image: Image.Image) -> int:
    return int(image.getexif().get(_EXIF_ORIENTATION, 1) or 1)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of ``decode_image(path)``, read from the header only."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if _exif_orientation(image) in _TRANSPOSING_ORIENTATIONS:
                width, height = height, width
            return width, height
    except _DECODE_ERRORS as exc:
        raise FrameError(f"cannot read image {path}: {exc}") from exc


def needs_normalized_copy(path: Path) -> bool:
    """Whether a reader that ignores EXIF orientation and transparency would see other pixels than ours.

    Such files should be exported as re-encoded copies of ``decode_image(path)`` rather than links, so that the
    exported cameras (whose image size and pixels are those of the decoded frame) match what any reader loads.
    """
    try:
        with Image.open(path) as image:
            plain = image.mode in _PLAIN_MODES and "transparency" not in image.info
            return not plain or _exif_orientation(image) != 1
    except _DECODE_ERRORS as exc:
        raise FrameError(f"cannot read image {path}: {exc}") from exc


def _open_video(path: Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise FrameError(f"cannot read video {path}: OpenCV could not open it")
    return capture


def sequence_frame_sizes(sequence: Sequence) -> list[tuple[int, int]]:
    """(width, height) of every frame of ``sequence`` as decoded, without decoding every frame.

    Lets windows be grouped by model input size before any frame is loaded.
    """
    if not sequence.is_video:
        return [image_size(frame.path) for frame in sequence.frames]
    capture = _open_video(sequence.source)
    try:
        ok, first = capture.read()
    finally:
        capture.release()
    if not ok:
        raise FrameError(f"cannot read video {sequence.source}: its first frame does not decode")
    height, width = first.shape[:2]
    return [(width, height)] * len(sequence.frames)


def _identity(frame: Frame, image: np.ndarray) -> np.ndarray:
    return image


class FrameSource(Generic[T]):
    """Frames of one sequence, decoded on demand, each once while it is held.

    ``get(i)`` returns ``prepare(frame, rgb_u8)`` for the sequence's i-th frame (the decoded [H, W, 3] uint8 RGB
    array itself without ``prepare``); the result is cached, so overlapping windows share it. Windows are consumed
    in order: ``release_before(i)`` drops frames below ``i`` so memory stays flat on long sequences. A released
    frame asked for again is decoded again (for a video, by decoding from the start).

    Videos are decoded sequentially with one ``cv2.VideoCapture``: frames skipped by the frame step are grabbed
    but not converted, and sequence frames passed on the way to the requested one are cached, since windows will
    need them. Image files of different frames decode in parallel when several threads call ``get``.

    Thread-safe. Use as a context manager, or call ``close()``, to release the video decoder.
    """

    def __init__(self, sequence: Sequence, prepare: Callable[[Frame, np.ndarray], T] | None = None):
        self.sequence = sequence
        self._prepare = prepare if prepare is not None else _identity
        self._lock = threading.Lock()
        self._cache: dict[int, T] = {}
        self._in_progress: dict[int, threading.Event] = {}
        self._released_before = 0
        self._video_lock = threading.Lock()
        self._capture: cv2.VideoCapture | None = None
        self._next_video_index = 0
        self._sequence_index_of = {
            frame.video_index: index for index, frame in enumerate(sequence.frames) if frame.video_index is not None
        }

    def __len__(self) -> int:
        return len(self.sequence.frames)

    @property
    def cached_indices(self) -> list[int]:
        """Sequence indices of the frames held right now."""
        with self._lock:
            return sorted(self._cache)

    def get(self, index: int) -> T:
        """The prepared ``index``-th frame of the sequence; decodes it unless it is held."""
        if not 0 <= index < len(self.sequence.frames):
            raise IndexError(f"frame {index} out of range for sequence {self.sequence.name!r} of {len(self)} frames")
        while True:
            with self._lock:
                if index in self._cache:
                    return self._cache[index]
                pending = self._in_progress.get(index)
                if pending is None:
                    done = self._in_progress[index] = threading.Event()
            if pending is None:
                break
            # Another thread is decoding this frame; if it fails, this thread retries and reports the error itself.
            pending.wait()
        try:
            value = self._load(index)
            with self._lock:
                self._cache[index] = value
            return value
        finally:
            with self._lock:
                del self._in_progress[index]
            done.set()

    def release_before(self, index: int) -> None:
        """Drop the frames with sequence index below ``index`` (no window still to come uses them)."""
        with self._lock:
            self._released_before = max(self._released_before, index)
            for held in [held for held in self._cache if held < index]:
                del self._cache[held]

    def close(self) -> None:
        """Release the video decoder and every held frame."""
        with self._video_lock:
            if self._capture is not None:
                self._capture.release()
                self._capture = None
        with self._lock:
            self._cache.clear()

    def __enter__(self) -> FrameSource[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _load(self, index: int) -> T:
        frame = self.sequence.frames[index]
        if frame.video_index is None:
            return self._prepare(frame, decode_image(frame.path))
        with self._video_lock:
            with self._lock:
                if index in self._cache:
                    return self._cache[index]
            return self._decode_video_until(index, frame.video_index)

    def _worth_keeping(self, sequence_index: int | None, target: int) -> bool:
        if sequence_index is None:
            return False
        if sequence_index == target:
            return True
        # A frame another thread is waiting for is kept too: that thread finds it cached once it gets the decoder.
        with self._lock:
            return sequence_index >= self._released_before and sequence_index not in self._cache

    def _decode_video_until(self, target: int, target_video_index: int) -> T:
        """Decode forward to the video frame ``target_video_index``; caller holds ``_video_lock``."""
        path = self.sequence.source
        if self._capture is None or self._next_video_index > target_video_index:
            if self._capture is not None:
                self._capture.release()
            self._capture = _open_video(path)
            self._next_video_index = 0
        while True:
            video_index = self._next_video_index
            sequence_index = self._sequence_index_of.get(video_index)
            keep = self._worth_keeping(sequence_index, target)
            if keep:
                ok, bgr = self._capture.read()
            else:
                ok, bgr = self._capture.grab(), None
            if not ok:
                raise FrameError(
                    f"cannot read frame {video_index} of video {path}: decoding stopped there "
                    f"(truncated or corrupt file)"
                )
            self._next_video_index += 1
            if not keep:
                continue
            value = self._prepare(self.sequence.frames[sequence_index], cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            if sequence_index == target:
                return value
            with self._lock:
                self._cache[sequence_index] = value
