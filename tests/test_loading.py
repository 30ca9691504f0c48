"""load_vggt and its helpers: every kind of source, and an actionable error for every broken one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
from pathlib import Path

import safetensors.torch
import torch

from vae_pipeline.model.config import VGGTConfig
from vae_pipeline.model.loading import (
    CheckpointError,
    checkpoint_fingerprint,
    describe_source,
    load_vggt,
    resolve_checkpoint,
)
from vae_pipeline.model.random_weights import SMALL_CONFIG
from vae_pipeline.model.vggt import VGGT

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
PARITY = SHARED / "vggt" / "parity"


def tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {name: tensor.clone() for name, tensor in VGGT(SMALL_CONFIG).state_dict().items()}


def write_config(folder: Path, config: VGGTConfig = SMALL_CONFIG) -> Path:
    path = folder / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    return path


class _Payload:
    """Unpickling this calls a function of the os module: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


class LoadingTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.state_dict = tiny_state_dict()

    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = Path(tmp.name)

    def assert_loaded(self, model: VGGT, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        expected = self.state_dict if state_dict is None else state_dict
        self.assertIsInstance(model, VGGT)
        self.assertFalse(model.training)
        loaded = model.state_dict()
        self.assertEqual(set(loaded), set(expected))
        for name, tensor in expected.items():
            self.assertTrue(torch.equal(loaded[name], tensor.to(loaded[name].dtype)), name)
        self.assertFalse(any(t.is_meta for t in [*model.parameters(), *model.buffers()]))

    def assert_error(self, source: str | Path, *fragments: str) -> str:
        with self.assertRaises(CheckpointError) as caught:
            load_vggt(source)
        message = str(caught.exception)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message


class LocalSourceTest(LoadingTestCase):
    def test_pt_file_with_config_beside(self) -> None:
        write_config(self.tmp)
        torch.save(self.state_dict, self.tmp / "weights.pt")
        self.assert_loaded(load_vggt(self.tmp / "weights.pt"))

    def test_safetensors_file_given_as_string(self) -> None:
        write_config(self.tmp)
        safetensors.torch.save_file(self.state_dict, self.tmp / "weights.safetensors")
        model = load_vggt(str(self.tmp / "weights.safetensors"))
        self.assert_loaded(model)
        self.assertEqual(model.config, SMALL_CONFIG)

    def test_folder_prefers_model_safetensors_over_model_pt(self) -> None:
        write_config(self.tmp)
        safetensors.torch.save_file(self.state_dict, self.tmp / "model.safetensors")
        torch.save(tiny_state_dict(seed=1), self.tmp / "model.pt")
        self.assert_loaded(load_vggt(self.tmp))

    def test_folder_with_model_pt(self) -> None:
        write_config(self.tmp)
        torch.save(self.state_dict, self.tmp / "model.pt")
        resolved = resolve_checkpoint(self.tmp)
        self.assertEqual(resolved.weights, self.tmp / "model.pt")
        self.assertEqual(resolved.config, self.tmp / "config.json")
        self.assert_loaded(load_vggt(resolved))

    def test_training_checkpoint_is_unwrapped(self) -> None:
        write_config(self.tmp)
        prefixed = {f"module.{name}": tensor for name, tensor in self.state_dict.items()}
        torch.save({"epoch": 3, "model": prefixed}, self.tmp / "train.pth")
        self.assert_loaded(load_vggt(self.tmp / "train.pth"))

    def test_dtype_device_and_eval(self) -> None:
        write_config(self.tmp)
        torch.save(self.state_dict, self.tmp / "model.pt")
        model = load_vggt(self.tmp, device="cpu", dtype=torch.bfloat16)
        self.assert_loaded(model)
        floating = [t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()]
        self.assertEqual({t.dtype for t in floating}, {torch.bfloat16})
        self.assertEqual({t.device.type for t in floating}, {"cpu"})
        # Non-persistent buffers are in no checkpoint: they must keep the values the constructor gave them.
        reference = VGGT(SMALL_CONFIG)
        for name, buffer in reference.named_buffers():
            self.assertTrue(torch.equal(model.get_buffer(name), buffer.to(model.get_buffer(name).dtype)), name)

    def test_half_checkpoint_loads_as_float32_by_default(self) -> None:
        write_config(self.tmp)
        half = {name: t.half() if t.is_floating_point() else t for name, t in self.state_dict.items()}
        safetensors.torch.save_file(half, self.tmp / "model.safetensors")
        model = load_vggt(self.tmp)
        self.assert_loaded(model, half)
        self.assertEqual({p.dtype for p in model.parameters()}, {torch.float32})

    @unittest.skipUnless(torch.cuda.is_available(), "needs a CUDA device")
    def test_cuda_placement(self) -> None:
        write_config(self.tmp)
        torch.save(self.state_dict, self.tmp / "model.pt")
        model = load_vggt(self.tmp, device="cuda", dtype=torch.bfloat16)
        self.assertEqual({t.device.type for t in [*model.parameters(), *model.buffers()]}, {"cuda"})
        images = torch.rand(1, 2, 3, 56, 56, device="cuda", dtype=torch.bfloat16)
        with torch.no_grad():
            self.assertEqual(model(images)["depth"].shape, (1, 2, 56, 56, 1))

    @unittest.skipUnless(PARITY.is_dir(), f"parity data not found at {PARITY}")
    def test_parity_checkpoints_with_recipe_config(self) -> None:
        for name in ("conv", "dino"):
            with self.subTest(name):
                weights = PARITY / name / "state_dict.safetensors"
                model = load_vggt(weights)
                self.assertEqual(model.config, VGGTConfig.from_json(PARITY / name / "config.json"))
                self.assert_loaded(model, safetensors.torch.load_file(weights))


class BrokenSourceTest(LoadingTestCase):
    def test_missing_file(self) -> None:
        self.assert_error(self.tmp / "nowhere" / "model.pt", "does not exist", str(self.tmp / "nowhere"))
        self.assert_error(str(self.tmp / "weights.safetensors"), "does not exist", "weights.safetensors")
        self.assert_error(self.tmp / "no_such_folder", "does not exist", "no_such_folder")

    def test_unrecognised_sources(self) -> None:
        for source in ("not a model", "a/b/c", "owner/"):
            with self.subTest(source):
                self.assert_error(source, repr(source), "neither an existing file or folder nor")

    def test_unsupported_file_type(self) -> None:
        (self.tmp / "model.ckpt").write_bytes(b"x")
        self.assert_error(self.tmp / "model.ckpt", "model.ckpt", "unsupported file type")

    def test_folder_without_weights(self) -> None:
        write_config(self.tmp)
        self.assert_error(self.tmp, str(self.tmp), "neither model.safetensors nor model.pt")

    def test_truncated_and_corrupt_files(self) -> None:
        write_config(self.tmp)
        torch.save(self.state_dict, self.tmp / "full.pt")
        safetensors.torch.save_file(self.state_dict, self.tmp / "full.safetensors")
        for suffix in (".pt", ".safetensors"):
            data = (self.tmp / f"full{suffix}").read_bytes()
            for kind, broken in (("cut", data[: len(data) // 2]), ("garbage", b"\x00not a checkpoint" * 100)):
                with self.subTest(suffix=suffix, kind=kind):
                    path = self.tmp / f"{kind}{suffix}"
                    path.write_bytes(broken)
                    self.assert_error(path, str(path), "truncated or")

    def test_not_a_state_dict(self) -> None:
        write_config(self.tmp)
        for name, content, fragment in (
            ("list.pt", [torch.zeros(1)], "a list"),
            ("empty.pt", {}, "an empty dict"),
            ("mixed.pt", {"epoch": 3, "weights": [1, 2]}, "'epoch', 'weights'"),
        ):
            with self.subTest(name):
                torch.save(content, self.tmp / name)
                self.assert_error(self.tmp / name, str(self.tmp / name), "does not hold a state dict", fragment)

    def test_pickled_model_is_refused(self) -> None:
        write_config(self.tmp)
        torch.save(VGGT(SMALL_CONFIG), self.tmp / "whole_model.pt")
        self.assert_error(self.tmp / "whole_model.pt", "whole_model.pt", "pickled objects other than tensors")

    def test_pickled_payload_is_refused_without_unsafe_advice(self) -> None:
        write_config(self.tmp)
        marker = self.tmp / "payload-ran"
        torch.save({"weights": _Payload(marker)}, self.tmp / "payload.pt")
        message = self.assert_error(self.tmp / "payload.pt", "payload.pt", "pickled objects other than tensors")
        self.assertNotIn("weights_only", message)
        self.assertFalse(marker.exists(), "loading ran the pickled payload")

    def test_missing_and_unexpected_keys(self) -> None:
        write_config(self.tmp)
        names = sorted(self.state_dict)
        dropped = names[:7]
        broken = {name: t for name, t in self.state_dict.items() if name not in dropped}
        broken["extra.weight"] = torch.zeros(2)
        broken["extra.bias"] = torch.zeros(2)
        torch.save(broken, self.tmp / "model.pt")
        message = self.assert_error(
            self.tmp, str(self.tmp / "model.pt"), "7 missing keys", "2 unexpected keys", "extra.weight", "extra.bias"
        )
        missing_in_order = [name for name in self.state_dict if name in dropped]
        for name in missing_in_order[:5]:
            self.assertIn(name, message)
        self.assertNotIn(missing_in_order[5], message)

    def test_wrong_shapes(self) -> None:
        write_config(self.tmp)
        broken = dict(self.state_dict)
        broken["aggregator.camera_token"] = torch.zeros(1, 2, 1, 32)
        safetensors.torch.save_file(broken, self.tmp / "model.safetensors")
        self.assert_error(
            self.tmp, "1 tensor with a wrong shape", "aggregator.camera_token: expected [1, 2, 1, 64], found [1, 2, 1, 32]"
        )

    def test_without_config_the_architecture_is_vggt_1b(self) -> None:
        torch.save(self.state_dict, self.tmp / "model.pt")
        resolved = resolve_checkpoint(self.tmp / "model.pt")
        self.assertIsNone(resolved.config)
        self.assertIn("VGGT-1B", describe_source(resolved))
        self.assert_error(self.tmp / "model.pt", "VGGT-1B's architecture", "tensors with wrong shapes")

    def test_bad_config(self) -> None:
        (self.tmp / "config.json").write_text(json.dumps({"depth": 2, "depth_features": 16, "colour": "red"}))
        torch.save(self.state_dict, self.tmp / "model.pt")
        self.assert_error(self.tmp, str(self.tmp / "config.json"), "colour")


class FingerprintTest(LoadingTestCase):
    def test_same_files_same_fingerprint_and_changes_are_seen(self) -> None:
        first, second = self.tmp / "a", self.tmp / "b"
        for folder in (first, second):
            folder.mkdir()
            write_config(folder)
            (folder / "model.pt").write_bytes(bytes(range(256)) * 20_000)
        fingerprint = checkpoint_fingerprint(first)
        self.assertTrue(fingerprint.startswith("sha256-headtail:"))
        self.assertEqual(checkpoint_fingerprint(second), fingerprint)
        self.assertEqual(checkpoint_fingerprint(first / "model.pt"), fingerprint)

        data = bytearray((second / "model.pt").read_bytes())
        data[-1] ^= 1
        (second / "model.pt").write_bytes(bytes(data))
        self.assertNotEqual(checkpoint_fingerprint(second), fingerprint)

        write_config(first, SMALL_CONFIG.__class__(**{**SMALL_CONFIG.to_dict(), "enable_track": False}))
        self.assertNotEqual(checkpoint_fingerprint(first), fingerprint)

    def test_small_file_is_hashed_whole(self) -> None:
        path = self.tmp / "model.safetensors"
        path.write_bytes(b"abc" * 500_000)
        fingerprint = checkpoint_fingerprint(path)
        path.write_bytes(b"abc" * 250_000 + b"x" + b"abc" * 250_000)
        self.assertNotEqual(checkpoint_fingerprint(path), fingerprint)


# Runs in a fresh interpreter because huggingface_hub reads HF_HUB_OFFLINE and the cache location at import.
HUB_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import safetensors.torch
    from vae_pipeline.model.loading import CheckpointError, checkpoint_fingerprint, describe_source, load_vggt

    out = {}
    model = load_vggt("local-test/tiny-vggt")
    safetensors.torch.save_file(model.state_dict(), sys.argv[1])
    out["describe"] = describe_source("local-test/tiny-vggt")
    out["fingerprint"] = checkpoint_fingerprint("local-test/tiny-vggt")
    try:
        load_vggt("facebook/VGGT-1B")
    except CheckpointError as exc:
        out["uncached_error"] = str(exc)
    print(json.dumps(out))
    """
)


class HubCacheTest(LoadingTestCase):
    REVISION = "0123456789abcdef0123456789abcdef01234567"

    def setUp(self) -> None:
        super().setUp()
        # huggingface_hub's cache layout: models--{owner}--{name}/refs/main names the snapshot of the main branch.
        # The repository holds model.pt only, like facebook/VGGT-1B, so model.safetensors is looked up and missed.
        repo = self.tmp / "hf" / "hub" / "models--local-test--tiny-vggt"
        self.snapshot = repo / "snapshots" / self.REVISION
        self.snapshot.mkdir(parents=True)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(self.REVISION)
        write_config(self.snapshot)
        torch.save(self.state_dict, self.snapshot / "model.pt")

    def run_hub_script(self, **environment: str) -> tuple[dict, subprocess.CompletedProcess]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(
            HF_HOME=str(self.tmp / "hf"),
            HF_HUB_CACHE=str(self.tmp / "hf" / "hub"),
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
            **environment,
        )
        result = subprocess.run(
            [sys.executable, "-c", HUB_SCRIPT, str(self.tmp / "loaded.safetensors")],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return json.loads(result.stdout.strip().splitlines()[-1]), result

    def test_offline_hub_ids_use_the_cache_or_say_what_to_do(self) -> None:
        out, _ = self.run_hub_script(HF_HUB_OFFLINE="1")
        loaded = safetensors.torch.load_file(self.tmp / "loaded.safetensors")
        self.assertEqual(set(loaded), set(self.state_dict))
        self.assertTrue(all(torch.equal(loaded[name], t) for name, t in self.state_dict.items()))
        self.assertIn(f"local-test/tiny-vggt@{self.REVISION}", out["describe"])
        self.assertEqual(out["fingerprint"], checkpoint_fingerprint(self.snapshot))

        message = out["uncached_error"]
        for fragment in ("facebook/VGGT-1B", "HF_HUB_OFFLINE", str(self.tmp / "hf" / "hub"), "hf download", "--checkpoint"):
            self.assertIn(fragment, message)

    def test_unreachable_hub_falls_back_to_the_cache_at_once_and_quietly(self) -> None:
        with socket.socket() as probe:  # a port nothing listens on: connections are refused
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        start = time.monotonic()
        out, result = self.run_hub_script(HF_ENDPOINT=f"http://127.0.0.1:{port}")
        self.assertLess(time.monotonic() - start, 20.0, "waited for the hub's retries")
        self.assertIn(f"local-test/tiny-vggt@{self.REVISION}", out["describe"])
        self.assertIn("the hub could not be reached", out["uncached_error"])
        self.assertNotIn("Retrying", result.stderr)


if __name__ == "__main__":
    unittest.main()
