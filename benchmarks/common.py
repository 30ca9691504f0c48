"""What the benchmarks share: the model under test, the two inference recipes, device timing, reporting, and
input frames staged from a folder.

Both scripts time through ``measure``, so their figures are comparable and the timing rules live in one place:
the first pass is reported on its own (it carries compilation, kernel selection and allocator growth), then
warm-up passes, then the timed passes, each one synchronised; CUDA events on a GPU, ``perf_counter`` on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vae_pipeline.frames import IMAGE_EXTENSIONS, natural_key
from vae_pipeline.model import VGGTConfig
from vae_pipeline.model.inference import autocast_dtype, predict
from vae_pipeline.model.random_weights import SMALL_CONFIG, random_vggt
from vae_pipeline.model.vggt import VGGT

Outputs = dict[str, torch.Tensor | list[torch.Tensor]]
Recipe = Callable[[VGGT, torch.Tensor], Outputs]

GIB = 2**30
REDUCED_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class CaseResult:
    """One recipe on one input shape ``[batch, frames, 3, height, width]``.

    ``first_call_ms`` is the first pass alone (with ``--compile`` it is mostly compilation); ``ms_per_pass`` and
    ``trunk_ms_per_pass`` (the aggregator's share of the pass) are medians of the timed passes; the peak is
    ``torch.cuda.max_memory_allocated`` over the timed passes, weights included (None on the CPU).
    """

    recipe: str
    batch: int
    frames: int
    height: int
    width: int
    first_call_ms: float
    ms_per_pass: float
    trunk_ms_per_pass: float
    peak_memory_gib: float | None

    @property
    def ms_per_window(self) -> float:
        return self.ms_per_pass / self.batch

    @property
    def frames_per_s(self) -> float:
        return self.batch * self.frames / (self.ms_per_pass / 1e3)

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "ms_per_window": self.ms_per_window, "frames_per_s": self.frames_per_s}


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags both benchmarks take."""
    parser.add_argument("--small", action="store_true",
                        help="The small test architecture instead of VGGT-1B (runs on the CPU in seconds).")
    parser.add_argument("--device", default="auto", help="cuda, cuda:1, cpu or auto (default: auto).")
    parser.add_argument("--frames", type=int, default=8, help="Frames per window S (default: 8).")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed passes after the first (default: 3).")
    parser.add_argument("--repeats", type=int, default=10, help="Timed passes per case (default: 10).")
    parser.add_argument("--compile", action="store_true", help="Our recipe with torch.compile'd aggregator blocks.")
    parser.add_argument("--dtype", choices=("auto", *REDUCED_DTYPES), default="auto",
                        help="Reduced precision of the aggregator; auto: bf16 on CUDA from compute capability 8, "
                        "fp16 below, none (float32) on the CPU.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random weights and inputs.")
    parser.add_argument("--json", type=Path, default=None, help="Also write every figure to this JSON file.")


def reduced_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The ``--dtype`` choice on ``device``; None means float32 throughout."""
    return autocast_dtype(device) if name == "auto" else REDUCED_DTYPES[name]


def build_model(small: bool, device: torch.device, seed: int = 0) -> VGGT:
    """VGGT-1B (or ``SMALL_CONFIG``) with random weights, float32, in eval mode on ``device``."""
    return random_vggt(SMALL_CONFIG if small else VGGTConfig(), seed).to(device)


def random_frames(
    batch: int, frames: int, height: int, width: int, device: torch.device, seed: int = 0
) -> torch.Tensor:
    """``[batch, frames, 3, height, width]`` uniform in [0, 1], the same for a seed on every device."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, frames, 3, height, width, generator=generator).to(device)


def official_recipe(model: VGGT, images: torch.Tensor, dtype: torch.dtype | None) -> Outputs:
    """BASELINE - the official inference recipe, written out here so it stays what it is.

    Float32 weights; the whole pass under autocast in ``dtype`` (the camera and DPT heads opt out of it inside
    the model, as the official ones do); PyTorch's default choice of attention kernel; the DPT head decodes all
    frames at once. Camera and depth, as the pipeline needs.
    """
    precision = torch.autocast(images.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with torch.no_grad(), precision:
        return model.run_heads(images, camera=True, depth=True, points=False)


def our_recipe(model: VGGT, images: torch.Tensor, dtype: torch.dtype | None) -> Outputs:
    """This package's recipe: ``predict`` on a model that ``prepare_for_inference`` made ready (in place, so run
    everything that needs the float32 weights first)."""
    return predict(model, images, camera=True, depth=True, trunk_dtype=dtype)


def recipes(dtype: torch.dtype | None) -> dict[str, Recipe]:
    return {"official": partial(official_recipe, dtype=dtype), "ours": partial(our_recipe, dtype=dtype)}


@contextlib.contextmanager
def strict_float32() -> Iterator[None]:
    """Float32 matmuls and convolutions without TF32, for the reference the reduced recipes are compared with."""
    matmul, convolution = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = convolution


def float32_reference(model: VGGT, images: torch.Tensor) -> Outputs:
    """Camera and depth in float32 throughout: no autocast, no TF32; ``model`` must still hold float32 weights."""
    with torch.no_grad(), torch.autocast(images.device.type, enabled=False), strict_float32():
        return model.run_heads(images, camera=True, depth=True, points=False)


class DeviceClock:
    """Marks points in a device's work: CUDA events on a GPU (read after synchronising), ``perf_counter`` else."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def mark(self) -> torch.cuda.Event | float:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def elapsed_ms(self, start: torch.cuda.Event | float, end: torch.cuda.Event | float) -> float:
        if not self.cuda:
            return (end - start) * 1e3
        end.synchronize()
        return start.elapsed_time(end)

    def time_ms(self, work: Callable[[], object]) -> float:
        """Milliseconds ``work`` keeps the device busy, from launch to the end of its last kernel."""
        start = self.mark()
        work()
        return self.elapsed_ms(start, self.mark())


class ModuleTimer:
    """Times every call of ``module`` through forward hooks, so the code around it runs unmodified."""

    def __init__(self, module: nn.Module, clock: DeviceClock) -> None:
        self._module = module
        self._clock = clock
        self._marks: list[tuple[Any, Any]] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> ModuleTimer:
        self._handles = [
            self._module.register_forward_pre_hook(lambda *_: self._marks.append((self._clock.mark(), None))),
            self._module.register_forward_hook(lambda *_: self._end_call()),
        ]
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()

    def _end_call(self) -> None:
        start, _ = self._marks[-1]
        self._marks[-1] = (start, self._clock.mark())

    def calls_ms(self) -> list[float]:
        return [self._clock.elapsed_ms(start, end) for start, end in self._marks]


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


def measure(name: str, recipe: Recipe, model: VGGT, images: torch.Tensor, *, warmup: int, repeats: int) -> CaseResult:
    """Time ``recipe(model, images)``: the first pass alone, ``warmup`` untimed passes, then ``repeats`` timed ones."""
    device = images.device
    clock = DeviceClock(device)
    with ModuleTimer(model.aggregator, clock) as trunk:
        first_call_ms = clock.time_ms(lambda: recipe(model, images))
        for _ in range(warmup):
            recipe(model, images)
        reset_peak_memory(device)
        pass_ms = [clock.time_ms(lambda: recipe(model, images)) for _ in range(repeats)]
        trunk_ms = trunk.calls_ms()[-repeats:]
    batch, frames, _, height, width = images.shape
    return CaseResult(
        recipe=name,
        batch=batch,
        frames=frames,
        height=height,
        width=width,
        first_call_ms=first_call_ms,
        ms_per_pass=statistics.median(pass_ms),
        trunk_ms_per_pass=statistics.median(trunk_ms),
        peak_memory_gib=peak_memory_gib(device),
    )


def environment(device: torch.device, dtype: torch.dtype | None, small: bool) -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "device": str(device),
        "card": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "reduced_precision": str(dtype).removeprefix("torch.") if dtype is not None else "none (float32)",
        "model": "small test architecture" if small else "VGGT-1B architecture",
        "weights": "random",
    }


def describe_environment(env: dict[str, Any]) -> str:
    cuda = f", CUDA {env['cuda']}" if env["cuda"] else ""
    return (f"{env['model']} ({env['weights']} weights) on {env['device']}: {env['card']}; "
            f"torch {env['torch']}{cuda}; reduced precision: {env['reduced_precision']}")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned first column, the rest right-aligned; floats with two decimals (small ones in scientific
    notation), None as n/a."""
    cells = [list(headers)] + [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        first, rest = row[0].ljust(widths[0]), [value.rjust(width) for value, width in zip(row[1:], widths[1:])]
        lines.append("  ".join([first, *rest]))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}" if value == 0 or abs(value) >= 0.1 else f"{value:.2e}"
    return str(value)


def write_json(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def stage_frames(source: Path, target: Path, repeat: int, limit: int | None = None) -> Path:
    """Copy the images of ``source`` into ``target`` ``repeat`` times over, every other pass in reverse (the
    camera sweeps back and forth, so a window across a seam still sees overlapping views), renumbered in order;
    at most ``limit`` frames."""
    images = sorted((p for p in source.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS),
                    key=lambda p: natural_key(p.name))
    if not images:
        raise SystemExit(f"error: no images in {source}")
    sequence = [path for i in range(repeat) for path in (images if i % 2 == 0 else images[::-1])]
    target.mkdir(parents=True)
    for index, path in enumerate(sequence[:limit]):
        shutil.copyfile(path, target / f"{index:06d}{path.suffix.lower()}")
    return target
