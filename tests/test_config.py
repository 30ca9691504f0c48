"""VGGTConfig.from_json: construction recipes, hub config files and to_dict output."""

from __future__ import annotations

import copy
import json
import tempfile
import unittest
from pathlib import Path

from vae_pipeline.model import VGGT, VGGTConfig
from vae_pipeline.model.config import ConfigError

RECIPE = Path(__file__).resolve().parent / "fixtures" / "vggt_parity_conv" / "config.json"


class FromJsonTest(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp())
        self.recipe = json.loads(RECIPE.read_text())

    def write(self, data: dict) -> Path:
        path = self.tmp / "config.json"
        path.write_text(json.dumps(data))
        return path

    def step(self, recipe: dict, target: str) -> dict:
        return next(s for s in recipe["construction_steps"] if s["target"] == target)["kwargs"]

    def test_parity_recipe(self) -> None:
        config = VGGTConfig.from_json(RECIPE)
        self.assertEqual((config.patch_embed, config.embed_dim, config.depth, config.num_heads),
                         ("conv", 64, 2, 4))
        self.assertEqual((config.depth_features, config.depth_out_channels, config.depth_layers),
                         (16, (8, 16, 32, 32), (0, 0, 1, 1)))
        self.assertEqual((config.track_features, config.track_hidden_size), (16, 32))

    def test_depth_and_point_heads_may_differ(self) -> None:
        recipe = copy.deepcopy(self.recipe)
        point = self.step(recipe, "model.point_head")
        point.update(features=8, out_channels=[4, 8, 16, 16], intermediate_layer_idx=[1, 1, 1, 1])
        config = VGGTConfig.from_json(self.write(recipe))
        self.assertEqual((config.point_features, config.point_out_channels, config.point_layers),
                         (8, (4, 8, 16, 16), (1, 1, 1, 1)))
        self.assertEqual(config.depth_out_channels, (8, 16, 32, 32))
        state = VGGT(config).state_dict()
        self.assertEqual(tuple(state["point_head.projects.0.weight"].shape), (4, 128, 1, 1))
        self.assertEqual(tuple(state["depth_head.projects.0.weight"].shape), (8, 128, 1, 1))

    def test_named_dino_backbones_set_depth_and_heads(self) -> None:
        recipe = copy.deepcopy(self.recipe)
        aggregator = self.step(recipe, "model.aggregator")
        aggregator.update(patch_embed="dinov2_vitb14_reg", embed_dim=768, num_heads=12)
        self.step(recipe, "model")["embed_dim"] = 768
        for head in ("model.camera_head", "model.point_head", "model.depth_head", "model.track_head",
                     "model.track_head.feature_extractor"):
            self.step(recipe, head)["dim_in"] = 1536
        config = VGGTConfig.from_json(self.write(recipe))
        self.assertEqual((config.patch_embed, config.patch_embed_depth, config.patch_embed_num_heads),
                         ("dinov2", 12, 12))
        aggregator.update(patch_embed="dinov2_vitg2_reg")
        with self.assertRaises(ConfigError):
            VGGTConfig.from_json(self.write(recipe))

    def test_round_trip_through_to_dict(self) -> None:
        config = VGGTConfig.from_json(RECIPE)
        self.assertEqual(VGGTConfig.from_json(self.write(config.to_dict())), config)

    def test_hub_config_sets_the_top_level_arguments(self) -> None:
        config = VGGTConfig.from_json(self.write({"img_size": 518, "patch_size": 14, "embed_dim": 1024,
                                                   "enable_track": False}))
        self.assertEqual(config, VGGTConfig(enable_track=False))

    def test_unsupported_values_name_the_file_and_the_argument(self) -> None:
        recipe = copy.deepcopy(self.recipe)
        self.step(recipe, "model.aggregator")["aa_block_size"] = 2
        with self.assertRaises(ConfigError) as caught:
            VGGTConfig.from_json(self.write(recipe))
        self.assertIn("aa_block_size", str(caught.exception))
        self.assertIn(str(self.tmp / "config.json"), str(caught.exception))
        with self.assertRaises(ConfigError):
            VGGTConfig.from_json(self.write({"depth": 2, "no_such_field": 1}))


if __name__ == "__main__":
    unittest.main()
