#!/usr/bin/env python3
"""Model benchmark: the official inference recipe beside ours, same process, same weights, same inputs.

For each batch size: ms per window, the aggregator's share and its achieved TFLOP/s (FLOPs counted analytically
by ``aggregator_flops``), and peak memory. Then the numerics at B=1: both recipes against a float32 run without
TF32, on depth, depth_conf and pose_enc. Random weights of the full VGGT-1B architecture (``--small``: the test
architecture, for the CPU).

    python -m benchmarks.gpu_model [--compile] [--json model.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import (
    CaseResult,
    Outputs,
    add_common_arguments,
    build_model,
    describe_environment,
    environment,
    float32_reference,
    format_table,
    measure,
    random_frames,
    recipes,
    reduced_dtype,
    write_json,
)
from vae_pipeline.model import VGGTConfig
from vae_pipeline.model.inference import prepare_for_inference
from vae_pipeline.model.vggt import VGGT
from vae_pipeline.pipeline import resolve_device

COMPARED_OUTPUTS = ("depth", "depth_conf", "pose_enc")
ERROR_RATIO_TARGET = 1.5  # ours may be at most this much further from float32 than the official recipe


def block_flops(tokens: int, dim: int, hidden: int) -> int:
    """Matmul FLOPs (2 m n k) of one transformer block on one sequence of ``tokens``: the qkv, proj and two MLP
    linears, and attention's Q K^T and A V over all heads together."""
    linears = 2 * tokens * dim * (3 * dim + dim + 2 * hidden)
    attention = 2 * 2 * tokens * tokens * dim
    return linears + attention


def aggregator_flops(config: VGGTConfig, batch: int, frames: int, height: int, width: int) -> int:
    """Matmul FLOPs of one aggregator pass over ``[batch, frames, 3, height, width]`` through all ``config.depth``
    layers (the camera head reads the last one).

    Counted: the patch convolution, the DINOv2 blocks (unless the embedding is the plain convolution), and per
    layer one frame block on each frame (its ``patch_start_idx + h * w`` tokens) and one global block on each
    sequence (all ``frames`` times as many tokens). Norms, RoPE, softmax and other elementwise work are not.
    """
    patch, dim = config.patch_size, config.embed_dim
    patches = (height // patch) * (width // patch)
    images = batch * frames
    embed = images * 2 * patches * (3 * patch * patch) * dim
    if config.patch_embed != "conv":
        dino_tokens = 1 + config.patch_embed_num_register_tokens + patches
        dino_hidden = int(dim * config.patch_embed_mlp_ratio)
        embed += images * config.patch_embed_depth * block_flops(dino_tokens, dim, dino_hidden)
    tokens = config.patch_start_idx + patches
    hidden = int(dim * config.mlp_ratio)
    per_layer = images * block_flops(tokens, dim, hidden) + batch * block_flops(frames * tokens, dim, hidden)
    return embed + config.depth * per_layer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--height", type=int, default=518, help="Frame height in pixels (default: 518).")
    parser.add_argument("--width", type=int, default=518, help="Frame width in pixels (default: 518).")
    parser.add_argument("--batch-sizes", default="1,4", help="Windows per pass, comma-separated (default: 1,4).")
    args = parser.parse_args(argv)
    args.batch_sizes = sorted({int(b) for b in args.batch_sizes.split(",")})
    return args


def compared(outputs: Outputs) -> dict[str, torch.Tensor]:
    """The outputs the numerics check compares, as float32 on the CPU (the device memory goes back)."""
    return {name: outputs[name].detach().float().cpu() for name in COMPARED_OUTPUTS}


def errors(outputs: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Max and mean absolute difference to ``reference``, per output."""
    result = {}
    for name in COMPARED_OUTPUTS:
        difference = (outputs[name] - reference[name]).abs()
        result[name] = {"max_abs": difference.max().item(), "mean_abs": difference.mean().item()}
    return result


def error_ratios(ours: dict[str, dict[str, float]], official: dict[str, dict[str, float]]) -> dict[str, dict]:
    """ours / official per output and statistic; None where the official error is 0 (float32 on both sides)."""
    return {
        name: {stat: ours[name][stat] / official[name][stat] if official[name][stat] else None
               for stat in ours[name]}
        for name in ours
    }


def run_recipe(
    name: str, model: VGGT, args: argparse.Namespace, dtype: torch.dtype | None, device: torch.device
) -> tuple[list[CaseResult], dict[str, torch.Tensor]]:
    """Timings at every batch size, then the B=1 outputs for the numerics check."""
    recipe = recipes(dtype)[name]
    cases = [
        measure(name, recipe, model, window_batch(args, batch, device), warmup=args.warmup, repeats=args.repeats)
        for batch in args.batch_sizes
    ]
    return cases, compared(recipe(model, window_batch(args, 1, device)))


def window_batch(args: argparse.Namespace, batch: int, device: torch.device) -> torch.Tensor:
    """``[batch, S, 3, H, W]`` of the requested size; window 0 is the same at every batch size."""
    return random_frames(batch, args.frames, args.height, args.width, device, args.seed)


def report_cases(cases: list[CaseResult], config: VGGTConfig) -> list[dict[str, Any]]:
    rows, records = [], []
    for case in cases:
        tflop = aggregator_flops(config, case.batch, case.frames, case.height, case.width) / 1e12
        tflops = tflop / (case.trunk_ms_per_pass / 1e3)
        rows.append([case.recipe, case.batch, case.first_call_ms, case.ms_per_pass, case.ms_per_window,
                     case.trunk_ms_per_pass / case.batch, case.peak_memory_gib, tflops])
        records.append({**case.record(), "trunk_tflop": tflop, "trunk_tflop_per_s": tflops})
    print(format_table(["recipe", "B", "first call ms", "ms/pass", "ms/window", "trunk ms/window", "peak GiB",
                        "trunk TFLOP/s"], rows))
    by_key = {(case.recipe, case.batch): case for case in cases}
    speedups = [(b, by_key["official", b].ms_per_pass / by_key["ours", b].ms_per_pass)
                for b in sorted({case.batch for case in cases})]
    print("speed-up (official ms / ours ms): " + ", ".join(f"B={b} {s:.2f}x" for b, s in speedups))
    return records


def report_numerics(official: dict, ours: dict) -> dict[str, Any]:
    ratios = error_ratios(ours, official)
    rows = [[name, stat, official[name][stat], ours[name][stat], ratios[name][stat]]
            for name in COMPARED_OUTPUTS for stat in ("max_abs", "mean_abs")]
    print("numerics at B=1, absolute error against float32 without TF32:")
    print(format_table(["output", "statistic", "official", "ours", "ours/official"], rows))
    known = [ratio for per_output in ratios.values() for ratio in per_output.values() if ratio is not None]
    if known:
        worst = max(known)
        verdict = "PASS" if worst <= ERROR_RATIO_TARGET else "FAIL"
        print(f"numerics: {verdict} (worst ratio {worst:.2f}, target <= {ERROR_RATIO_TARGET})")
    else:
        worst, verdict = None, "n/a"
        print("numerics: n/a (both recipes ran in float32: no reduced precision on this device)")
    return {"official": official, "ours": ours, "ratios": ratios, "worst_ratio": worst,
            "target": ERROR_RATIO_TARGET, "verdict": verdict}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    dtype = reduced_dtype(args.dtype, device)
    env = environment(device, dtype, args.small)
    model = build_model(args.small, device, args.seed)
    config = model.config
    print(describe_environment(env))
    tflop = aggregator_flops(config, 1, args.frames, args.height, args.width) / 1e12
    print(f"input: S={args.frames} frames of {args.height}x{args.width}; aggregator: {tflop:.4g} TFLOP per window "
          f"(analytic matmul count, {config.depth} layers)")

    reference = compared(float32_reference(model, window_batch(args, 1, device)))
    official_cases, official_outputs = run_recipe("official", model, args, dtype, device)
    prepare_for_inference(model, trunk_dtype=dtype, compile=args.compile)  # in place: the official runs are done
    our_cases, our_outputs = run_recipe("ours", model, args, dtype, device)

    records = report_cases(official_cases + our_cases, config)
    if args.compile:
        first = our_cases[0]
        print(f"compile: the first call of ours (B={first.batch}) took {first.first_call_ms / 1e3:.1f} s")
    numerics = report_numerics(errors(official_outputs, reference), errors(our_outputs, reference))
    write_json(args.json, {
        "benchmark": "gpu_model",
        "environment": env,
        "settings": {"frames": args.frames, "height": args.height, "width": args.width,
                     "batch_sizes": args.batch_sizes, "warmup": args.warmup, "repeats": args.repeats,
                     "compile": args.compile, "seed": args.seed},
        "aggregator_tflop_per_window": tflop,
        "cases": records,
        "numerics_b1": numerics,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
