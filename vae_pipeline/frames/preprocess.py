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
# A frame smaller than this on either side carries no content worth a camera (a 1x1 placeholder, a corrupt
# thumbnail); it fails its windows with its name rather than be blown up to the model's size.
MIN_FRAME_SIDE = 16


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
    height, width = image.shape[:2]
    if min(width, height) < MIN_FRAME_SIDE:
        raise ValueError(f"the frame is {width}x{height} pixels, too small to carry content "
                         f"(at least {MIN_FRAME_SIDE} on each side)")
    if mode == "square":
        return _prepare_square(image, target_size)
    return _prepare_aspect(image, target_size)


def conform_frames(frames: Sequence[PreparedFrame]) -> list[PreparedFrame]:
    """The frames of one window at one model input size: the size most of them have (the first frame's on a
    tie). A frame of another size or orientation (a rotated photo among landscape frames, a different camera) is
    scaled to fit that size, keeping its shape, and centred on black, like the square mode's padding; its
    ``model_to_original`` then maps the fitted image to its own pixels, so its camera stays exact."""
    sizes = [frame.model_size for frame in frames]
    target = max(sizes, key=lambda size: (sizes.count(size), -sizes.index(size)))
    return [frame if frame.model_size == target else _fit(frame, target) for frame in frames]


def _fit(frame: PreparedFrame, size: tuple[int, int]) -> PreparedFrame:
    width, height = size
    old_width, old_height = frame.model_size
    scale = min(width / old_width, height / old_height)
    content = (max(1, round(old_width * scale)), max(1, round(old_height * scale)))
    left, top = (width - content[0]) // 2, (height - content[1]) // 2
    canvas = Image.new("RGB", size, (0, 0, 0))
    canvas.paste(Image.fromarray(frame.image_u8).resize(content, Image.Resampling.BICUBIC), (left, top))
    image_u8 = np.array(canvas)
    # Fitted model pixel -> previous model pixel -> original pixel (COLMAP pixel edges, so no half-pixel terms).
    step_x, step_y = old_width / content[0], old_height / content[1]
    sx, sy, ox, oy = frame.model_to_original
    return PreparedFrame(
        tensor=_u8_to_tensor(image_u8),
        image_u8=image_u8,
        original_size=frame.original_size,
        model_to_original=(sx * step_x, sy * step_y, ox - sx * step_x * left, oy - sy * step_y * top),
    )


def stack_frames(frames: Sequence[PreparedFrame]) -> torch.Tensor:
    """Stack one window's frames into the model input [S, 3, h, w].

    Raises:
        ValueError: no frames, or frames of different model sizes (``conform_frames`` brings them to one).
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
