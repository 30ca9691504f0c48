"""Frames: find sequences on disk, decode each frame once, and prepare model input."""

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
    Sequence,
    count_video_frames,
    discover_sequences,
    natural_key,
    video_frame_name,
)
from .preprocess import (
    MODEL_IMAGE_SIZE,
    PATCH_SIZE,
    RESIZE_MODES,
    SQUARE_LOAD_SIZE,
    PreparedFrame,
    model_input_size,
    prepare_frame,
    stack_frames,
)

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
    "PreparedFrame",
    "Sequence",
    "count_video_frames",
    "decode_image",
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
