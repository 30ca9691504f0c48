"""Unit tests of the DPT heads, the track head and the tracker (vae_pipeline.model.{dpt_head,track_head,tracker}).

Whole-model parity against the official outputs lives in test_model_parity.py; these tests pin the heads'
structure and the properties their callers rely on, with small random weights.
"""

from __future__ import annotations

import json
import math
import unittest
from pathlib import Path

import torch
import torch.nn.functional as F

from vae_pipeline.model.dpt_head import DPTHead, ResidualConvUnit, dpt_position_embedding
from vae_pipeline.model.track_head import TrackHead
from vae_pipeline.model.tracker import Tracker, motion_embedding

SHARED = Path(__file__).resolve().parents[2] / "shared"
VGGT1B_KEYS = SHARED / "vggt" / "vggt1b_state_dict.json"

DIM_IN = 32
PATCH = 14
PATCH_START = 5
LAYERS = (0, 1, 1, 3)
OUT_CHANNELS = (8, 16, 32, 32)


def make_tokens(batch: int, frames: int, height: int, width: int, seed: int = 0) -> list[torch.Tensor | None]:
    """Aggregator-like outputs by layer (layer 2 not kept), ``[B, S, 5 + h*w, DIM_IN]``."""
    generator = torch.Generator().manual_seed(seed)
    num_tokens = PATCH_START + (height // PATCH) * (width // PATCH)
    tokens: list[torch.Tensor | None] = [
        torch.randn(batch, frames, num_tokens, DIM_IN, generator=generator) for _ in range(4)
    ]
    tokens[2] = None
    return tokens


def small_dpt(**kwargs) -> DPTHead:
    torch.manual_seed(0)
    return DPTHead(DIM_IN, features=16, out_channels=OUT_CHANNELS, layers=LAYERS, **kwargs).eval()


def small_track_head(corr_levels: int = 3) -> TrackHead:
    torch.manual_seed(0)
    return TrackHead(
        DIM_IN,
        features=16,
        iters=3,
        corr_levels=corr_levels,
        hidden_size=32,
        out_channels=OUT_CHANNELS,
        layers=LAYERS,
        depth=2,
        num_virtual_tracks=8,
    ).eval()


class DPTHeadTest(unittest.TestCase):
    def test_prediction_shapes_and_activations(self) -> None:
        images = torch.zeros(2, 3, 3, 42, 56)
        tokens = make_tokens(2, 3, 42, 56)
        with torch.no_grad():
            depth, depth_conf = small_dpt(output_dim=2, activation="exp")(tokens, images, PATCH_START)
            points, points_conf = small_dpt(output_dim=4, activation="inv_log")(tokens, images, PATCH_START)
        self.assertEqual(depth.shape, (2, 3, 42, 56, 1))
        self.assertEqual(depth_conf.shape, (2, 3, 42, 56))
        self.assertEqual(points.shape, (2, 3, 42, 56, 3))
        self.assertEqual(points_conf.shape, (2, 3, 42, 56))
        self.assertTrue(bool((depth > 0).all()))
        self.assertTrue(bool((depth_conf > 1).all()) and bool((points_conf > 1).all()))

    def test_feature_only_variant(self) -> None:
        head = small_dpt(pos_embed=False, feature_only=True, down_ratio=2)
        self.assertFalse(any(key.startswith("scratch.output_conv2") for key in head.state_dict()))
        self.assertEqual(head.scratch.output_conv1.weight.shape, (16, 16, 3, 3))
        with torch.no_grad():
            features = head(make_tokens(1, 2, 28, 42), torch.zeros(1, 2, 3, 28, 42), PATCH_START)
        self.assertEqual(features.shape, (1, 2, 16, 14, 21))

    def test_chunked_equals_unchunked(self) -> None:
        head = small_dpt(output_dim=4, activation="inv_log")
        images = torch.zeros(2, 3, 3, 28, 42)
        tokens = make_tokens(2, 3, 28, 42)
        with torch.no_grad():
            whole = head(tokens, images, PATCH_START)
            chunked = head(tokens, images, PATCH_START, frames_chunk_size=4)
        for a, b in zip(whole, chunked):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    def test_missing_layer_is_an_error(self) -> None:
        tokens = make_tokens(1, 1, 28, 28)
        tokens[3] = None
        with self.assertRaisesRegex(ValueError, "layer 3"):
            small_dpt(output_dim=2, activation="exp")(tokens, torch.zeros(1, 1, 3, 28, 28), PATCH_START)

    def test_residual_unit_skip_adds_rectified_input(self) -> None:
        unit = ResidualConvUnit(4)
        with torch.no_grad():
            for conv in (unit.conv1, unit.conv2):
                conv.weight.zero_()
                conv.bias.zero_()
            x = torch.randn(2, 4, 5, 5)
            torch.testing.assert_close(unit(x), F.relu(x))

    def test_position_embedding_layout(self) -> None:
        height, width, aspect = 3, 4, 4 / 3
        embed = dpt_position_embedding(8, height, width, aspect)
        self.assertEqual(embed.shape, (8, height, width))
        # Corners of the image on the unit circle: x spans a / sqrt(a^2 + 1), y spans 1 / sqrt(a^2 + 1).
        span_x, span_y = aspect / math.hypot(aspect, 1), 1 / math.hypot(aspect, 1)
        u = torch.tensor([span_x * (2 * (i + 0.5) / width - 1) for i in range(width)])
        v = torch.tensor([span_y * (2 * (j + 0.5) / height - 1) for j in range(height)])
        # Channel order x-sin, x-cos, y-sin, y-cos; frequencies 100^(-m / 2) for m = 0, 1.
        torch.testing.assert_close(embed[0], torch.sin(u).expand(height, -1))
        torch.testing.assert_close(embed[3], torch.cos(u / 10).expand(height, -1))
        torch.testing.assert_close(embed[5], torch.sin(v / 10)[:, None].expand(-1, width))
        torch.testing.assert_close(embed[6], torch.cos(v)[:, None].expand(-1, width))


@unittest.skipUnless(VGGT1B_KEYS.exists(), f"{VGGT1B_KEYS} is absent (the shared data sits beside the repository)")
class OfficialStateDictTest(unittest.TestCase):
    """Keys and shapes of VGGT-1B's heads, built on the meta device (no memory, no initialisation cost)."""

    @classmethod
    def setUpClass(cls) -> None:
        entries = json.loads(VGGT1B_KEYS.read_text())["keys"]
        cls.official = {entry["key"]: tuple(entry["shape"]) for entry in entries}

    def assert_matches(self, prefix: str, module: torch.nn.Module) -> None:
        expected = {key[len(prefix) :]: shape for key, shape in self.official.items() if key.startswith(prefix)}
        actual = {key: tuple(value.shape) for key, value in module.state_dict().items()}
        self.assertEqual(sorted(actual), sorted(expected))
        self.assertEqual(actual, expected)

    def test_depth_and_point_heads(self) -> None:
        with torch.device("meta"):
            depth = DPTHead(2048, output_dim=2, activation="exp")
            point = DPTHead(2048, output_dim=4, activation="inv_log")
        self.assert_matches("depth_head.", depth)
        self.assert_matches("point_head.", point)

    def test_track_head(self) -> None:
        with torch.device("meta"):
            head = TrackHead(2048)
        self.assert_matches("track_head.", head)


class TrackerTest(unittest.TestCase):
    def setUp(self) -> None:
        generator = torch.Generator().manual_seed(1)
        self.images = torch.zeros(2, 3, 3, 56, 84)
        self.tokens = make_tokens(2, 3, 56, 84, seed=1)
        self.queries = torch.rand(2, 5, 2, generator=generator) * torch.tensor([83.0, 55.0])

    def test_shapes_and_query_frame(self) -> None:
        with torch.no_grad():
            tracks, vis, conf = small_track_head()(self.tokens, self.images, PATCH_START, self.queries)
        self.assertEqual(len(tracks), 3)
        for track in tracks:
            self.assertEqual(track.shape, (2, 3, 5, 2))
            # Frame 0 is the query frame: exactly the queries, not merely close.
            self.assertTrue(torch.equal(track[:, 0], self.queries))
        self.assertEqual(vis.shape, (2, 3, 5))
        self.assertEqual(conf.shape, (2, 3, 5))
        self.assertTrue(bool(((vis > 0) & (vis < 1)).all()))

    def test_batch_elements_are_independent(self) -> None:
        head = small_track_head()
        with torch.no_grad():
            batched = head(self.tokens, self.images, PATCH_START, self.queries)
            for b in range(2):
                tokens = [None if t is None else t[b : b + 1] for t in self.tokens]
                single = head(tokens, self.images[b : b + 1], PATCH_START, self.queries[b : b + 1])
                for got, want in zip(single[0], batched[0]):
                    torch.testing.assert_close(got, want[b : b + 1], rtol=1e-5, atol=1e-4)
                torch.testing.assert_close(single[1], batched[1][b : b + 1], rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(single[2], batched[2][b : b + 1], rtol=1e-5, atol=1e-5)

    def test_chunked_equals_unchunked(self) -> None:
        head = small_track_head()
        with torch.no_grad():
            whole = head(self.tokens, self.images, PATCH_START, self.queries)
            chunked = head(self.tokens, self.images, PATCH_START, self.queries, frames_chunk_size=4)
        torch.testing.assert_close(chunked[0][-1], whole[0][-1], rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(chunked[1], whole[1], rtol=1e-5, atol=1e-5)

    def test_correlation_matches_sampled_correlation_volume(self) -> None:
        """Window cell (i, j) samples the full correlation map at x offset i - r, y offset j - r (zero padding)."""
        torch.manual_seed(2)
        tracker = Tracker(latent_dim=8, corr_levels=2, corr_radius=2, hidden_size=16, depth=1, num_virtual_tracks=4)
        frames, num_tracks, latent = 2, 3, 8
        fmap = torch.randn(frames, latent, 9, 11)
        pyramid = [fmap, F.avg_pool2d(fmap, 2, 2)]
        feats = torch.randn(1, frames, num_tracks, latent)
        coords = torch.tensor([[0.3, 0.2], [5.5, 4.25], [10.0, 7.9]]).expand(1, frames, -1, -1)
        corr = tracker._correlate(pyramid, feats, coords, frames_chunk_size=None)
        self.assertEqual(corr.shape, (1, frames, num_tracks, 2 * 25))
        for level, level_map in enumerate(pyramid):
            height, width = level_map.shape[-2:]
            volume = torch.einsum("fnc,fchw->fnhw", feats[0], level_map) / math.sqrt(latent)
            for i in range(5):
                for j in range(5):
                    points = coords[0] / 2**level + torch.tensor([i - 2.0, j - 2.0])
                    grid = points * torch.tensor([2 / (width - 1), 2 / (height - 1)]) - 1
                    want = F.grid_sample(volume, grid[:, :, None], align_corners=True, padding_mode="zeros")
                    got = corr[0, :, :, level * 25 + i * 5 + j]
                    torch.testing.assert_close(got, want[:, :, :, 0].diagonal(dim1=1, dim2=2), rtol=1e-5, atol=1e-5)

    def test_motion_embedding_layout(self) -> None:
        offsets = torch.tensor([[0.0, 0.0], [3.0, -2.0]])
        embed = motion_embedding(offsets, channels=8, max_scale=518)
        self.assertEqual(embed.shape, (2, 2 * 8 + 4))
        torch.testing.assert_close(embed[0, :16], torch.tensor([0.0, 1.0] * 8))
        # Linear frequencies 2m * 1000 / channels; pairs (sin, cos) interleaved; x block, y block, f / 518 twice.
        freqs = torch.arange(4) * 2 * 1000 / 8
        torch.testing.assert_close(embed[1, 2:8:2], torch.sin(3.0 * freqs[1:]))
        torch.testing.assert_close(embed[1, 9:16:2], torch.cos(-2.0 * freqs))
        torch.testing.assert_close(embed[1, 16:], torch.tensor([3.0, -2.0, 3.0, -2.0]) / 518)


if __name__ == "__main__":
    unittest.main()
