#!/usr/bin/env python3
"""CPU cost and accuracy of the per-window stage on real frames, beside pycolmap's incremental mapping.

For every 8-frame window (stride 4) of the ground-truth sequences under ``--data`` (folders with ``images/`` and
``gt/``), the cameras are handed to the finish stage as VGGT would hand them (``benchmarks/gt_windows.py``:
ground truth disturbed by about VGGT's errors, no depth), and the window is reconstructed and written exactly as
the pipeline's CPU workers do it (``finish_window``: tracking, bundle adjustment, filtering, verdict, export).
Beside it, in the same process, pycolmap's incremental mapping (SIFT, exhaustive matching, one self-calibrated
camera) reconstructs the same frames from scratch.

Printed per window and in total: CPU seconds of each (one thread: process time with every thread pool pinned to
one thread), their ratio, our BA outcome and verdict, and against ground truth the largest and median relative
rotation error over all frame pairs and the largest camera-centre error after a similarity alignment, as a share
of the window's extent.

    python benchmarks/cpu_finish.py --data DATA [--json results.json] [--no-colmap]

DATA holds the sequences as folders named as in GT_SEQUENCES (TUM RGB-D fr3 office at 1 Hz, Middlebury temple
ring, Strecha fountain), each with ``images/`` beside ``gt/poses.txt`` and ``gt/intrinsics.txt`` (the layout of
docs/formats.md, "Ground truth"); by default the ``shared/data`` folder beside the repository.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pycolmap  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.gt_windows import GroundTruthWindow, gt_windows  # noqa: E402
from vae_pipeline.evaluation.metrics import camera_centres, centre_errors, relative_pose_errors  # noqa: E402
from vae_pipeline.reconstruct import ReconstructionOptions  # noqa: E402

GT_SEQUENCES = ("tum_fr3_office_1hz", "middlebury_templering", "strecha_fountain_p11")


@dataclasses.dataclass
class Accuracy:
    """Against ground truth, over the frames a method registered."""

    registered: int
    rotation_max_deg: float
    rotation_median_deg: float
    centre_max: float


@dataclasses.dataclass
class WindowRow:
    window: str
    frames: int
    ours_cpu_s: float
    ours_ba: str
    ours_verdict: str
    ours_reason: str | None
    ours: Accuracy
    colmap_cpu_s: float | None = None
    colmap: Accuracy | None = None


def accuracy(names: list[str], poses: dict[str, np.ndarray], window: GroundTruthWindow) -> Accuracy:
    index = {name: i for i, name in enumerate(window.prediction.names)}
    found = [name for name in window.prediction.names if name in poses]
    if len(found) < 3:
        return Accuracy(len(found), float("nan"), float("nan"), float("nan"))
    pred = np.stack([poses[name] for name in found])
    gt = window.gt_cam_from_world[[index[name] for name in found]]
    rotation, _ = relative_pose_errors(pred, gt)
    centre = centre_errors(camera_centres(pred), camera_centres(gt))
    return Accuracy(len(found), float(rotation.max()), float(np.median(rotation)), float(centre.max()))


def model_poses(reconstruction: pycolmap.Reconstruction) -> dict[str, np.ndarray]:
    return {image.name: image.cam_from_world().matrix() for image in reconstruction.images.values()
            if image.has_pose}


def run_ours(window: GroundTruthWindow, options: ReconstructionOptions, output: Path) -> tuple[float, dict, dict]:
    start = time.process_time()
    outcome = window.finish(output, options)
    cpu = time.process_time() - start
    folder = window.job().folder(output)
    poses = model_poses(pycolmap.Reconstruction(str(folder / "sparse"))) if outcome.status == "ok" else {}
    return cpu, dataclasses.asdict(outcome), poses


def run_colmap(window: GroundTruthWindow, work: Path) -> tuple[float, dict[str, np.ndarray]]:
    """pycolmap's incremental mapping on the window's original frames, one thread, one self-calibrated camera."""
    images = work / "images"
    images.mkdir(parents=True)
    for path in window.image_paths:
        (images / path.name).symlink_to(path.resolve())
    database = work / "database.db"
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = 1
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = 1
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads = 1
    start = time.process_time()
    pycolmap.extract_features(database, images, camera_mode=pycolmap.CameraMode.SINGLE,
                              extraction_options=extraction, device=pycolmap.Device.cpu)
    pycolmap.match_exhaustive(database, matching_options=matching, device=pycolmap.Device.cpu)
    models = pycolmap.incremental_mapping(database, images, work / "sparse", mapping)
    cpu = time.process_time() - start
    best = max(models.values(), key=lambda m: m.num_reg_images(), default=None)
    return cpu, model_poses(best) if best is not None else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="Folder of sequences with images/ and gt/ (default: shared/data beside the repository).")
    parser.add_argument("--sequences", nargs="*", default=None,
                        help=f"Sequence folders to use (default: every one with gt/: {', '.join(GT_SEQUENCES)}).")
    parser.add_argument("--tracker", default=None, help="Override the default tracker.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the disturbance of the cameras.")
    parser.add_argument("--frame-step", type=int, nargs="+", default=[1],
                        help="Use every N-th frame (several values: one pass each; larger steps, wider baselines).")
    parser.add_argument("--no-colmap", action="store_true", help="Skip pycolmap's incremental mapping.")
    parser.add_argument("--max-windows", type=int, default=None, help="Stop after this many windows.")
    parser.add_argument("--json", type=Path, default=None, help="Write every figure to this file.")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    pycolmap.logging.minloglevel = 2

    names = args.sequences or sorted(p.name for p in args.data.iterdir() if (p / "gt" / "poses.txt").exists())
    if not names:
        print(f"error: no sequence with gt/poses.txt under {args.data}", file=sys.stderr)
        return 2
    options = ReconstructionOptions()
    if args.tracker:
        options = dataclasses.replace(options, tracker=args.tracker)
    rows: list[WindowRow] = []
    header = (f"{'window':<38} {'ours s':>7} {'ba':>6} {'verdict':>7} {'rot max':>8} {'rot med':>8} {'centre':>7}"
              f" | {'colmap s':>8} {'reg':>4} {'rot max':>8} {'rot med':>8} {'centre':>7} {'ratio':>6}")
    print(header)
    with tempfile.TemporaryDirectory(prefix="cpu_finish_") as tmp:
        for name, step in ((name, step) for step in args.frame_step for name in names):
            for window in gt_windows(args.data / name, seed=args.seed, frame_step=step):
                if args.max_windows is not None and len(rows) >= args.max_windows:
                    break
                cpu, outcome, poses = run_ours(window, options, Path(tmp) / "ours")
                row = WindowRow(window.name, len(window.prediction.names), cpu, outcome["ba"] or "-", outcome["verdict"] or "failed",
                                outcome["verdict_reason"] or outcome["reason"], accuracy(window.prediction.names, poses, window))
                if not args.no_colmap:
                    colmap_cpu, colmap_poses = run_colmap(window, Path(tmp) / "colmap" / window.name)
                    row.colmap_cpu_s = colmap_cpu
                    row.colmap = accuracy(window.prediction.names, colmap_poses, window)
                rows.append(row)
                print(_format(row), flush=True)
                if row.ours_reason:
                    print(f"{'':<40}{row.ours_reason}")
    summary = _summary(rows)
    print()
    for key, value in summary.items():
        print(f"{key}: {value}")
    if args.json:
        args.json.write_text(json.dumps({"windows": [dataclasses.asdict(r) for r in rows], "summary": summary},
                                        indent=2) + "\n")
    return 0


def _format(row: WindowRow) -> str:
    ours = (f"{row.window:<38} {row.ours_cpu_s:>7.2f} {row.ours_ba:>6} {row.ours_verdict:>7} "
            f"{row.ours.rotation_max_deg:>8.2f} {row.ours.rotation_median_deg:>8.2f} {100 * row.ours.centre_max:>6.2f}%")
    if row.colmap is None:
        return ours
    return (ours + f" | {row.colmap_cpu_s:>8.2f} {row.colmap.registered:>4} {row.colmap.rotation_max_deg:>8.2f} "
            f"{row.colmap.rotation_median_deg:>8.2f} {100 * row.colmap.centre_max:>6.2f}% "
            f"{row.colmap_cpu_s / row.ours_cpu_s:>5.1f}x")


def _summary(rows: list[WindowRow]) -> dict:
    good = [r for r in rows if r.ours_verdict == "good" and r.ours_ba == "ok"]
    summary = {
        "windows": len(rows),
        "ours_trusted (ba ok, verdict good)": len(good),
        "ours_good_but_wrong (rotation > 2 deg or centre > 3 %)": sum(
            r.ours.rotation_max_deg > 2 or r.ours.centre_max > 0.03 for r in good),
        "ours_cpu_s_median": round(statistics.median(r.ours_cpu_s for r in rows), 3),
        "ours_cpu_s_total": round(sum(r.ours_cpu_s for r in rows), 2),
    }
    with_colmap = [r for r in rows if r.colmap is not None]
    if with_colmap:
        both = [r for r in good if r.colmap is not None and r.colmap.registered >= 3]
        summary.update({
            "colmap_all_registered": sum(r.colmap.registered == r.frames for r in with_colmap),
            "colmap_cpu_s_median": round(statistics.median(r.colmap_cpu_s for r in with_colmap), 3),
            "colmap_cpu_s_total": round(sum(r.colmap_cpu_s for r in with_colmap), 2),
            "cpu_ratio_colmap_over_ours": round(sum(r.colmap_cpu_s for r in with_colmap)
                                                / sum(r.ours_cpu_s for r in with_colmap), 2),
            "rotation_median_deg_where_both (ours / colmap)": (
                round(float(np.median([r.ours.rotation_median_deg for r in both])), 3) if both else None,
                round(float(np.median([r.colmap.rotation_median_deg for r in both])), 3) if both else None),
        })
    return summary


if __name__ == "__main__":
    sys.exit(main())
