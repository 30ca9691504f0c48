"""Find the frame sequences under an input folder: image folders and video files.

A folder holding images is one sequence (its images in natural order); each video file is one sequence; folders
are searched recursively, so a folder of folders gives one sequence per folder. A sequence's name is its path
relative to the input folder (``"."`` for the input folder itself, the path without suffix for a video); the
caller mirrors it in the output folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi")

ROOT_SEQUENCE_NAME = "."

_DIGITS = re.compile(r"(\d+)")


class InputError(ValueError):
    """The input folder cannot be turned into frame sequences; the message is one line meant for the user."""


@dataclass(frozen=True)
class Frame:
    """One frame of a sequence.

    ``name`` is unique within its sequence and is used as the COLMAP image name: the file name for images,
    ``frame_000123.png`` for frame 123 of a video. ``video_index`` is the frame's position in its video (counting
    every decoded frame, whatever the frame step), ``None`` for image files.
    """

    name: str
    path: Path
    video_index: int | None = None


@dataclass
class Sequence:
    """Frames that are windowed together; ``source`` is the image folder or the video file."""

    name: str
    source: Path
    frames: list[Frame]
    is_video: bool

    def __len__(self) -> int:
        return len(self.frames)


@dataclass(frozen=True)
class SequenceFailure:
    """An input that looks like a sequence but cannot be read (a video that does not open or decode, a folder
    that cannot be listed); ``reason`` names the file and what is wrong."""

    name: str
    source: Path
    reason: str


@dataclass(frozen=True)
class InputNotice:
    """Something the run goes on without but the user must hear of: a frame left out (a link to a file that is
    not there), a video shorter than its container says (truncated). ``message`` names the file."""

    path: Path
    message: str


@dataclass
class Inputs:
    """What ``discover_inputs`` found: the readable sequences, the inputs that could not be read, and what was
    left out of the sequences (``notices``)."""

    sequences: list[Sequence]
    failures: list[SequenceFailure]
    notices: list[InputNotice] = field(default_factory=list)


def natural_key(name: str) -> tuple:
    """Sort key under which ``frame2`` precedes ``frame10``, ignoring letter case.

    Digit runs compare as numbers, the rest case-folded; the name itself breaks ties (``a01``/``a1``, ``A``/``a``)
    so the order never depends on the order the file system lists files in.
    """
    parts = _DIGITS.split(name)
    folded = tuple(int(part) if index % 2 else part.casefold() for index, part in enumerate(parts))
    return folded, name


def video_frame_name(video_index: int) -> str:
    """COLMAP image name of a video's frame: ``frame_000123.png``."""
    return f"frame_{video_index:06d}.png"


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    return path.suffix.lower() in suffixes


def _check_frame_step(frame_step: int) -> None:
    if isinstance(frame_step, bool) or not isinstance(frame_step, int) or frame_step < 1:
        raise InputError(f"frame step must be an integer >= 1, got {frame_step!r}")


def _seek_finds_last_frame(capture: cv2.VideoCapture, count: int) -> bool:
    """Whether the video has a frame at ``count - 1`` and none after it."""
    capture.set(cv2.CAP_PROP_POS_FRAMES, count - 1)
    return capture.grab() and not capture.grab()


@dataclass(frozen=True)
class VideoLength:
    """Frames sequential decoding yields, and the count the container announces (0 when it announces none)."""

    decoded: int
    announced: int

    @property
    def truncated(self) -> bool:
        return 0 < self.decoded < self.announced


def count_video_frames(path: Path) -> VideoLength:
    """Number of frames that sequential decoding of ``path`` yields, beside the container's own count.

    The container's count is cheap but can be wrong (estimated from duration and frame rate, or a truncated file);
    it is trusted only when seeking confirms that its last frame exists and is the last one, else every frame is
    decoded and counted, which costs a few milliseconds per frame.

    Raises:
        InputError: the file cannot be opened as a video or holds no frame.
    """
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise InputError(f"cannot read video {path}: OpenCV could not open it (unsupported or corrupt file)")
        announced = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        if announced > 0 and _seek_finds_last_frame(capture, announced):
            return VideoLength(announced, announced)
    finally:
        capture.release()
    capture = cv2.VideoCapture(str(path))
    try:
        count = 0
        while capture.grab():
            count += 1
    finally:
        capture.release()
    if count == 0:
        raise InputError(f"cannot read video {path}: no frame could be decoded")
    return VideoLength(count, announced)


def _video_sequence(path: Path, name: str, frame_step: int, found: Inputs) -> Sequence:
    length = count_video_frames(path)
    if length.truncated:
        found.notices.append(InputNotice(path, (
            f"video {path} announces {length.announced} frames but only {length.decoded} decode (truncated or "
            f"damaged file?): its sequence has the {length.decoded} that do")))
    frames = [Frame(video_frame_name(index), path, index) for index in range(0, length.decoded, frame_step)]
    return Sequence(name=name, source=path, frames=frames, is_video=True)


def _relative_name(path: Path, root: Path) -> str:
    relative = path.relative_to(root).as_posix()
    return relative if relative != "." else ROOT_SEQUENCE_NAME


def _visit(folder: Path, root: Path, frame_step: int, found: Inputs, visited: set[Path]) -> None:
    resolved = folder.resolve()
    if resolved in visited:
        return
    visited.add(resolved)
    try:
        listing = list(folder.iterdir())
    except OSError as exc:
        reason = f"cannot list folder {folder}: {exc.strerror or exc}"
        if folder == root:
            raise InputError(reason) from exc
        found.failures.append(SequenceFailure(_relative_name(folder, root), folder, reason))
        return
    entries = sorted((entry for entry in listing if not _is_hidden(entry)), key=lambda entry: natural_key(entry.name))
    for entry in entries:
        if _has_suffix(entry, IMAGE_EXTENSIONS + VIDEO_EXTENSIONS) and entry.is_symlink() and not entry.exists():
            found.notices.append(InputNotice(entry, (
                f"{entry} is a link to {os.readlink(entry)}, which does not exist: left out, and the windows of "
                f"{folder} are cut without it")))
    images = [entry for entry in entries if entry.is_file() and _has_suffix(entry, IMAGE_EXTENSIONS)]
    if images:
        frames = [Frame(path.name, path) for path in images[::frame_step]]
        found.sequences.append(Sequence(_relative_name(folder, root), folder, frames, is_video=False))
    for entry in entries:
        if entry.is_file() and _has_suffix(entry, VIDEO_EXTENSIONS):
            name = _relative_name(entry.with_suffix(""), root)
            try:
                found.sequences.append(_video_sequence(entry, name, frame_step, found))
            except InputError as exc:
                found.failures.append(SequenceFailure(name, entry, str(exc)))
        elif entry.is_dir():
            _visit(entry, root, frame_step, found, visited)


def _check_unique_names(sequences: list[Sequence]) -> None:
    sources: dict[str, Path] = {}
    for sequence in sequences:
        if sequence.name in sources:
            raise InputError(
                f"two inputs map to the same output name {sequence.name!r}: {sources[sequence.name]} and "
                f"{sequence.source}; rename one of them"
            )
        sources[sequence.name] = sequence.source


def discover_inputs(input_dir: Path, frame_step: int = 1) -> Inputs:
    """All frame sequences under ``input_dir`` in natural order of their paths, and the inputs that cannot be read.

    Images (``IMAGE_EXTENSIONS``, any letter case) directly inside a folder form one sequence; each video
    (``VIDEO_EXTENSIONS``) is one sequence; sub-folders are searched recursively. Hidden files and folders
    (dot-names) are ignored. ``frame_step`` keeps frames 0, N, 2N, ... of every sequence. A video that cannot be
    opened or decoded, or a sub-folder that cannot be listed, is a ``SequenceFailure``; the others are found.

    Raises:
        InputError: missing, unlistable or non-folder input, two inputs with the same sequence name (``clip/``
            beside ``clip.mp4``), or nothing that looks like frames at all.
    """
    _check_frame_step(frame_step)
    input_dir = Path(input_dir)
    if not input_dir.exists():
        raise InputError(f"input folder {input_dir} does not exist")
    if not input_dir.is_dir():
        raise InputError(f"input {input_dir} is not a folder")
    found = Inputs([], [])
    _visit(input_dir, input_dir, frame_step, found, visited=set())
    if not found.sequences and not found.failures:
        looked_for = " ".join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
        raise InputError(f"no frames found in {input_dir} (looked recursively for {looked_for}, any letter case)")
    _check_unique_names(found.sequences)
    return found


def discover_sequences(input_dir: Path, frame_step: int = 1) -> list[Sequence]:
    """The sequences of ``discover_inputs``; an input that cannot be read is an ``InputError`` here."""
    found = discover_inputs(input_dir, frame_step)
    if found.failures:
        raise InputError(found.failures[0].reason)
    return found.sequences
