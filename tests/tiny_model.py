"""A small random-weight VGGT that tests write as a checkpoint folder, so no test needs the 5 GB weights."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from vae_pipeline.model.config import VGGTConfig
from vae_pipeline.model.random_weights import random_vggt

# The reduced "conv" architecture of the parity data (shared/vggt/parity/conv), written out so tests need no
# ../shared.
TINY = VGGTConfig(
    patch_embed="conv",
    embed_dim=64,
    depth=2,
    num_heads=4,
    cached_layer_indices=(0, 1),
    camera_trunk_depth=1,
    camera_num_heads=4,
    dpt_features=16,
    dpt_out_channels=(8, 16, 32, 32),
    dpt_layers=(0, 0, 1, 1),
    track_features=16,
    track_out_channels=(8, 16, 32, 32),
    track_layers=(0, 0, 1, 1),
    track_hidden_size=32,
)


def write_checkpoint(folder: Path, config: VGGTConfig = TINY, seed: int = 0) -> Path:
    """A hub-style checkpoint folder: ``config.json`` beside ``model.safetensors``."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(random_vggt(config, seed).state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    return folder
