"""Accuracy of a run's windows against ground-truth cameras.

``metrics`` holds the pure NumPy measures (reusable on cameras held in memory); ``scoring.evaluate_output``
applies them to every window folder of a run; ``python -m vae_pipeline.evaluate`` is the command line.
"""

from .cameras import CameraPoses, read_colmap_cameras
from .ground_truth import GroundTruthError, locate_ground_truth, read_ground_truth, read_pose_files
from .metrics import (
    absolute_trajectory_error,
    auc,
    camera_centres,
    centre_errors,
    focal_errors,
    relative_pose_errors,
    similarity_alignment,
    window_extent,
)
from .results import AccuracyFigures, Evaluation, UnmatchedWindow, WindowEvaluation, read_evaluation
from .scoring import EvaluationInputError, evaluate_output

__all__ = [
    "AccuracyFigures",
    "CameraPoses",
    "Evaluation",
    "EvaluationInputError",
    "GroundTruthError",
    "UnmatchedWindow",
    "WindowEvaluation",
    "absolute_trajectory_error",
    "auc",
    "camera_centres",
    "centre_errors",
    "evaluate_output",
    "focal_errors",
    "locate_ground_truth",
    "read_colmap_cameras",
    "read_evaluation",
    "read_ground_truth",
    "read_pose_files",
    "relative_pose_errors",
    "similarity_alignment",
    "window_extent",
]
