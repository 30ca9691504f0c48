"""Shared helpers of the model tests: where the parity data lives, how it is loaded and compared."""

from __future__ import annotations

import unittest
from pathlib import Path

import torch
from safetensors.torch import load_file

from vae_pipeline.model import VGGT, VGGTConfig

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"
PARITY_DIR = SHARED_DIR / "vggt" / "parity"
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"
CONV_FIXTURE_DIR = FIXTURES_DIR / "vggt_parity_conv"

# The parity README's float32 check: |a - b| <= ATOL + RTOL * |b| for every output, tracks in pixels included.
ATOL = 1e-3
RTOL = 1e-3


def require_parity_dir() -> Path:
    """The shared parity folder, or skip the calling test when this checkout has no ``../shared`` beside it."""
    if not (PARITY_DIR / "inputs.safetensors").is_file():
        raise unittest.SkipTest(f"parity data not found at {PARITY_DIR} (../shared is not beside the repository)")
    return PARITY_DIR


def load_parity_model(config_dir: Path) -> VGGT:
    """``VGGT`` built from ``config_dir/config.json`` with ``state_dict.safetensors`` loaded strictly, in eval mode."""
    model = VGGT(VGGTConfig.from_json(config_dir / "config.json"))
    model.load_state_dict(load_file(config_dir / "state_dict.safetensors"), strict=True)
    return model.eval()


def images_from_u8(images_u8: torch.Tensor) -> torch.Tensor:
    """Model input exactly as the references were made: true division, not multiplication by 1/255."""
    return images_u8.to(torch.float32) / 255.0


def normalised_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest ``|a - b| / (ATOL + RTOL |b|)``: at most 1 passes."""
    return ((actual.double() - expected.double()).abs() / (ATOL + RTOL * expected.double().abs())).max().item()


class ParityAssertions(unittest.TestCase):
    """Mixin of comparisons that name the output and report the normalised error."""

    def assert_parity(self, name: str, actual: torch.Tensor, expected: torch.Tensor) -> None:
        self.assertEqual(tuple(actual.shape), tuple(expected.shape), f"{name}: shape")
        self.assertTrue(torch.isfinite(actual).all().item(), f"{name}: non-finite values")
        error = normalised_error(actual, expected)
        self.assertLessEqual(error, 1.0, f"{name}: max |a-b| / ({ATOL} + {RTOL}|b|) = {error:.3g}")

    def assert_all_parity(self, actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
        """Every expected tensor must be present in ``actual`` and agree; ``actual`` may hold more."""
        missing = sorted(set(expected) - set(actual))
        self.assertFalse(missing, f"outputs not produced: {missing}")
        for name in sorted(expected):
            with self.subTest(output=name):
                self.assert_parity(name, actual[name], expected[name])
