#!/usr/bin/env python3
"""Scaling benchmark: the same windows through ``--executor local`` and ``--executor ray`` on this machine, in
this process, one after the other; windows/s of each and their ratio, and whether both wrote the same bytes.

    python -m benchmarks.scale [--input-dir FRAMES] [--repeat-frames 2] [--device cpu|cuda] [--checkpoint PATH]

Input: ``--input-dir`` (frames, or a folder of sequences), by default the two testdata sequences (224x168 and
256x144: two shapes of forward batch), each ``--repeat-frames`` times over (a camera sweeping back and forth).
Model: ``--checkpoint``, else random weights written to a temporary checkpoint: the small test architecture on
the CPU, VGGT-1B's on a GPU (``--small`` forces the small one). Flags are the CLI's defaults (bundle adjustment
on) with every verdict kept (random weights give poor geometry, and every window must reach the write step).

Both runs count their own start (the local run loads the model, the Ray run starts its actors, which load it);
the Ray cluster itself is started before the Ray run with every core of this machine, or joined with
``--ray-address``, and its start is reported apart. windows/s is windows over the run's wall time
(``summary.json``'s ``windows_per_s``). On a CPU-only machine both executors share the same cores: the figure
shows what Ray's scheduling costs or gains there, not how it scales on GPUs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from safetensors.torch import save_file

from benchmarks.common import format_table, stage_frames, write_json
from vae_pipeline.export.compare import compare_window_files
from vae_pipeline.frames import discover_sequences
from vae_pipeline.model import VGGTConfig
from vae_pipeline.model.random_weights import SMALL_CONFIG, random_vggt
from vae_pipeline.options import PipelineOptions
from vae_pipeline.pipeline import RunSummary, resolve_device, run_pipeline
from vae_pipeline.reconstruct import ReconstructionOptions

REPO = Path(__file__).resolve().parents[1]
TESTDATA_SEQUENCES = ("scene_arc", "scene_forward")
EXECUTORS = ("local", "ray")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input-dir", type=Path, default=None,
                        help="Frames or a folder of sequences (default: the two testdata sequences).")
    parser.add_argument("--repeat-frames", type=int, default=2,
                        help="Each sequence this many times over, back and forth (default: 2).")
    parser.add_argument("--max-frames", type=int, default=None, help="At most this many frames per sequence.")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu).")
    parser.add_argument("--checkpoint", type=Path, default=None, help="Weights to use instead of random ones.")
    parser.add_argument("--small", action="store_true", help="The small test architecture on a GPU too.")
    parser.add_argument("--window-size", type=int, default=8)
    parser.add_argument("--window-stride", type=int, default=4)
    parser.add_argument("--no-use-ba", dest="use_ba", action="store_false", help="Feed-forward export only.")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="--executor local's CPU workers (default: the CLI's, cores - 2).")
    parser.add_argument("--ray-address", default=None,
                        help="Join this Ray cluster instead of starting one on this machine.")
    parser.add_argument("--json", type=Path, default=None, help="Also write every figure to this JSON file.")
    return parser.parse_args(argv)


def write_random_checkpoint(folder: Path, config: VGGTConfig) -> Path:
    """A hub-style checkpoint folder of random weights: ``config.json`` beside ``model.safetensors``."""
    folder.mkdir(parents=True)
    save_file(random_vggt(config).state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    return folder


def stage_input(args: argparse.Namespace, work: Path) -> Path:
    """Every sequence of the input, ``--repeat-frames`` times over, as one folder of sequences."""
    staged = work / "input"
    if args.input_dir is None:
        sources = {name: REPO / "testdata" / name / "images" for name in TESTDATA_SEQUENCES}
    else:
        sequences = discover_sequences(args.input_dir)
        if any(sequence.is_video for sequence in sequences):
            raise SystemExit("error: --input-dir: this benchmark stages image frames; give it folders of images")
        sources = {sequence.name.replace("/", "_").strip(".") or "frames": sequence.source for sequence in sequences}
    for name, source in sources.items():
        stage_frames(source, staged / name, args.repeat_frames, limit=args.max_frames)
    return staged


def start_ray(address: str | None) -> float:
    """Start (or join) the Ray the Ray run uses; seconds it took."""
    import ray

    start = time.perf_counter()
    if address is not None:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    small = args.small or device.type == "cpu"
    with tempfile.TemporaryDirectory(prefix="vae_scale_") as work:
        work = Path(work)
        checkpoint = args.checkpoint or write_random_checkpoint(work / "checkpoint",
                                                                SMALL_CONFIG if small else VGGTConfig())
        options = PipelineOptions(
            input_dir=stage_input(args, work), output_dir=work / "local", checkpoint=checkpoint,
            window_size=args.window_size, window_stride=args.window_stride, device=args.device, keep="all",
            reconstruction=ReconstructionOptions(use_ba=args.use_ba),
            **({"num_workers": args.num_workers} if args.num_workers is not None else {}),
        )
        options.validate()
        runs: dict[str, RunSummary] = {"local": run_pipeline(options, progress=False)}
        ray_start_s = start_ray(args.ray_address)
        try:
            runs["ray"] = run_pipeline(replace(options, executor="ray", output_dir=work / "ray"), progress=False)
        finally:
            import ray

            ray.shutdown()
        differences = compare_window_files(work / "local", work / "ray")
    report = build_report(args, runs, ray_start_s, differences, checkpoint if args.checkpoint else None, small)
    print_report(report)
    write_json(args.json, report)
    return 0 if not differences and all(run.run_failed == 0 for run in runs.values()) else 1


def build_report(args: argparse.Namespace, runs: dict[str, RunSummary], ray_start_s: float, differences: list[str],
                 checkpoint: Path | None, small: bool) -> dict[str, Any]:
    import ray

    local, on_ray = runs["local"], runs["ray"]
    return {
        "machine": {"cores": os.cpu_count(), "device": args.device, "torch": torch.__version__,
                    "ray": ray.__version__},
        "model": str(checkpoint) if checkpoint else
                 f"random weights, {'small test architecture' if small else 'VGGT-1B architecture'}",
        "input": {"sequences": args.input_dir and str(args.input_dir) or "testdata: " + ", ".join(TESTDATA_SEQUENCES),
                  "repeat_frames": args.repeat_frames, "window_size": args.window_size,
                  "window_stride": args.window_stride, "use_ba": args.use_ba},
        "ray_start_s": ray_start_s,
        "runs": {name: {**run.record(), "windows_per_s": run.windows_per_s} for name, run in runs.items()},
        "ratio_ray_over_local": on_ray.windows_per_s / local.windows_per_s if local.windows_per_s else None,
        "same_window_folders": not differences,
        "differences": differences[:20],
    }


def print_report(report: dict[str, Any]) -> None:
    machine = report["machine"]
    print(f"machine: {machine['cores']} cores, device {machine['device']}; torch {machine['torch']}, "
          f"ray {machine['ray']}; model: {report['model']}")
    given = report["input"]
    print(f"input: {given['sequences']} x{given['repeat_frames']}; window {given['window_size']}, stride "
          f"{given['window_stride']}, bundle adjustment {'on' if given['use_ba'] else 'off'}")
    print(f"ray start (not counted): {report['ray_start_s']:.1f} s")
    rows = [[name, run["run_written"] + run["run_dropped"], run["run_failed"], run["elapsed_s"],
             run["windows_per_s"], run["forward_passes"], run["device"]]
            for name, run in report["runs"].items()]
    print(format_table(["executor", "windows", "failed", "elapsed s", "windows/s", "forward passes", "device"],
                       rows))
    ratio = report["ratio_ray_over_local"]
    print(f"ratio ray / local (windows/s): {ratio:.2f}x" if ratio else "ratio ray / local (windows/s): n/a")
    print(f"same window folders: {'yes' if report['same_window_folders'] else 'no'}")
    for difference in report["differences"]:
        print(f"  {difference}")


if __name__ == "__main__":
    sys.exit(main())
