"""``--window-batch-size auto``: the largest batch of windows whose forward pass fits the free device memory."""

from __future__ import annotations

import logging

import torch

from .jobs import WindowJob
from .model.inference import predict
from .options import FOLDER_BATCH_SIZE_FOR_AUTO, PipelineOptions

log = logging.getLogger(__name__)

MEMORY_HEADROOM = 0.85
MAX_AUTO_BATCH = 64


def auto_batch_size(model: torch.nn.Module, jobs: list[WindowJob], options: PipelineOptions) -> int:
    """Measure one window's peak memory on the device and fit as many as the free memory allows.

    On the CPU there is nothing to measure: the folder batch size is used.
    """
    device = next(model.parameters()).device
    if device.type != "cuda" or not jobs:
        return FOLDER_BATCH_SIZE_FOR_AUTO
    from .stages import FrameStore

    sample = FrameStore(jobs[:1], options.resize_mode).load_window(jobs[0]).pixels[None].to(device)
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    baseline = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        predict(model, sample, camera=True, depth=True)
    per_window = max(torch.cuda.max_memory_allocated(device) - baseline, 1)
    free, _ = torch.cuda.mem_get_info(device)
    size = int(max(1, min(MAX_AUTO_BATCH, MEMORY_HEADROOM * free // per_window)))
    log.info("auto batch size: %d windows (%.2f GiB per window, %.1f GiB free)", size, per_window / 2**30, free / 2**30)
    return size
