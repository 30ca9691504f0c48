"""Turn decoded frames into VGGT input (sides multiples of the 14-pixel patch) and remember how to map back.

Two modes:

* ``aspect``: the long side becomes 518, the short side the nearest multiple of 14 to the proportional length;
  the whole frame is resized (x and y scale by slightly different factors). Pillow's bicubic filter is used: it
  widens its kernel by the reduction factor, so a 1920x1080 video frame shrunk ~3.7x is properly antialiased
  (a plain bicubic/bilinear tap would alias fine texture), and it is the filter of VGGT's own quick-start loader.
* ``square``: the official ``demo_colmap`` recipe (docs/model.md, section 10): paste centred on a black
  square, bicubic to 1024x1024, quantise to 8 bits, then bilinear to 518x518 without antialiasing.

``model_to_original = (sx, sy, ox, oy)`` maps model pixels to original pixels, ``x_orig = sx * x_model + ox``,
in the COLMAP convention where the centre of the first pixel is (0.5, 0.5). Both resizers map pixel edges to
pixel edges (Pillow and ``align_corners=False``), which is what makes this an exact scale without half-pixel terms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

RESIZE_MODES = ("aspect", "square")
MODEL_IMAGE_SIZE = 518
PATCH_SIZE = 14
SQUARE_LOAD_SIZE = 1024


@dataclass(frozen=True)
class PreparedFrame:
    """One frame as the model sees it.

    Attributes:
        tensor: float32 [3, h, w] in [0, 1], the model input.
        image_u8: uint8 [h, w, 3] RGB, the colours for points (exactly ``tensor * 255`` in aspect mode; the
            official truncated colours in square mode).
        original_size: (W0, H0) of the decoded frame.
        model_to_original: (sx, sy, ox, oy) with x_orig = sx * x_model + ox, y_orig = sy * y_model + oy, pixel
            centres at half-integers in both.
    """

    tensor: torch.Tensor
    image_u8: np.ndarray
    original_size: tuple[int, int]
    model_to_original: tuple[float, float, float, float]

    @property
    def model_size(self) -> tuple[int, int]:
        """(w, h) of the model input."""
        return self.tensor.shape[2], self.tensor.shape[1]


def _check_mode(mode: str) -> None:
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; expected one of {', '.join(RESIZE_MODES)}")


def _check_target(target_size: int) -> None:
    if target_size < PATCH_SIZE or target_size % PATCH_SIZE:
        raise ValueError(f"model image size must be a positive multiple of {PATCH_SIZE}, got {target_size}")


def model_input_size(
    original_size: tuple[int, int], mode: str = "aspect", target_size: int = MODEL_IMAGE_SIZE
) -> tuple[int, int]:
    """(w, h) of the model input for a frame of (W0, H0): what windows are grouped by before stacking."""
    _check_mode(mode)
    _check_target(target_size)
    width, height = original_size
    if width < 1 or height < 1:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    if mode == "square":
        return target_size, target_size
    long_side = max(width, height)

    def scaled(side: int) -> int:
        # Python's round (ties to even), as the official loader.
        return max(PATCH_SIZE, round(side * target_size / long_side / PATCH_SIZE) * PATCH_SIZE)

    return scaled(width), scaled(height)


def _u8_to_tensor(image_u8: np.ndarray) -> torch.Tensor:
    """[h, w, 3] uint8 -> [3, h, w] float32; true division by 255, as the reference outputs were produced."""
    return (torch.from_numpy(image_u8).permute(2, 0, 1).to(torch.float32) / 255.0).contiguous()


def _prepare_aspect(image: np.ndarray, target_size: int) -> PreparedFrame:
    height0, width0 = image.shape[:2]
    width, height = model_input_size((width0, height0), "aspect", target_size)
    resized = np.array(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))
    return PreparedFrame(
        tensor=_u8_to_tensor(resized),
        image_u8=resized,
        original_size=(width0, height0),
        model_to_original=(width0 / width, height0 / height, 0.0, 0.0),
    )


def _prepare_square(image: np.ndarray, target_size: int) -> PreparedFrame:
    height0, width0 = image.shape[:2]
    side = max(width0, height0)
    left, top = (side - width0) // 2, (side - height0) // 2
    canvas = Image.new("RGB", (side, side), (0, 0, 0))
    canvas.paste(Image.fromarray(image), (left, top))
    loaded = _u8_to_tensor(np.array(canvas.resize((SQUARE_LOAD_SIZE, SQUARE_LOAD_SIZE), Image.Resampling.BICUBIC)))
    tensor = F.interpolate(
        loaded[None], size=(target_size, target_size), mode="bilinear", align_corners=False, antialias=False
    )[0]
    colours = (tensor * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    scale = side / target_size
    return PreparedFrame(
        tensor=tensor,
        image_u8=colours,
        original_size=(width0, height0),
        model_to_original=(scale, scale, float(-left), float(-top)),
    )


def prepare_frame(image: np.ndarray, mode: str = "aspect", target_size: int = MODEL_IMAGE_SIZE) -> PreparedFrame:
    """Model input for one decoded frame.

    Args:
        image: uint8 [H0, W0, 3] RGB, as ``decode_image`` returns.
        mode: ``"aspect"`` or ``"square"`` (see the module docstring).
        target_size: long side (aspect) or square side of the model input, a multiple of 14.
    """
    _check_mode(mode)
    _check_target(target_size)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] RGB frame, got {image.dtype} {list(image.shape)}")
    if mode == "square":
        return _prepare_square(image, target_size)
    return _prepare_aspect(image, target_size)


def stack_frames(frames: Sequence[PreparedFrame]) -> torch.Tensor:
    """Stack one window's frames into the model input [S, 3, h, w].

    Raises:
        ValueError: no frames, or frames of different model sizes (group windows with ``model_input_size``).
    """
    if not frames:
        raise ValueError("cannot stack an empty window")
    first = frames[0].model_size
    for index, frame in enumerate(frames):
        if frame.model_size != first:
            raise ValueError(
                f"frames of one window must share a model input size: frame 0 is {first[0]}x{first[1]}, "
                f"frame {index} is {frame.model_size[0]}x{frame.model_size[1]}"
            )
    return torch.stack([frame.tensor for frame in frames])
