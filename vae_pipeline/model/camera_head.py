"""Camera head: iterative refinement of the 9-number pose encoding from each frame's camera token.

docs/model.md, section 6.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import Block, Mlp

POSE_ENCODING_DIM = 9  # translation (3), quaternion xyzw (4), field of view (height, width)


class CameraHead(nn.Module):
    """Predicts ``absT_quaR_FoV`` pose encodings with AdaLN-modulated trunk passes, one per iteration.

    Each iteration embeds the previous (un-activated) encoding, uses it to modulate the normalised camera tokens,
    runs the trunk (attention across the frames of each sequence) and adds the predicted update.

    Args:
        dim_in: width of the aggregator output (2 * embed_dim).
        trunk_depth: transformer blocks of the trunk.
        num_heads: attention heads of the trunk.
        mlp_ratio: MLP ratio of the trunk blocks.
        num_iterations: refinement iterations (outputs returned).
    """

    def __init__(
        self,
        dim_in: int,
        trunk_depth: int = 4,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_iterations: int = 4,
    ) -> None:
        super().__init__()
        self.num_iterations = num_iterations
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk = nn.Sequential(*(Block(dim_in, num_heads, mlp_ratio) for _ in range(trunk_depth)))
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENCODING_DIM))
        self.embed_pose = nn.Linear(POSE_ENCODING_DIM, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, POSE_ENCODING_DIM)

    def forward(self, aggregated_tokens: list[torch.Tensor | None]) -> list[torch.Tensor]:
        """Read the camera token of the last aggregator layer ``[B, S, P, dim_in]``; return every iteration's
        activated pose encoding ``[B, S, 9]`` (the last one is the prediction)."""
        camera_tokens = self.token_norm(aggregated_tokens[-1][:, :, 0])  # [B, S, dim_in]
        normed_tokens = self.adaln_norm(camera_tokens)
        encoding = None
        predictions = []
        for _ in range(self.num_iterations):
            previous = self.empty_pose_tokens.expand(*camera_tokens.shape[:2], -1) if encoding is None else encoding
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(previous.detach())).chunk(3, dim=-1)
            modulated = gate * (normed_tokens * (1 + scale) + shift) + camera_tokens
            delta = self.pose_branch(self.trunk_norm(self.trunk(modulated)))
            encoding = delta if encoding is None else encoding + delta
            predictions.append(activate_pose_encoding(encoding))
        return predictions


def activate_pose_encoding(encoding: torch.Tensor) -> torch.Tensor:
    """Linear translation and quaternion, ReLU on the two fields of view: ``[..., 9] -> [..., 9]``."""
    return torch.cat([encoding[..., :7], encoding[..., 7:].relu()], dim=-1)
