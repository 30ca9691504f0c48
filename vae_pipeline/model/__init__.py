"""VGGT reimplementation: state-dict compatible with facebook/VGGT-1B."""

from .config import ConfigError, VGGTConfig
from .inference import predict
from .loading import CheckpointError, load_vggt
from .pose_encoding import extri_intri_to_pose_encoding, pose_encoding_to_extri_intri
from .vggt import VGGT

__all__ = [
    "CheckpointError",
    "ConfigError",
    "VGGT",
    "VGGTConfig",
    "extri_intri_to_pose_encoding",
    "load_vggt",
    "pose_encoding_to_extri_intri",
    "predict",
]
