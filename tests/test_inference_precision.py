"""The reduced-precision trunk: bf16 weights give what the official recipe (float32 weights under bf16 autocast)
gives, and heads stay float32. bf16 runs on the CPU too, so this is checked without a GPU."""

from __future__ import annotations

import unittest

import torch

from vae_pipeline.model.inference import predict, prepare_for_inference, trunk_dtype_of
from vae_pipeline.model.random_weights import SMALL_CONFIG, random_vggt


class Bf16TrunkTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        torch.manual_seed(0)
        cls.images = torch.rand(2, 3, 3, 140, 196)
        cls.model = random_vggt(SMALL_CONFIG)
        cls.keys = {k: v.shape for k, v in cls.model.state_dict().items()}
        cls.float32 = predict(cls.model, cls.images)
        cls.recipe = predict(cls.model, cls.images, trunk_dtype=torch.bfloat16)  # autocast, float32 weights
        prepare_for_inference(cls.model, trunk_dtype=torch.bfloat16)
        cls.fast = predict(cls.model, cls.images)

    def test_bf16_weights_equal_the_autocast_recipe(self) -> None:
        for name in ("pose_enc", "depth", "depth_conf", "extrinsic", "intrinsic"):
            torch.testing.assert_close(self.fast[name], self.recipe[name], rtol=1e-5, atol=1e-5, msg=name)

    def test_reduced_precision_stays_close_to_float32(self) -> None:
        relative = ((self.fast["depth"] - self.float32["depth"]).abs() / self.float32["depth"]).max().item()
        self.assertLess(relative, 0.05)
        self.assertGreater(relative, 0.0)  # it did run in reduced precision

    def test_only_the_trunk_matrices_change_dtype(self) -> None:
        self.assertEqual(trunk_dtype_of(self.model), torch.bfloat16)
        state = self.model.state_dict()
        self.assertEqual({k: v.shape for k, v in state.items()}, self.keys)
        self.assertEqual(state["aggregator.frame_blocks.0.attn.qkv.weight"].dtype, torch.bfloat16)
        for name in ("aggregator.frame_blocks.0.ls1.gamma", "aggregator.frame_blocks.0.norm1.weight",
                     "aggregator.camera_token", "camera_head.trunk.0.attn.qkv.weight",
                     "depth_head.projects.0.weight"):
            self.assertEqual(state[name].dtype, torch.float32, name)
        for value in self.fast.values():
            if torch.is_tensor(value) and value.is_floating_point():
                self.assertEqual(value.dtype, torch.float32)


if __name__ == "__main__":
    unittest.main()
