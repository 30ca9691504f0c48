"""The pipeline's inference entry: one VGGT pass computing only the requested outputs, fast on CUDA.

The fast recipe (``prepare_for_inference`` + ``predict``):
- the aggregator's matrix weights (Linear, Conv) are stored in bf16, so autocast does not re-cast 0.9 B
  parameters on every pass; norms, LayerScale, tokens and positional tables stay float32, so the residual stream
  is promoted to float32 exactly as under the official autocast recipe - the matmuls see the same bf16 operands,
  and the results equal the official recipe's up to summation order;
- attention prefers cuDNN's kernel (1.5x faster than flash attention for VGGT's shapes on an H100), then flash,
  memory-efficient and math, whichever accepts the inputs;
- the camera, depth and point heads run in float32 (the official numerics); the DPT heads decode frames in chunks
  so the peak memory of a batch does not grow with B * S full-resolution feature maps;
- optionally ``torch.compile`` of the aggregator blocks (``--compile``), which fuses norms, RoPE and elementwise
  work around the matmuls.
"""

from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .pose_encoding import pose_encoding_to_extri_intri
from .vggt import VGGT

log = logging.getLogger(__name__)

ATTENTION_PRIORITY = [
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
]
DPT_FRAMES_CHUNK = 8


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Reduced precision the aggregator runs in on ``device``: bf16 where CUDA supports it, else fp16; None on CPU.

    The official demos choose the same way (bf16 from compute capability 8).
    """
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16


def prepare_for_inference(
    model: VGGT, *, trunk_dtype: torch.dtype | None = None, compile: bool = False
) -> VGGT:
    """Make ``model`` (already on its device) ready for ``predict``, in place; returns it.

    ``trunk_dtype`` (default: ``autocast_dtype`` of the model's device, None on CPU) is the dtype the aggregator's
    Linear and Conv weights are stored in; pass the same to ``predict``. ``compile`` wraps each aggregator block
    in ``torch.compile``; the state-dict keys stay the same.
    """
    model.eval()
    device = next(model.parameters()).device
    trunk_dtype = trunk_dtype if trunk_dtype is not None else autocast_dtype(device)
    if trunk_dtype is not None:
        for module in model.aggregator.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                module.to(trunk_dtype)
    if compile:
        for blocks in (model.aggregator.frame_blocks, model.aggregator.global_blocks):
            for block in blocks:
                block.compile(dynamic=True)
        log.info("aggregator blocks wrapped in torch.compile (compiled on the first batch)")
    return model


def trunk_dtype_of(model: VGGT) -> torch.dtype | None:
    """The reduced dtype ``prepare_for_inference`` stored the aggregator's weights in, or None (float32)."""
    dtype = model.aggregator.frame_blocks[0].attn.qkv.weight.dtype
    return None if dtype == torch.float32 else dtype


def predict(
    model: VGGT,
    images: torch.Tensor,
    *,
    camera: bool = True,
    depth: bool = True,
    points: bool = False,
    query_points: torch.Tensor | None = None,
    trunk_dtype: torch.dtype | None = None,
    dense_batch: int | None = None,
) -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """Run ``model`` without gradients on ``images`` and return only what is asked.

    The aggregator keeps only the layers the requested heads read, and heads that are not requested do not run.
    On CUDA the call runs under autocast (``autocast_dtype``): the aggregator computes in reduced precision while
    the camera, depth and point heads keep the official float32 numerics (the model disables autocast for them);
    the track head runs under autocast as in the official demos. On CPU everything is float32.

    Args:
        model: a VGGT in eval mode, on the device of ``images``.
        images: ``[B, S, 3, H, W]`` or ``[S, 3, H, W]`` in [0, 1].
        camera, depth, points: which heads to run.
        query_points: ``[B, N, 2]`` or ``[N, 2]`` (x, y) pixels in frame 0; tracks are computed when given.
        trunk_dtype: reduced precision of the aggregator (default: what ``prepare_for_inference`` stored, else
            ``autocast_dtype``).
        dense_batch: camera, depth and points only for the first ``dense_batch`` elements (the rest feed the track
            head alone); their outputs then have ``dense_batch`` elements.

    Returns:
        The keys of ``VGGT.forward`` for the requested heads (``images`` included in eval mode), plus with
        ``camera`` the ``extrinsic`` ``[B, S, 3, 4]`` and ``intrinsic`` ``[B, S, 3, 3]`` at the input size.
        Every tensor is float32.
    """
    if images.dim() == 4:
        images = images[None]
    if query_points is not None and query_points.dim() == 2:
        query_points = query_points[None]
    dtype = trunk_dtype or trunk_dtype_of(model) or autocast_dtype(images.device)
    precision = (
        torch.autocast(device_type=images.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    )
    attention = sdpa_kernel(ATTENTION_PRIORITY, set_priority=True) if images.is_cuda else contextlib.nullcontext()
    with torch.no_grad(), precision, attention:
        predictions = model.run_heads(
            images,
            camera=camera,
            depth=depth,
            points=points,
            query_points=query_points,
            dpt_frames_chunk=DPT_FRAMES_CHUNK,
            dense_batch=dense_batch,
        )
    # The track head's scores come out of autocast in reduced precision, which NumPy cannot take.
    predictions = {
        name: value.float() if torch.is_tensor(value) and value.is_floating_point() else value
        for name, value in predictions.items()
    }
    if camera:
        predictions["extrinsic"], predictions["intrinsic"] = pose_encoding_to_extri_intri(
            predictions["pose_enc"], images.shape[-2:]
        )
    if not model.training:
        predictions["images"] = images
    return predictions
