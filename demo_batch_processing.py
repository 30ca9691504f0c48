#!/usr/bin/env python3
"""Throughput demo: the same windows (a) one window per forward pass with every stage in series, and (b) batched
with overlapped stages; checks both wrote the same results and prints the speed-up.

On the CPU it runs a small random-weight model by default; on a GPU the full-size VGGT-1B architecture (random
weights unless --checkpoint / --model names real ones). Writes both runs' output folders under --output-dir
(out/demo: out/demo/serial and out/demo/batched) and the figures to --json (demo_results.json).

Random weights make the timings real and the geometry meaningless: their cameras and depth are noise, so the
windows come out with the verdict poor or failed. The demo says so in its output.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import torch

from vae_pipeline.cli import build_parser, options_from_args
from vae_pipeline.errors import USAGE_ERRORS
from vae_pipeline.export.compare import compare_outputs, read_manifest
from vae_pipeline.model import VGGTConfig, load_vggt
from vae_pipeline.model.inference import prepare_for_inference
from vae_pipeline.model.random_weights import SMALL_CONFIG, random_vggt
from vae_pipeline.native import quiet_native_libraries
from vae_pipeline.pipeline import RunSummary, resolve_device, run_pipeline

REPO = Path(__file__).resolve().parent
DEFAULT_OUTPUT = Path("out") / "demo"
RANDOM_WEIGHTS_NOTE = """\
random weights: the timings are real, the geometry is not. Cameras and depth are noise, so bundle adjustment
fails and the windows get the verdict poor or failed (often 0 points). This demo measures speed and checks that
batching changes no result; for real geometry pass --checkpoint PATH or --model facebook/VGGT-1B."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    parser.prog = "demo_batch_processing.py"
    parser.description = __doc__.splitlines()[0]
    for action in parser._actions:
        if action.dest in ("input_dir", "output_dir"):
            action.required = False
    # keep="all": random weights give poor or failed verdicts, and the comparison needs every window written.
    parser.set_defaults(input_dir=REPO / "testdata" / "scene_arc" / "images", output_dir=DEFAULT_OUTPUT, model=None,
                        keep="all")
    parser.add_argument("--json", type=Path, default=Path("demo_results.json"), help="Where to write the figures.")
    parser.add_argument("--random-size", choices=("small", "full"), default=None,
                        help="Random-weight architecture when no checkpoint is given: small (default on the CPU) "
                        "or full (VGGT-1B, default on a GPU).")
    return parser.parse_args(argv)


def build_model(args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, str]:
    source = str(args.checkpoint) if args.checkpoint else args.model
    if source:
        model = load_vggt(source, device=device)
    else:
        size = args.random_size or ("full" if device.type == "cuda" else "small")
        model = random_vggt(VGGTConfig() if size == "full" else SMALL_CONFIG).to(device)
        source = f"random weights ({size} architecture)"
    return prepare_for_inference(model, compile=args.compile), source


def verdict_counts(output_dir: Path) -> str:
    """``failed 2, poor 1``: the windows of a run by verdict, from its manifest."""
    counts = Counter(entry.get("verdict") or entry["status"] for entry in read_manifest(output_dir).values())
    return ", ".join(f"{verdict} {count}" for verdict, count in sorted(counts.items()))


def row(name: str, summary: RunSummary, frames_per_window: int) -> dict:
    seconds = summary.elapsed_s
    return {
        "mode": name,
        "windows": summary.written,
        "failed": summary.failed,
        "seconds": round(seconds, 3),
        "windows_per_s": summary.windows_per_s,
        "frames_per_s": summary.written * frames_per_window / seconds,
        "device_busy": summary.device_busy_share,
        "forward_passes": summary.forward_passes,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if not args.verbose else logging.DEBUG,
                        format="%(asctime)s %(levelname)s %(message)s")
    # Bundle adjustment runs in this process for the serial run (worker processes quiet themselves): without
    # this, pycolmap's and Ceres' logs of windows that cannot be solved would reach the terminal.
    quiet_native_libraries(verbose=args.verbose)
    try:
        options = options_from_args(args)
        options.validate()
        device = resolve_device(options.device)
        model, source = build_model(args, device)
    except USAGE_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    work = Path(args.output_dir)
    serial = replace(options, output_dir=work / "serial", window_batch_size=1, num_workers=0, overwrite=True)
    batched = replace(options, output_dir=work / "batched", overwrite=True)
    print(f"model: {source} on {device}; input: {options.input_dir}; output: {work}")
    random_weights = source.startswith("random weights")
    if random_weights:
        print(RANDOM_WEIGHTS_NOTE)

    # Warm-up outside the timings: first-call allocations and kernel selection belong to neither mode.
    warm = replace(serial, output_dir=work / "warmup")
    run_pipeline(warm, progress=False, model=model, overlapped=False)

    try:
        results = [
            row("one window per pass, stages in series", run_pipeline(serial, False, model=model, overlapped=False),
                options.window_size),
            row(f"batches of {batched.window_batch_size or 'auto'}, overlapped stages",
                run_pipeline(batched, False, model=model, overlapped=True), options.window_size),
        ]
    except USAGE_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    differences = compare_outputs(serial.output_dir, batched.output_dir)
    speedup = results[1]["windows_per_s"] / results[0]["windows_per_s"] if results[0]["windows_per_s"] else 0.0

    print(f"verdicts: {verdict_counts(batched.output_dir)}"
          + (" (as random weights give)" if random_weights else ""))
    print(f"{'mode':<45} {'windows':>7} {'s':>8} {'windows/s':>10} {'frames/s':>9} {'device busy':>12}")
    for r in results:
        print(f"{r['mode']:<45} {r['windows']:>7} {r['seconds']:>8.2f} {r['windows_per_s']:>10.3f} "
              f"{r['frames_per_s']:>9.2f} {r['device_busy']:>11.0%}")
    for difference in differences[:10]:
        print(f"  differs: {difference}")
    print(f"same results: {'yes' if not differences else 'no'}")
    print(f"speedup: {speedup:.2f}x")
    report = {
        "model": source,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "options": options.as_record(),
        "runs": results,
        "same_results": not differences,
        "differences": differences,
        "speedup": speedup,
    }
    args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if not differences else 1


if __name__ == "__main__":
    sys.exit(main())
