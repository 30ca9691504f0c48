"""From one window's predictions to a pycolmap reconstruction in the original frames' pixels.

``reconstruct_window(prediction, options)`` builds the feed-forward model (confident depth points, predicted
cameras) or, with ``use_ba``, a bundle-adjusted model from weight-free (or VGGT) tracks, falling back to the
feed-forward model when bundle adjustment fails.
"""

from .types import (
    CAMERA_TYPES,
    VERDICTS,
    ReconstructionOptions,
    ReconstructionReport,
    ReconstructionResult,
    WindowMetrics,
    WindowPrediction,
)
from .window import reconstruct_window

__all__ = [
    "CAMERA_TYPES",
    "ReconstructionOptions",
    "ReconstructionReport",
    "ReconstructionResult",
    "VERDICTS",
    "WindowMetrics",
    "WindowPrediction",
    "reconstruct_window",
]
