"""Windows of real frames with ground-truth cameras, handed to ``reconstruct_window`` as VGGT would hand them.

A window's prediction holds the frames at model resolution (aspect mode, as the pipeline prepares them) and
cameras made from the ground truth, disturbed by about the size of VGGT's own errors: each rotation by
``rotation_deg`` about a random axis, each camera centre by ``centre_fraction`` of the window's extent in a random
direction, the focal length of the whole window by ``focal_fraction`` (up or down) and each frame's by 1 % more,
and the principal point at the image centre. The world frame is the first camera's and the scale makes the
camera path unit length, as VGGT normalises its output. No depth: points are triangulated from the tracks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vae_pipeline.finish import FinishSettings, finish_window
from vae_pipeline.frames import Frame, Sequence, decode_image, discover_sequences, prepare_frame
from vae_pipeline.jobs import WindowJob, WindowOutcome
from vae_pipeline.reconstruct import ReconstructionOptions, WindowPrediction
from vae_pipeline.windows import create_windows


@dataclass
class GroundTruthWindow:
    """One window: its prediction (disturbed cameras) and the exact cameras.

    gt_cam_from_world [S, 3, 4] in the same world frame and scale as the prediction; gt_intrinsic [S, 3, 3] in
    original pixels (as the data set gives them).
    """

    sequence: str
    window: int
    prediction: WindowPrediction
    gt_cam_from_world: np.ndarray
    gt_intrinsic: np.ndarray
    image_paths: list[Path]

    @property
    def name(self) -> str:
        return f"{self.sequence}/window_{self.window:03d}"

    def job(self, window_batch_size: int = 4) -> WindowJob:
        """The window as the pipeline plans it: its frames are the whole sequence of its files."""
        frames = [Frame(path.name, path) for path in self.image_paths]
        sequence = Sequence(self.sequence, self.image_paths[0].parent, frames, is_video=False)
        return WindowJob(sequence, self.window, self.window // window_batch_size, tuple(range(len(frames))))

    def finish(self, output_dir: Path, options: ReconstructionOptions, window_batch_size: int = 4,
               provenance: dict | None = None, keep: str = "poor") -> WindowOutcome:
        """Reconstruct the window and write its folder under ``output_dir`` as the pipeline's CPU workers do
        (``finish_window``, with ``--keep``); the outcome is its manifest line."""
        settings = FinishSettings(output_dir, options, provenance or {}, keep=keep)
        return finish_window(self.job(window_batch_size), self.prediction, settings)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def read_gt(gt_dir: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """camera-from-world [3, 4] by image name, and K [3, 3] (poses.txt, intrinsics.txt)."""
    poses = {}
    for line in (gt_dir / "poses.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, *values = line.split()
            q, t = np.array(values[:4], float), np.array(values[4:7], float)
            poses[name] = np.concatenate([quaternion_to_matrix(q), t[:, None]], axis=1)
    rows = [line.split() for line in (gt_dir / "intrinsics.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    _, _, fx, fy, cx, cy = (float(v) for v in rows[0])
    return poses, np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])


def _random_rotation(rng: np.random.Generator, angle_deg: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _normalise(cam_from_world: np.ndarray) -> np.ndarray:
    """The same cameras in the first camera's frame, scaled so that the camera path has unit length."""
    first = np.eye(4)
    first[:3] = cam_from_world[0]
    poses = np.einsum("sij,jk->sik", cam_from_world, np.linalg.inv(first))
    centres = -np.einsum("sji,sj->si", poses[:, :, :3], poses[:, :, 3])
    path = np.linalg.norm(np.diff(centres, axis=0), axis=1).sum()
    poses[:, :, 3] /= max(path, 1e-12)
    return poses


def disturb(cam_from_world: np.ndarray, rng: np.random.Generator, rotation_deg: float,
            centre_fraction: float) -> np.ndarray:
    centres = -np.einsum("sji,sj->si", cam_from_world[:, :, :3], cam_from_world[:, :, 3])
    extent = max(np.linalg.norm(a - b) for a in centres for b in centres)
    disturbed = np.empty_like(cam_from_world)
    for i, (pose, centre) in enumerate(zip(cam_from_world, centres)):
        rotation = _random_rotation(rng, rotation_deg) @ pose[:, :3]
        direction = rng.normal(size=3)
        centre = centre + centre_fraction * extent * direction / np.linalg.norm(direction)
        disturbed[i] = np.concatenate([rotation, (-rotation @ centre)[:, None]], axis=1)
    return disturbed


def gt_windows(
    sequence_dir: Path, window_size: int = 8, stride: int = 4, seed: int = 0, rotation_deg: float = 1.5,
    centre_fraction: float = 0.05, focal_fraction: float = 0.08, frame_step: int = 1,
) -> list[GroundTruthWindow]:
    """Every window of the sequence ``sequence_dir`` (``images/`` beside ``gt/``), of every ``frame_step``-th
    frame (a larger step: wider baselines)."""
    poses, k_original = read_gt(sequence_dir / "gt")
    (sequence,) = discover_sequences(sequence_dir / "images", frame_step)
    frames = [prepare_frame(decode_image(frame.path)) for frame in sequence.frames]
    rng = np.random.default_rng(seed)
    windows = []
    for index, members in enumerate(create_windows(list(range(len(frames))), window_size, stride)):
        names = [sequence.frames[i].name for i in members]
        gt = _normalise(np.stack([poses[name] for name in names]))
        prepared = [frames[i] for i in members]
        height, width = prepared[0].image_u8.shape[:2]
        sx = prepared[0].model_to_original[0]
        focal = 0.5 * (k_original[0, 0] + k_original[1, 1]) / sx
        focal *= 1 + focal_fraction * rng.choice([-1.0, 1.0])
        intrinsic = np.stack([
            np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]])
            for f in focal * (1 + 0.01 * rng.normal(size=len(members)))
        ])
        prediction = WindowPrediction(
            names=names,
            images=np.stack([p.image_u8 for p in prepared]),
            extrinsic=disturb(gt, rng, rotation_deg, centre_fraction),
            intrinsic=intrinsic,
            original_sizes=np.array([p.original_size for p in prepared]),
            model_to_original=np.array([p.model_to_original for p in prepared]),
        )
        windows.append(GroundTruthWindow(
            sequence_dir.name if frame_step == 1 else f"{sequence_dir.name}@step{frame_step}", index, prediction, gt, np.repeat(k_original[None], len(members), axis=0),
            [sequence.frames[i].path for i in members],
        ))
    return windows
