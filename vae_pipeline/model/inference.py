"""The pipeline's inference entry: one VGGT pass computing only the requested outputs."""

from __future__ import annotations

import contextlib

import torch

from .pose_encoding import pose_encoding_to_extri_intri
from .vggt import VGGT


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Reduced precision the aggregator runs in on ``device``: bf16 where CUDA supports it, else fp16; None on CPU.

    The official demos choose the same way (bf16 from compute capability 8).
    """
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16


def predict(
    model: VGGT,
    images: torch.Tensor,
    *,
    camera: bool = True,
    depth: bool = True,
    points: bool = False,
    query_points: torch.Tensor | None = None,
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

    Returns:
        The keys of ``VGGT.forward`` for the requested heads (``images`` included in eval mode), plus with
        ``camera`` the ``extrinsic`` ``[B, S, 3, 4]`` and ``intrinsic`` ``[B, S, 3, 3]`` at the input size.
        Every tensor is float32.
    """
    if images.dim() == 4:
        images = images[None]
    if query_points is not None and query_points.dim() == 2:
        query_points = query_points[None]
    dtype = autocast_dtype(images.device)
    precision = (
        torch.autocast(device_type=images.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    )
    with torch.no_grad(), precision:
        predictions = model.run_heads(images, camera=camera, depth=depth, points=points, query_points=query_points)
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
