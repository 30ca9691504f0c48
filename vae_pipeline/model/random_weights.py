"""Random but well-conditioned weights for any ``VGGTConfig``: benchmarks and tests run the real architecture
without the 5 GB checkpoint.

The scheme is the one the reduced official models of the parity tests were initialised with (docs/model.md,
section 12): weights N(0, 1/fan_in), small biases, norms near identity, LayerScale in [0.5, 1]; the camera head's
field-of-view outputs start near 1 rad so intrinsics are finite and positive, and the tracker's updates are damped
so its iterations do not amplify rounding.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import VGGTConfig
from .vggt import VGGT

FOV_BIAS = 0.25  # per camera iteration; four iterations accumulate to about 1 rad

# The reduced architecture of the parity tests' convolutional model (tests/fixtures/vggt_parity_conv): every
# structural feature of VGGT-1B at 1/1000 of its size, for tests and CPU demos.
SMALL_CONFIG = VGGTConfig(
    patch_embed="conv",
    embed_dim=64,
    depth=2,
    num_heads=4,
    camera_trunk_depth=1,
    camera_num_heads=4,
    depth_features=16,
    depth_out_channels=(8, 16, 32, 32),
    depth_layers=(0, 0, 1, 1),
    point_features=16,
    point_out_channels=(8, 16, 32, 32),
    point_layers=(0, 0, 1, 1),
    track_features=16,
    track_out_channels=(8, 16, 32, 32),
    track_layers=(0, 0, 1, 1),
    track_hidden_size=32,
)


@torch.no_grad()
def randomize_(model: VGGT, seed: int = 0) -> VGGT:
    """Overwrite every parameter of ``model`` in place, deterministically for ``seed``."""
    generator = torch.Generator().manual_seed(seed)

    def normal(shape: torch.Size, std: float) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * std

    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "gamma":
            value = torch.rand(param.shape, generator=generator) * 0.5 + 0.5
        elif param.dim() == 1 and _is_norm(model, name):
            value = 1 + normal(param.shape, 0.1) if leaf == "weight" else normal(param.shape, 0.1)
        elif leaf.endswith("bias"):
            value = normal(param.shape, 0.05)
        elif param.dim() >= 2 and (leaf.endswith("weight")):
            fan_in = param.shape[0] if _is_transposed_conv(model, name) else math.prod(param.shape[1:])
            value = normal(param.shape, 1 / math.sqrt(fan_in))
        else:  # tokens, positional tables, virtual tracks
            value = normal(param.shape, 0.5)
        param.copy_(value.to(param.dtype))
    if model.camera_head is not None:
        final = model.camera_head.pose_branch.fc2
        final.weight[7:9] *= 0.1
        final.bias[7:9] = FOV_BIAS
    if model.track_head is not None:
        model.track_head.tracker.updateformer.flow_head.weight *= 0.05
    return model


def random_vggt(config: VGGTConfig | None = None, seed: int = 0) -> VGGT:
    """A ``VGGT`` for ``config`` (VGGT-1B by default) with ``randomize_`` weights, in eval mode."""
    return randomize_(VGGT(config or VGGTConfig()), seed).eval()


def _module_of(model: nn.Module, parameter_name: str) -> nn.Module:
    return model.get_submodule(parameter_name.rsplit(".", 1)[0])


def _is_norm(model: nn.Module, parameter_name: str) -> bool:
    return isinstance(_module_of(model, parameter_name), (nn.LayerNorm, nn.GroupNorm))


def _is_transposed_conv(model: nn.Module, parameter_name: str) -> bool:
    return isinstance(_module_of(model, parameter_name), nn.ConvTranspose2d)
