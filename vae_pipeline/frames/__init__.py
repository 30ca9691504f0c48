"""Frames: find sequences on disk, decode each frame once, and prepare model input.

The model-input half (``preprocess``) needs torch and is imported on first use: CPU worker processes unpickle
``Sequence`` and ``Frame`` from this package, and importing torch would cost each of them seconds and hundreds of
megabytes for nothing.
"""

from .decode import (
    FrameError,
    FrameSource,
    decode_image,
    image_size,
    needs_normalized_copy,
    sequence_frame_sizes,
)
from .discover import (
    IMAGE_EXTENSIONS,
    ROOT_SEQUENCE_NAME,
    VIDEO_EXTENSIONS,
    Frame,
    InputError,
    InputNotice,
    Sequence,
    SequenceFailure,
    VideoLength,
    count_video_frames,
    discover_inputs,
    discover_sequences,
    natural_key,
    video_frame_name,
)

_PREPROCESS_NAMES = (
    "MODEL_IMAGE_SIZE",
    "PATCH_SIZE",
    "RESIZE_MODES",
    "SQUARE_LOAD_SIZE",
    "PreparedFrame",
    "conform_frames",
    "model_input_size",
    "prepare_frame",
    "stack_frames",
)


def __getattr__(name: str):
    if name in _PREPROCESS_NAMES:
        from . import preprocess

        return getattr(preprocess, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "IMAGE_EXTENSIONS",
    "MODEL_IMAGE_SIZE",
    "PATCH_SIZE",
    "RESIZE_MODES",
    "ROOT_SEQUENCE_NAME",
    "SQUARE_LOAD_SIZE",
    "VIDEO_EXTENSIONS",
    "Frame",
    "FrameError",
    "FrameSource",
    "InputError",
    "InputNotice",
    "PreparedFrame",
    "Sequence",
    "SequenceFailure",
    "VideoLength",
    "conform_frames",
    "count_video_frames",
    "decode_image",
    "discover_inputs",
    "discover_sequences",
    "image_size",
    "model_input_size",
    "natural_key",
    "needs_normalized_copy",
    "prepare_frame",
    "sequence_frame_sizes",
    "stack_frames",
    "video_frame_name",
]
