"""VGGT reproduces the official implementation's outputs (reduced random-weight models, CPU float32).

The references come from the official classes (``shared/vggt/parity``, see its README). A small copy of the
``conv`` single-frame case lives in ``tests/fixtures`` so that the check also runs without ``../shared``.
"""

from __future__ import annotations

import unittest

import torch
from safetensors.torch import load_file

from parity_utils import (
    CONV_FIXTURE_DIR,
    ParityAssertions,
    images_from_u8,
    load_parity_model,
    require_parity_dir,
)
from vae_pipeline.model import VGGT, pose_encoding_to_extri_intri

SUBSAMPLED_SUFFIX = "_sub4"  # dense maps of the 518 case are stored as [:, :, ::4, ::4]


def run_model(model: VGGT, images: torch.Tensor, query_points: torch.Tensor) -> dict[str, torch.Tensor]:
    """``model(images, query_points)`` plus the tensors the references also hold.

    Adds ``pose_enc_list`` stacked, ``extrinsic``/``intrinsic`` at the input size, ``track_list`` (every
    iteration of the track head), ``agg_layer<i>`` for the aggregator layers the model kept and
    ``patch_tokens`` (the patch embedding's output), captured with forward hooks during the same call.
    """
    captured: dict[str, object] = {}

    def keep(name: str):
        return lambda module, args, output: captured.__setitem__(name, output)

    hooks = [
        model.aggregator.register_forward_hook(keep("aggregated")),
        model.aggregator.patch_embed.register_forward_hook(keep("patch_tokens")),
        model.track_head.register_forward_hook(keep("track_head")),
    ]
    try:
        with torch.no_grad():
            outputs = model(images, query_points=query_points)
    finally:
        for hook in hooks:
            hook.remove()

    results = dict(outputs)
    results["pose_enc_list"] = torch.stack(outputs["pose_enc_list"])
    results["extrinsic"], results["intrinsic"] = pose_encoding_to_extri_intri(outputs["pose_enc"], images.shape[-2:])
    results["track_list"] = torch.stack(captured["track_head"][0])
    results["patch_tokens"] = captured["patch_tokens"]
    for layer, tokens in enumerate(captured["aggregated"]):
        if tokens is not None:
            results[f"agg_layer{layer}"] = tokens
    return results


def comparable(results: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``results`` under the names ``expected`` uses (subsampled dense maps, DINO patch tokens)."""
    renamed = dict(results)
    renamed["dino_x_norm_patchtokens"] = results["patch_tokens"]
    for name in expected:
        if name.endswith(SUBSAMPLED_SUFFIX):
            renamed[name] = results[name.removesuffix(SUBSAMPLED_SUFFIX)][:, :, ::4, ::4]
    return renamed


class FixtureParityTest(ParityAssertions):
    """The conv configuration on one frame, from ``tests/fixtures`` (runs everywhere)."""

    def test_conv_single_frame(self) -> None:
        model = load_parity_model(CONV_FIXTURE_DIR)
        data = load_file(CONV_FIXTURE_DIR / "single.safetensors")
        expected = {name.removeprefix("out."): t for name, t in data.items() if name.startswith("out.")}
        images = images_from_u8(data["images_u8"])
        results = run_model(model, images, data["query_points"])
        self.assertTrue(torch.equal(results["images"], images))
        self.assert_all_parity(results, expected)


class SharedParityTest(ParityAssertions):
    """Every stored output of both parity configurations (needs ``../shared``)."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.parity_dir = require_parity_dir()
        cls.inputs = load_file(cls.parity_dir / "inputs.safetensors")
        cls.models = {name: load_parity_model(cls.parity_dir / name) for name in ("conv", "dino")}

    def check_case(self, config: str, case: str, inputs: str, batch: slice = slice(None)) -> None:
        """Run ``config`` on ``images_<inputs>_u8[batch]`` and compare with ``<config>/out_<case>``."""
        expected = load_file(self.parity_dir / config / f"out_{case}.safetensors")
        images = images_from_u8(self.inputs[f"images_{inputs}_u8"][batch])
        results = run_model(self.models[config], images, self.inputs[f"query_points_{inputs}"][batch])
        self.assertTrue(torch.equal(results["images"], images))
        self.assert_all_parity(comparable(results, expected), expected)

    def test_conv_square_batched(self) -> None:
        self.check_case("conv", "sq_batched", "sq")

    def test_conv_rectangular_batched(self) -> None:
        self.check_case("conv", "rect_batched", "rect")

    def test_conv_single_frame(self) -> None:
        self.check_case("conv", "single", "single")

    def test_dino_square_batched_with_intermediates(self) -> None:
        self.check_case("dino", "sq_batched", "sq")

    def test_dino_square_one_element_at_a_time(self) -> None:
        for element in (0, 1):
            with self.subTest(element=element):
                self.check_case("dino", f"sq_b{element}", "sq", slice(element, element + 1))

    def test_dino_rectangular_batched(self) -> None:
        self.check_case("dino", "rect_batched", "rect")

    def test_dino_single_frame(self) -> None:
        self.check_case("dino", "single", "single")

    def test_dino_518_uninterpolated_positions(self) -> None:
        self.check_case("dino", "518", "518")


if __name__ == "__main__":
    unittest.main()
