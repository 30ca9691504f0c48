"""A small random-weight VGGT that tests write as a checkpoint folder, so no test needs the 5 GB weights."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from vae_pipeline.model.config import VGGTConfig
from vae_pipeline.model.random_weights import SMALL_CONFIG, random_vggt


def write_checkpoint(folder: Path, config: VGGTConfig = SMALL_CONFIG, seed: int = 0) -> Path:
    """A hub-style checkpoint folder: ``config.json`` beside ``model.safetensors``."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(random_vggt(config, seed).state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    return folder
