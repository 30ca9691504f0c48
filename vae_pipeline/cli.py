"""Command line: parse flags into ``PipelineOptions``, run, and turn known errors into one-line messages.

Exit codes: 0 every window written, 1 some windows failed, 2 bad input, flags, output folder or checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from .options import DEFAULT_MODEL, RESIZE_MODES, PipelineOptions, default_num_workers
from .reconstruct import ReconstructionOptions
from .reconstruct.tracking import TRACKERS
from .reconstruct.types import CAMERA_TYPES

EXIT_OK, EXIT_WINDOWS_FAILED, EXIT_USAGE = 0, 1, 2
TRACKER_NAMES = (*TRACKERS, "vggt")

log = logging.getLogger("vae_pipeline")


def _batch_size(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'auto', got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    defaults = ReconstructionOptions()
    p = argparse.ArgumentParser(
        prog="vae_data_pipeline_batch.py",
        description="Annotate sequences of video frames with 3D geometry: VGGT on sliding windows of frames, "
        "batched on the GPU, then a COLMAP model per window (optionally bundle-adjusted).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = p.add_argument_group("input and output")
    io.add_argument("--input-dir", type=Path, required=True,
                    help="Folder of frames (jpg/png/...), a folder of such folders (one sequence each), "
                    "or video files (.mp4/.mov/.mkv/.avi).")
    io.add_argument("--output-dir", type=Path, required=True,
                    help="Where window folders, manifest.jsonl and summary.json are written.")
    io.add_argument("--frame-step", type=int, default=1, help="Use every N-th frame of each sequence.")
    io.add_argument("--overwrite", action="store_true",
                    help="Redo windows whose folders already exist (by default a rerun skips finished windows).")
    io.add_argument("--colmap-text", action="store_true", help="Also write the COLMAP model as text files.")
    io.add_argument("--save-depth", action="store_true",
                    help="Also write per-frame depth and confidence maps (float16 .npz) in depth/.")

    win = p.add_argument_group("windows and batches")
    win.add_argument("--window-size", type=int, default=8, help="Frames per window.")
    win.add_argument("--window-stride", type=int, default=4, help="Frames between the starts of two windows.")
    win.add_argument("--window-batch-size", type=_batch_size, default=4,
                     help="Windows per forward pass; 'auto' picks the largest that fits the device memory.")

    model = p.add_argument_group("model")
    model.add_argument("--model", default=DEFAULT_MODEL,
                       help="Hugging Face model id (facebook/VGGT-1B or facebook/VGGT-1B-Commercial), a local "
                       "checkpoint file, or a folder laid out like the hub repository.")
    model.add_argument("--checkpoint", type=Path, default=None,
                       help="Local checkpoint (.pt/.pth/.safetensors or folder); overrides --model.")
    model.add_argument("--device", default="auto", help="Torch device: auto (CUDA if present), cuda, cuda:1, cpu.")
    model.add_argument("--resize-mode", choices=RESIZE_MODES, default="aspect",
                       help="aspect: long side 518, the other side scaled to keep the frame's shape (no padding: "
                       "wide video needs fewer tokens); square: the official demo's pad-to-square at 518x518.")
    model.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                       help="torch.compile the model on CUDA (pays off on long runs; costs start-up time).")
    model.add_argument("--num-workers", type=int, default=default_num_workers(),
                       help="CPU worker processes for reconstruction and export (0: in the main process).")
    model.add_argument("--seed", type=int, default=defaults.seed,
                       help="Seed of every random choice; each window derives its own from it and its name.")

    rec = p.add_argument_group("reconstruction")
    rec.add_argument("--use-ba", action=argparse.BooleanOptionalAction, default=defaults.use_ba,
                     help="Track points and bundle-adjust each window; off: export confident depth points.")
    rec.add_argument("--max-reproj-error", type=float, default=defaults.max_reproj_error,
                     help="Observations farther than this from their projection (pixels of the original frames) "
                     "are dropped.")
    rec.add_argument("--shared-camera", action=argparse.BooleanOptionalAction, default=defaults.shared_camera,
                     help="One camera (intrinsics) for all frames of a window.")
    rec.add_argument("--camera-type", choices=CAMERA_TYPES, default=defaults.camera_type,
                     help="COLMAP camera model refined by bundle adjustment.")
    rec.add_argument("--tracker", choices=TRACKER_NAMES, default=defaults.tracker,
                     help="Point tracker for bundle adjustment: klt (pyramidal Lucas-Kanade) or sift (SIFT "
                     "matching), both weight-free on the CPU, or vggt: VGGT's own track head on the GPU.")
    rec.add_argument("--vis-thresh", type=float, default=defaults.vis_thresh,
                     help="Track observations with visibility below this are ignored.")
    rec.add_argument("--query-frame-num", type=int, default=defaults.query_frame_num,
                     help="Frames of each window on which track query points are picked.")
    rec.add_argument("--max-query-pts", type=int, default=defaults.max_query_pts,
                     help="Most query points per query frame.")
    rec.add_argument("--fine-tracking", action=argparse.BooleanOptionalAction, default=defaults.fine_tracking,
                     help="Refine tracks to sub-pixel accuracy (slower).")
    rec.add_argument("--conf-thres-value", type=float, default=defaults.conf_thres_value,
                     help="Without bundle adjustment: keep depth points whose confidence is at least this.")
    rec.add_argument("--max-points", type=int, default=defaults.max_points,
                     help="Without bundle adjustment: most points per window (seeded random subset).")

    out = p.add_mutually_exclusive_group()
    out.add_argument("-v", "--verbose", action="store_true", help="Log more (debug messages).")
    out.add_argument("-q", "--quiet", action="store_true", help="Log only warnings and errors; no progress bar.")
    return p


def options_from_args(args: argparse.Namespace) -> PipelineOptions:
    rec_fields = {f for f in ReconstructionOptions.__dataclass_fields__}
    rec = ReconstructionOptions(**{k: v for k, v in vars(args).items() if k in rec_fields})
    return PipelineOptions(
        input_dir=args.input_dir,
        output_dir=args.output_dir,
        window_size=args.window_size,
        window_stride=args.window_stride,
        window_batch_size=args.window_batch_size,
        model=args.model,
        checkpoint=args.checkpoint,
        device=args.device,
        resize_mode=args.resize_mode,
        frame_step=args.frame_step,
        overwrite=args.overwrite,
        colmap_text=args.colmap_text,
        save_depth=args.save_depth,
        num_workers=args.num_workers,
        compile=args.compile,
        reconstruction=rec,
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    # A scheduler's SIGTERM stops the run like Ctrl-C: the manifest is closed, finished windows stay (and
    # pycolmap's import would otherwise have glog dump stack traces for it).
    signal.signal(signal.SIGTERM, _interrupt)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    from .errors import USAGE_ERRORS
    from .pipeline import run_pipeline

    try:
        options = options_from_args(args)
        options.validate()
        summary = run_pipeline(options, progress=not args.quiet)
    except USAGE_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: finished windows are kept; rerun the same command to continue", file=sys.stderr)
        return 130
    return EXIT_OK if summary.failed == 0 else EXIT_WINDOWS_FAILED


if __name__ == "__main__":
    sys.exit(main())
