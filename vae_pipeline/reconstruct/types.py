"""The data that crosses the reconstruction boundary: one window's predictions in, a COLMAP model out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pycolmap

from ..declare import at_least, positive, setting, within
from .tracking import TRACKERS

CAMERA_TYPES = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "OPENCV")


@dataclass
class WindowPrediction:
    """One window's predictions at model resolution (numpy arrays, S frames of h x w pixels).

    Pixel coordinates here follow OpenCV (the centre of the first pixel is (0, 0)), as VGGT predicts them.

    names: S frame file names, used as COLMAP image names.
    images: uint8 [S, h, w, 3], the frames as the model saw them (RGB).
    extrinsic: [S, 3, 4] camera-from-world, OpenCV axes.
    intrinsic: [S, 3, 3] at model resolution.
    original_sizes: [S, 2] as (width, height) of the frames on disk.
    depth, depth_conf: [S, h, w]; without depth, BA triangulates its points from the tracks.
    model_to_original: [S, 4] as (sx, sy, ox, oy) with x_original = sx * x_model + ox in COLMAP pixel-centre
        convention; None means a plain resize of the whole frame.
    tracks: [S, N, 2] model-resolution pixels and track_vis [S, N] in [0, 1] (VGGT's track head); None lets the
        weight-free tracker compute tracks from ``images``. track_query_frame [N]: the frame each given track
        started on (where its position is exact); None: the frame where it is most visible.
    """

    names: list[str]
    images: np.ndarray
    extrinsic: np.ndarray
    intrinsic: np.ndarray
    original_sizes: np.ndarray
    depth: np.ndarray | None = None
    depth_conf: np.ndarray | None = None
    model_to_original: np.ndarray | None = None
    tracks: np.ndarray | None = None
    track_vis: np.ndarray | None = None
    track_query_frame: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return len(self.names)

    @property
    def model_hw(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def validate(self) -> None:
        """Raise ValueError naming the first field whose shape does not fit the others."""
        s = self.num_frames
        h, w = self.model_hw
        expected = {
            "images": (s, h, w, 3),
            "extrinsic": (s, 3, 4),
            "intrinsic": (s, 3, 3),
            "original_sizes": (s, 2),
            "depth": (s, h, w),
            "depth_conf": (s, h, w),
            "model_to_original": (s, 4),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is not None and tuple(np.shape(value)) != shape:
                raise ValueError(f"WindowPrediction.{name} has shape {tuple(np.shape(value))}, expected {shape}")
        if self.images.dtype != np.uint8:
            raise ValueError(f"WindowPrediction.images must be uint8, got {self.images.dtype}")
        if self.tracks is not None:
            if self.tracks.ndim != 3 or self.tracks.shape[0] != s or self.tracks.shape[2] != 2:
                raise ValueError(f"WindowPrediction.tracks has shape {self.tracks.shape}, expected ({s}, N, 2)")
            if self.track_vis is not None and self.track_vis.shape != self.tracks.shape[:2]:
                raise ValueError(
                    f"WindowPrediction.track_vis has shape {self.track_vis.shape}, expected {self.tracks.shape[:2]}"
                )


@dataclass
class ReconstructionOptions:
    """The CLI's reconstruction flags (snake case, same defaults) plus the window's identity.

    max_reproj_error is in pixels of the ORIGINAL frames. tracker: "sift" or "klt" (weight-free, computed from the
    images) or "vggt" (tracks come with the prediction, from VGGT's track head). window_id (e.g.
    "seq/window_003") and seed together seed every random choice, so a window's output does not depend on the
    batch it ran in.
    """

    use_ba: bool = setting(
        True, affects_output=True,
        help="Track points and bundle-adjust each window; off: export confident depth points.")
    max_reproj_error: float = setting(
        8.0, affects_output=True, check=positive,
        help="Observations farther than this from their projection (pixels of the original frames) are dropped.")
    shared_camera: bool = setting(
        True, affects_output=True, help="One camera (intrinsics) for all frames of a window.")
    camera_type: str = setting(
        "SIMPLE_PINHOLE", affects_output=True, choices=CAMERA_TYPES,
        help="COLMAP camera model refined by bundle adjustment.")
    vis_thresh: float = setting(
        0.2, affects_output=True, check=within(0, 1),
        help="Track observations with visibility below this are ignored.")
    query_frame_num: int = setting(
        8, affects_output=True, check=at_least(1), help="Frames of each window on which track query points are picked.")
    max_query_pts: int = setting(
        4096, affects_output=True, check=at_least(1), help="Most query points per query frame.")
    fine_tracking: bool = setting(
        True, affects_output=True, help="Refine tracks to sub-pixel accuracy (slower).")
    conf_thres_value: float = setting(
        5.0, affects_output=True, check=at_least(0),
        help="Without bundle adjustment: keep depth points whose confidence is at least this.")
    max_points: int = setting(
        100000, affects_output=True, check=at_least(1),
        help="Without bundle adjustment: most points per window (seeded random subset).")
    tracker: str = setting(
        "sift", affects_output=True, choices=(*TRACKERS, "vggt"),
        help="Point tracker for bundle adjustment: sift (SIFT matched across every pair of frames) or klt "
        "(pyramidal Lucas-Kanade), both weight-free on the CPU, or vggt: VGGT's own track head on the GPU.")
    seed: int = setting(
        42, affects_output=True,
        help="Seed of every random choice; each window derives its own from it and its name.")
    min_track_length: int = setting(
        2, affects_output=True, cli=False, help="Points seen in fewer frames are dropped.")
    window_id: str = setting(
        "", affects_output=False, cli=False,
        help="The window being reconstructed, set per window: part of its identity, not a setting of the run.")

    def validate(self) -> None:
        if self.camera_type not in CAMERA_TYPES:
            raise ValueError(f"camera_type {self.camera_type!r} is not one of {', '.join(CAMERA_TYPES)}")
        if self.max_reproj_error <= 0:
            raise ValueError(f"max_reproj_error must be positive, got {self.max_reproj_error}")
        if self.query_frame_num < 1 or self.max_query_pts < 1 or self.max_points < 1:
            raise ValueError("query_frame_num, max_query_pts and max_points must be at least 1")
        if self.min_track_length < 2:
            raise ValueError(f"min_track_length must be at least 2, got {self.min_track_length}")


VERDICTS = ("good", "poor", "failed")  # best first


@dataclass
class WindowMetrics:
    """Quality figures of one window's model as written (numbers; 0 where a value is undefined).

    Reprojection errors are in original-frame pixels: ``reproj_error_per_observation_px`` averages over every
    observation, ``reproj_error_per_point_px`` first averages each point's observations and then the points (what
    COLMAP and pycolmap report as the mean reprojection error). ``motion_path_over_depth``: the length of the camera
    path divided by the median scene depth; ``rotation_span_deg``: the largest rotation between two frames.
    ``ba_rotation_change_deg`` / ``ba_centre_change``: how far bundle adjustment moved the cameras away from the
    prediction (largest over frames; the centre change relative to the window's extent, after a similarity
    alignment). ``weakest_link_points``: the fewest points seen on both sides of any split of the frames into two
    groups that the verdict examines.
    """

    registered_frames: int = 0
    points: int = 0
    observations: int = 0
    tracks: int = 0
    track_length_median: float = 0.0
    reproj_error_per_observation_px: float = 0.0
    reproj_error_per_point_px: float = 0.0
    triangulation_angle_median_deg: float = 0.0
    motion_path_over_depth: float = 0.0
    rotation_span_deg: float = 0.0
    depth_conf_median: float = 0.0
    depth_conf_mean: float = 0.0
    depth_conf_share_above_threshold: float = 0.0
    ba_rotation_change_deg: float = 0.0
    ba_centre_change: float = 0.0
    weakest_link_points: int = 0


@dataclass
class ReconstructionReport:
    """What happened to one window, as typed data; ``as_dict()`` is ``ReconstructionResult.info``.

    status: "ok" (a model was produced). ba: "ok" | "failed" | "off", with ba_reason when it failed.
    verdict: "good" (trust it without looking) | "poor" (usable with care) | "failed" (do not use), with
    verdict_reason for anything but good. tracker: which tracks BA used ("klt", "sift", ..., "given").
    """

    status: str = "ok"
    ba: str = "off"
    ba_reason: str | None = None
    verdict: str = "failed"
    verdict_reason: str | None = None
    tracker: str | None = None
    metrics: WindowMetrics = field(default_factory=WindowMetrics)
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReconstructionResult:
    """A window's COLMAP model in original-frame pixels, ready for ``reconstruction.write(path)``.

    ``report`` says what happened (BA outcome, verdict, metrics, timings); ``info`` is the same as a plain dict,
    what window.json records.
    """

    reconstruction: pycolmap.Reconstruction
    report: ReconstructionReport = field(default_factory=ReconstructionReport)

    @property
    def info(self) -> dict[str, Any]:
        return self.report.as_dict()
