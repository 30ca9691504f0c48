"""VGGT's structure and behaviour beyond the stored references.

State-dict layout of VGGT-1B, batch independence (random weights and new inputs), ``predict`` computing only
what is asked, pose-encoding conversions and the RoPE / attention plumbing.
"""

from __future__ import annotations

import gzip
import json
import math
import unittest
from unittest import mock

import torch
import torch.nn.functional as F

from parity_utils import CONV_FIXTURE_DIR, PARITY_DIR, ParityAssertions, load_parity_model
from vae_pipeline.model import (
    VGGT,
    VGGTConfig,
    extri_intri_to_pose_encoding,
    pose_encoding_to_extri_intri,
    predict,
)
from vae_pipeline.model.layers import Block
from vae_pipeline.model.random_weights import random_vggt
from vae_pipeline.model.rope import RotaryPositionEmbedding2D

SHAPES_FIXTURE = CONV_FIXTURE_DIR.parent / "vggt1b_state_dict_shapes.json.gz"

# A tiny VGGT with every structural feature (DINO patch embed with interpolated positions, RoPE, both DPT heads,
# camera head); three layers so that a depth-only pass can stop before the last one.
STRUCTURE_CONFIG = VGGTConfig(
    embed_dim=32,
    depth=3,
    num_heads=2,
    patch_embed_depth=1,
    patch_embed_num_heads=2,
    camera_trunk_depth=1,
    camera_num_heads=2,
    depth_features=8,
    depth_out_channels=(8, 8, 16, 16),
    depth_layers=(0, 0, 1, 1),
    point_features=8,
    point_out_channels=(8, 8, 16, 16),
    point_layers=(0, 0, 1, 1),
    enable_track=False,
)


def smooth_images(batch: int, frames: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Random images in [0, 1] with structure at several scales: ``[B, S, 3, H, W]``."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch * frames, 3, height // 14, width // 14, generator=generator)
    fine = torch.rand(batch * frames, 3, height, width, generator=generator)
    smooth = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return (0.8 * smooth + 0.2 * fine).clamp(0, 1).view(batch, frames, 3, height, width)


class CallCounter:
    """Counts forward calls of named submodules and keeps the aggregator's last output."""

    def __init__(self, model: VGGT, names: list[str]) -> None:
        self.calls = dict.fromkeys(names, 0)
        modules = dict(model.named_modules())
        self._hooks = [modules[name].register_forward_hook(self._counter(name)) for name in names]
        self._hooks.append(model.aggregator.register_forward_hook(self._keep_aggregated))
        self.aggregated: list[torch.Tensor | None] = []

    def _counter(self, name: str):
        def hook(module, args, output) -> None:
            self.calls[name] += 1

        return hook

    def _keep_aggregated(self, module, args, output) -> None:
        self.aggregated = output

    def __enter__(self) -> "CallCounter":
        return self

    def __exit__(self, *exc) -> None:
        for hook in self._hooks:
            hook.remove()


class StateDictLayoutTest(unittest.TestCase):
    def test_default_config_has_the_official_keys_shapes_and_dtypes(self) -> None:
        with gzip.open(SHAPES_FIXTURE, "rt") as file:
            official = json.load(file)
        with torch.device("meta"):
            model = VGGT(VGGTConfig())
        state = model.state_dict()
        self.assertEqual(sorted(state), sorted(official["shapes"]))
        wrong_shapes = {k: tuple(v.shape) for k, v in state.items() if list(v.shape) != official["shapes"][k]}
        self.assertEqual(wrong_shapes, {})
        self.assertEqual({v.dtype for v in state.values()}, {torch.float32})
        self.assertEqual(sum(v.numel() for v in state.values()), official["total_numel"])

    def test_shape_fixture_matches_the_shared_description(self) -> None:
        shared = PARITY_DIR.parent / "vggt1b_state_dict.json"
        if not shared.is_file():
            self.skipTest(f"{shared} not found (../shared is not beside the repository)")
        with gzip.open(SHAPES_FIXTURE, "rt") as file:
            fixture = json.load(file)
        entries = json.loads(shared.read_text())["keys"]
        self.assertEqual(fixture["shapes"], {e["key"]: e["shape"] for e in entries})

    def test_disabled_heads_have_no_keys(self) -> None:
        config = VGGTConfig(**{**STRUCTURE_CONFIG.to_dict(), "enable_depth": False, "enable_point": False})
        prefixes = {key.split(".")[0] for key in VGGT(config).state_dict()}
        self.assertEqual(prefixes, {"aggregator", "camera_head"})


class BatchIndependenceTest(ParityAssertions):
    """B windows stacked in one call give each window what it gets alone."""

    def check_batch_matches_singles(self, model: VGGT, images: torch.Tensor, query_points=None) -> None:
        with torch.no_grad():
            batched = model(images, query_points=query_points)
            singles = [
                model(images[b : b + 1], query_points=None if query_points is None else query_points[b : b + 1])
                for b in range(images.shape[0])
            ]
        names = [name for name, value in batched.items() if torch.is_tensor(value)]
        self.assertIn("pose_enc", names)
        for name in names:
            with self.subTest(output=name):
                self.assert_parity(name, batched[name], torch.cat([single[name] for single in singles]))
        self.assert_parity(
            "pose_enc_list",
            torch.stack(batched["pose_enc_list"]),
            torch.cat([torch.stack(single["pose_enc_list"]) for single in singles], dim=1),
        )

    def test_random_weights_non_square(self) -> None:
        model = random_vggt(STRUCTURE_CONFIG, seed=0)
        self.check_batch_matches_singles(model, smooth_images(3, 2, 56, 84, seed=1))

    def test_parity_weights_with_tracks_on_new_inputs(self) -> None:
        model = load_parity_model(CONV_FIXTURE_DIR)
        images = smooth_images(3, 3, 140, 154, seed=2)
        query_points = torch.rand(3, 5, 2, generator=torch.Generator().manual_seed(3)) * torch.tensor([153.0, 139.0])
        self.check_batch_matches_singles(model, images, query_points)


class PredictTest(ParityAssertions):
    heads = ["camera_head", "depth_head", "point_head", "track_head"]

    @classmethod
    def setUpClass(cls) -> None:
        cls.model = load_parity_model(CONV_FIXTURE_DIR)
        cls.images = smooth_images(2, 2, 140, 140, seed=4)
        cls.query_points = torch.rand(2, 4, 2, generator=torch.Generator().manual_seed(5)) * 139

    def test_camera_only_runs_no_dense_head(self) -> None:
        with CallCounter(self.model, self.heads) as counter:
            predictions = predict(self.model, self.images, camera=True, depth=False, points=False)
        self.assertEqual(counter.calls, {"camera_head": 1, "depth_head": 0, "point_head": 0, "track_head": 0})
        kept = [layer for layer, tokens in enumerate(counter.aggregated) if tokens is not None]
        self.assertEqual(kept, [self.model.config.depth - 1])
        self.assertEqual(set(predictions), {"pose_enc", "pose_enc_list", "extrinsic", "intrinsic", "images"})
        extrinsic, intrinsic = pose_encoding_to_extri_intri(predictions["pose_enc"], (140, 140))
        self.assertTrue(torch.equal(predictions["extrinsic"], extrinsic))
        self.assertTrue(torch.equal(predictions["intrinsic"], intrinsic))

    def test_depth_only_stops_the_trunk_after_the_last_layer_read(self) -> None:
        model = random_vggt(STRUCTURE_CONFIG, seed=6)
        names = ["camera_head", "depth_head", "point_head", "aggregator.global_blocks.2"]
        with CallCounter(model, names) as counter:
            predictions = predict(model, smooth_images(1, 2, 56, 56, seed=7), camera=False, depth=True)
        self.assertEqual(counter.calls, dict.fromkeys(names, 0) | {"depth_head": 1})
        kept = [layer for layer, tokens in enumerate(counter.aggregated) if tokens is not None]
        self.assertEqual(kept, [0, 1])
        self.assertEqual(set(predictions), {"depth", "depth_conf", "images"})

    def test_agrees_with_forward(self) -> None:
        with torch.no_grad():
            expected = self.model(self.images, query_points=self.query_points)
        predictions = predict(
            self.model, self.images, camera=True, depth=True, points=True, query_points=self.query_points
        )
        self.assertEqual(set(predictions) - set(expected), {"extrinsic", "intrinsic"})
        for name, value in expected.items():
            if torch.is_tensor(value):
                with self.subTest(output=name):
                    self.assert_parity(name, predictions[name], value)

    def test_frames_without_batch_axis(self) -> None:
        predictions = predict(self.model, self.images[0], camera=True, depth=False)
        with torch.no_grad():
            expected = self.model(self.images[:1])
        self.assert_parity("pose_enc", predictions["pose_enc"], expected["pose_enc"])

    def test_disabled_head_is_an_error(self) -> None:
        model = random_vggt(STRUCTURE_CONFIG, seed=8)
        with self.assertRaisesRegex(ValueError, "track"):
            predict(model, smooth_images(1, 1, 56, 56, seed=9), query_points=torch.zeros(1, 1, 2))


class PoseEncodingTest(unittest.TestCase):
    def test_intrinsics_from_fields_of_view(self) -> None:
        pose_enc = torch.tensor([0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 2.0, 2 * math.atan(0.5), 2 * math.atan(0.25)])
        extrinsic, intrinsic = pose_encoding_to_extri_intri(pose_enc, (140, 196))
        expected_k = torch.tensor([[196 / 2 / 0.25, 0, 98], [0, 140 / 2 / 0.5, 70], [0, 0, 1]])
        torch.testing.assert_close(intrinsic, expected_k)
        expected_rt = torch.cat([torch.eye(3), torch.tensor([[0.1], [0.2], [0.3]])], dim=1)
        torch.testing.assert_close(extrinsic, expected_rt)

    def test_round_trip_normalises_the_quaternion(self) -> None:
        generator = torch.Generator().manual_seed(10)
        quaternions = torch.randn(64, 4, generator=generator, dtype=torch.float64)
        # Half-turns (w = 0) and the identity exercise every pivot of the matrix-to-quaternion conversion.
        quaternions[:3] = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]], dtype=torch.float64)
        quaternions[3] = torch.tensor([0, 0, 0, 3.0], dtype=torch.float64)
        pose_enc = torch.cat(
            [
                torch.randn(64, 3, generator=generator, dtype=torch.float64),
                quaternions,
                0.5 + torch.rand(64, 2, generator=generator, dtype=torch.float64),
            ],
            dim=-1,
        ).view(4, 16, 9)
        extrinsic, intrinsic = pose_encoding_to_extri_intri(pose_enc, (210, 280))
        recovered = extri_intri_to_pose_encoding(extrinsic, intrinsic, (210, 280))
        unit = quaternions / quaternions.norm(dim=-1, keepdim=True)
        unit = torch.where(unit[:, 3:] < 0, -unit, unit).view(4, 16, 4)
        torch.testing.assert_close(recovered[..., 3:7], unit)
        torch.testing.assert_close(recovered[..., :3], pose_enc[..., :3])
        torch.testing.assert_close(recovered[..., 7:], pose_enc[..., 7:])


class RotaryEmbeddingTest(unittest.TestCase):
    def test_tables_are_cached_per_layout_and_dtype(self) -> None:
        rope = RotaryPositionEmbedding2D(16)
        first = rope.tables(3, 4, 5, 2, torch.device("cpu"), torch.float32)
        self.assertIs(rope.tables(3, 4, 5, 2, torch.device("cpu"), torch.float32), first)
        self.assertEqual(first.cos.shape, (2 * (5 + 12), 16))
        self.assertEqual(rope.tables(3, 4, 5, 2, torch.device("cpu"), torch.bfloat16).cos.dtype, torch.bfloat16)

    def test_special_tokens_are_not_rotated_and_norms_are_kept(self) -> None:
        rope = RotaryPositionEmbedding2D(16)
        x = torch.randn(2, 3, 2 * (5 + 12), 16)
        rotated = rope(x, grid_h=3, grid_w=4, num_prefix=5, num_frames=2)
        for special in (slice(0, 5), slice(17, 22)):  # the first five tokens of each frame
            torch.testing.assert_close(rotated[..., special, :], x[..., special, :])
        torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))

    def test_attention_scores_depend_on_relative_position_only(self) -> None:
        rope = RotaryPositionEmbedding2D(16)
        q, k = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
        tokens = torch.stack([q, k]).expand(12, 2, 16).transpose(0, 1)  # q and k at every cell of a 3x4 grid
        q_rot, k_rot = rope(tokens.to(torch.float32), grid_h=3, grid_w=4, num_prefix=0, num_frames=1).double()
        grid = lambda r, c: 4 * r + c  # noqa: E731
        # Same offset (1 row, 2 columns) at two places of the grid: same score.
        torch.testing.assert_close(
            q_rot[grid(0, 0)] @ k_rot[grid(1, 2)], q_rot[grid(1, 1)] @ k_rot[grid(2, 3)], rtol=1e-5, atol=1e-5
        )

    def test_q_k_v_reach_attention_in_one_dtype_and_contiguous(self) -> None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        block = Block(32, 2, qk_norm=True).to(device)
        rope = RotaryPositionEmbedding2D(16)
        seen = []
        sdpa = F.scaled_dot_product_attention

        def spy(q, k, v, *args, **kwargs):
            seen.append(({q.dtype, k.dtype, v.dtype}, all(t.is_contiguous() for t in (q, k, v))))
            return sdpa(q, k, v, *args, **kwargs)

        with mock.patch("torch.nn.functional.scaled_dot_product_attention", spy), torch.no_grad():
            with torch.autocast(device_type=device, dtype=torch.bfloat16):
                block(torch.randn(2, 17, 32, device=device), lambda t: rope(t, 3, 4, 5, 1))
        self.assertEqual(seen, [({torch.bfloat16}, True)])


if __name__ == "__main__":
    unittest.main()
