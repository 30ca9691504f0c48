"""Build VGGT from a checkpoint: a local file, a local folder laid out like the hub repository, or a hub model id.

Sources, in the order they are recognised:

- an existing file ``*.pt`` / ``*.pth`` (``torch.save`` of a state dict) or ``*.safetensors``;
- an existing folder laid out like the Hugging Face repository: ``model.safetensors`` or ``model.pt`` (the first
  one present), optionally with ``config.json``;
- otherwise ``owner/name`` is a Hugging Face model id (default ``facebook/VGGT-1B``; ``facebook/VGGT-1B-Commercial``
  works the same way): ``model.safetensors``, else ``model.pt``, plus ``config.json`` when the repository has one,
  through ``huggingface_hub``'s cache. ``HF_HUB_OFFLINE=1`` restricts this to what the cache already holds.

A ``config.json`` beside the weights (construction recipe, hub mixin or ``VGGTConfig.to_dict`` format, see
``VGGTConfig.from_json``) sets the architecture; without one the architecture is VGGT-1B's.

Pickled checkpoints are read with ``torch.load(weights_only=True)``, which refuses anything but tensors and plain
containers. Two common wrappings are undone: a dict holding the state dict under ``state_dict``, ``model``,
``model_state_dict`` or ``module`` (training checkpoints), and a ``module.`` (DataParallel / DDP) or ``_orig_mod.``
(``torch.compile``) prefix shared by every key. Keys and shapes must then match the model exactly.

Every failure raises ``CheckpointError`` with a message that names the source and says what to do about it.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import os
import re
import socket
import urllib.parse
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import hf_hub_download
from huggingface_hub.utils import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)
from safetensors import SafetensorError
from torch import nn
from torch.nn.modules.module import register_module_parameter_registration_hook

from .config import ConfigError, VGGTConfig
from .vggt import VGGT

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "facebook/VGGT-1B"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")
REPO_WEIGHT_FILES = ("model.safetensors", "model.pt")
CONFIG_FILE = "config.json"

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
_SHARED_KEY_PREFIXES = ("module.", "_orig_mod.")
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_SHOWN_KEYS = 5
_FINGERPRINT_CHUNK = 1 << 20
HUB_PROBE_TIMEOUT_S = 3.0
_SOURCES_HELP = (
    "pass a .pt/.pth/.safetensors file, a folder holding model.safetensors or model.pt (and optionally "
    f"config.json), or a Hugging Face model id such as {DEFAULT_MODEL_ID}"
)


class CheckpointError(RuntimeError):
    """A model source that cannot be turned into a VGGT: missing, unreadable, or not matching the architecture."""


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """Where a model source's files are on this machine.

    Attributes:
        source: the source as given (path or hub id).
        weights: the checkpoint file.
        config: the ``config.json`` that sets the architecture, or None for VGGT-1B's.
        repo_id: the hub model id, for hub sources.
        revision: the hub commit the cached files belong to, for hub sources.
    """

    source: str
    weights: Path
    config: Path | None
    repo_id: str | None = None
    revision: str | None = None


def resolve_checkpoint(source: str | Path | ResolvedCheckpoint) -> ResolvedCheckpoint:
    """Find the weights and config of ``source``, downloading hub files into the hub cache when needed."""
    if isinstance(source, ResolvedCheckpoint):
        return source
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return _resolve_folder(text, path)
    if path.is_file():
        if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise CheckpointError(f"checkpoint {path} has an unsupported file type {path.suffix!r}: {_SOURCES_HELP}")
        return ResolvedCheckpoint(text, path, _config_beside(path.parent))
    if path.exists():
        raise CheckpointError(f"checkpoint {path} is neither a regular file nor a folder: {_SOURCES_HELP}")
    if isinstance(source, Path) or path.suffix.lower() in CHECKPOINT_SUFFIXES:
        raise CheckpointError(f"checkpoint path {path} does not exist: {_SOURCES_HELP}")
    if _HUB_ID.fullmatch(text):
        return _resolve_hub(text)
    raise CheckpointError(
        f"model source {text!r} is neither an existing file or folder nor a Hugging Face model id (owner/name): "
        f"{_SOURCES_HELP}"
    )


def describe_source(source: str | Path | ResolvedCheckpoint) -> str:
    """One line for logs and provenance: what was loaded, from where, at which hub revision."""
    resolved = resolve_checkpoint(source)
    config = str(resolved.config) if resolved.config else "VGGT-1B architecture (no config.json)"
    if resolved.repo_id is None:
        return f"{resolved.weights} (config: {config})"
    return f"{resolved.repo_id}@{resolved.revision} ({resolved.weights}; config: {config})"


def checkpoint_fingerprint(source: str | Path | ResolvedCheckpoint) -> str:
    """A cheap identity of the weights and config: SHA-256 over the file size, first and last MiB, and config.

    Reads at most 2 MiB of the checkpoint, so it is instant even for VGGT-1B's 5 GB; two different trainings of
    the same architecture differ in those bytes. The same files give the same fingerprint whether they are
    reached by path or by hub id.
    """
    resolved = resolve_checkpoint(source)
    digest = hashlib.sha256()
    try:
        size = resolved.weights.stat().st_size
        digest.update(str(size).encode())
        with resolved.weights.open("rb") as file:
            digest.update(file.read(_FINGERPRINT_CHUNK))
            file.seek(max(_FINGERPRINT_CHUNK, size - _FINGERPRINT_CHUNK))
            digest.update(file.read())
        if resolved.config is not None:
            digest.update(resolved.config.read_bytes())
    except OSError as exc:
        raise CheckpointError(f"cannot read {_name(resolved)}: {exc}") from exc
    return f"sha256-headtail:{digest.hexdigest()}"


def load_vggt(
    source: str | Path | ResolvedCheckpoint = DEFAULT_MODEL_ID,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> VGGT:
    """Build VGGT from ``source`` (see the module docstring) in eval mode.

    Args:
        source: checkpoint file, hub-style folder, hub model id, or the result of ``resolve_checkpoint``.
        device: where the model goes; None keeps it on the CPU.
        dtype: floating-point dtype of the parameters and buffers; None gives float32 whatever the checkpoint
            stores.

    On the CPU in float32, the tensors stay memory-mapped from the checkpoint file (copy-on-write), so pages are
    read as they are used; overwriting that file while the model is in use is not safe.

    Raises:
        CheckpointError: the source is missing, unreadable, not a state dict, or does not match the architecture.
    """
    resolved = resolve_checkpoint(source)
    model = _build_and_load(resolved)
    # The state dict is gone by now, so each tensor is converted and moved with nothing else holding it.
    model.to(device=device, dtype=dtype or torch.float32)
    return model.eval()


def check_checkpoint(source: str | Path | ResolvedCheckpoint) -> ResolvedCheckpoint:
    """Raise the ``CheckpointError`` that ``load_vggt`` would, without reading the weights' values: the config,
    the tensors' names and shapes (a safetensors file's header; a pickle's tensors are memory-mapped, not read,
    when it is a zip as ``torch.save`` writes) and their match with the architecture.

    Lets a run refuse a bad checkpoint before it creates anything. Returns the resolved checkpoint.
    """
    resolved = resolve_checkpoint(source)
    with _parameters_on_meta():
        model = VGGT(_read_config(resolved))
    _check_matches(model, _read_shapes(resolved), resolved)
    return resolved


def _build_and_load(resolved: ResolvedCheckpoint) -> VGGT:
    config = _read_config(resolved)
    state_dict = _read_state_dict(resolved)
    with _parameters_on_meta():
        model = VGGT(config)
    _check_matches(model, {name: tuple(tensor.shape) for name, tensor in state_dict.items()}, resolved)
    try:
        model.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{_name(resolved)} does not load: {exc}") from exc
    logger.info("loaded VGGT from %s", resolved.weights)
    return model


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Parameters registered inside are moved to the meta device; buffers keep their values.

    ``load_state_dict(assign=True)`` then adopts the checkpoint's tensors, so VGGT-1B's 5 GB exist once, and no
    time goes into a random initialisation that would be overwritten. ``torch.device("meta")`` alone would also
    empty the non-persistent buffers, which no checkpoint restores. The hook is process-wide while it is
    registered, so only the model's construction runs inside.
    """

    def to_meta(module: nn.Module, name: str, param: nn.Parameter) -> nn.Parameter:
        return nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    handle = register_module_parameter_registration_hook(to_meta)
    try:
        yield
    finally:
        handle.remove()


def _read_config(resolved: ResolvedCheckpoint) -> VGGTConfig:
    if resolved.config is None:
        return VGGTConfig()
    try:
        return VGGTConfig.from_json(resolved.config)
    except ConfigError as exc:
        raise CheckpointError(
            f"{exc}; fix that file or remove it (without it the architecture is VGGT-1B's)"
        ) from exc


def _read_shapes(resolved: ResolvedCheckpoint) -> dict[str, tuple[int, ...]]:
    """Name and shape of every tensor of the checkpoint, reading as little of it as its format allows."""
    if resolved.weights.suffix.lower() == ".safetensors":
        try:
            with safetensors.safe_open(resolved.weights, framework="pt") as file:
                return {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}
        except (SafetensorError, OSError) as exc:
            raise _not_safetensors(resolved, exc) from exc
    return {name: tuple(tensor.shape) for name, tensor in _read_state_dict(resolved).items()}


def _redo(resolved: ResolvedCheckpoint) -> str:
    return "download it again" if resolved.repo_id else "write it again"


def _not_safetensors(resolved: ResolvedCheckpoint, exc: Exception) -> CheckpointError:
    return CheckpointError(f"{_name(resolved)} is truncated or not a safetensors file ({exc}); {_redo(resolved)}")


def _read_state_dict(resolved: ResolvedCheckpoint) -> dict[str, torch.Tensor]:
    path = resolved.weights
    where = _name(resolved)
    redo = _redo(resolved)
    if path.suffix.lower() == ".safetensors":
        try:
            return safetensors.torch.load_file(path, device="cpu")
        except (SafetensorError, OSError) as exc:
            raise _not_safetensors(resolved, exc) from exc
    try:
        # Memory-mapped when the format allows (zip, as every torch.save since 1.6 writes), so pages come from the
        # file as they are used instead of a second copy in memory. Truncated zips fail this test and then load.
        with warnings.catch_warnings():
            # The weights-only unpickler warns about pickle protocols it may not support, then fails or not: the
            # outcome is what counts, and it is reported below.
            warnings.simplefilter("ignore", UserWarning)
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(exc)
        if "global" in detail.lower():
            raise CheckpointError(
                f"{where} holds pickled objects other than tensors (for example a whole model), which are not "
                f"loaded for safety ({detail}); save model.state_dict() instead"
            ) from exc
        raise CheckpointError(f"{where} is truncated or corrupt ({detail}); {redo}") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{where} is truncated or corrupt ({_first_line(exc)}); {redo}") from exc
    return _unwrap_state_dict(loaded, where)


def _unwrap_state_dict(loaded: Any, where: str) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping) and not _is_state_dict(loaded):
        for key in _WRAPPER_KEYS:
            if _is_state_dict(loaded.get(key)):
                loaded = loaded[key]
                break
    if not _is_state_dict(loaded):
        raise CheckpointError(
            f"{where} does not hold a state dict (a mapping of parameter names to tensors), it holds "
            f"{_summarise(loaded)}; save model.state_dict(), or a dict with it under 'state_dict' or 'model'"
        )
    state_dict = dict(loaded)
    for prefix in _SHARED_KEY_PREFIXES:
        if all(key.startswith(prefix) for key in state_dict):
            state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
    return state_dict


def _is_state_dict(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def _summarise(value: Any) -> str:
    if isinstance(value, Mapping):
        if not value:
            return "an empty dict"
        keys = [repr(k) for k in list(value)[:_SHOWN_KEYS]]
        more = ", ..." if len(value) > _SHOWN_KEYS else ""
        return f"a dict with {len(value)} entries ({', '.join(keys)}{more}) that are not all tensors"
    return f"a {type(value).__name__}"


def _check_matches(model: VGGT, shapes: Mapping[str, tuple[int, ...]], resolved: ResolvedCheckpoint) -> None:
    """Compare the checkpoint's tensor names and ``shapes`` with the model's before loading, to report every
    mismatch at once with the first few keys."""
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    missing = [name for name in expected if name not in shapes]
    unexpected = [name for name in shapes if name not in expected]
    wrong_shapes = [
        f"{name}: expected {list(shape)}, found {list(shapes[name])}"
        for name, shape in expected.items()
        if name in shapes and shapes[name] != shape
    ]
    problems = [
        f"{len(found)} {what if len(found) == 1 else plural} ({_first_few(found)})"
        for what, plural, found in (
            ("missing key", "missing keys", missing),
            ("unexpected key", "unexpected keys", unexpected),
            ("tensor with a wrong shape", "tensors with wrong shapes", wrong_shapes),
        )
        if found
    ]
    if problems:
        architecture = f"the architecture of {resolved.config}" if resolved.config else "VGGT-1B's architecture"
        raise CheckpointError(
            f"{_name(resolved)} does not match {architecture}: "
            f"{'; '.join(problems)}. Use a VGGT checkpoint, with a config.json beside it when it is not VGGT-1B"
        )


def _name(resolved: ResolvedCheckpoint) -> str:
    if resolved.repo_id is None:
        return f"checkpoint {resolved.weights}"
    return f"checkpoint {resolved.weights} of {resolved.repo_id}"


def _first_few(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN_KEYS])
    return shown + (", ..." if len(items) > _SHOWN_KEYS else "")


def _unpickler_detail(exc: pickle.UnpicklingError) -> str:
    """The specific reason in torch's weights-only refusal (a forbidden class or function, or bytes that are no
    pickle), without torch's advice around it: that advice is to load with ``weights_only=False``, which would
    run whatever the file holds."""
    marker = "WeightsUnpickler error:"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    marked = [i for i, line in enumerate(lines) if marker in line]
    if marked:
        after = [lines[marked[0]].split(marker, 1)[1].strip(), *lines[marked[0] + 1:]]
        candidates = [line for line in after if line]
    else:
        candidates = [line for line in lines if "GLOBAL" in line or line.startswith("Unsupported")]
    return candidates[0].split(". ")[0].rstrip(".") if candidates else "not a plain pickle of tensors"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _config_beside(folder: Path) -> Path | None:
    config = folder / CONFIG_FILE
    return config if config.is_file() else None


def _resolve_folder(text: str, folder: Path) -> ResolvedCheckpoint:
    for name in REPO_WEIGHT_FILES:
        weights = folder / name
        if weights.is_file():
            return ResolvedCheckpoint(text, weights, _config_beside(folder))
    raise CheckpointError(
        f"folder {folder} holds neither {' nor '.join(REPO_WEIGHT_FILES)}; put the weights there under one of "
        f"these names, or {_SOURCES_HELP}"
    )


def _hub_reachable() -> bool:
    """Whether a connection to the hub's host opens within HUB_PROBE_TIMEOUT_S.

    Without this, a machine with no network waits through huggingface_hub's five retries (about 25 seconds,
    each one logged) before the cache is consulted. Behind a proxy a direct connection says nothing, so the
    hub is then assumed reachable and huggingface_hub decides.
    """
    if hub_constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    endpoint = urllib.parse.urlsplit(hub_constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


@contextmanager
def _quiet_hub() -> Iterator[None]:
    """huggingface_hub logs every retry (and its handler and ours print each one twice); its failures reach the
    user as one CheckpointError instead."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def _resolve_hub(repo_id: str) -> ResolvedCheckpoint:
    with _quiet_hub():
        return _resolve_hub_files(repo_id, cache_only=not _hub_reachable())


def _resolve_hub_files(repo_id: str, cache_only: bool) -> ResolvedCheckpoint:
    # Once the hub has proved unreachable, later files come from the cache only.
    for name in REPO_WEIGHT_FILES:
        try:
            weights = Path(_hub_file(repo_id, name, cache_only))
        except LocalEntryNotFoundError:
            cache_only = True
            continue
        except EntryNotFoundError:
            continue
        try:
            config = Path(_hub_file(repo_id, CONFIG_FILE, cache_only))
        except EntryNotFoundError:
            logger.info("%s has no %s (or it is not cached): using VGGT-1B's architecture", repo_id, CONFIG_FILE)
            config = None
        # The hub cache keeps each commit's files in snapshots/<commit hash>/.
        return ResolvedCheckpoint(repo_id, weights, config, repo_id=repo_id, revision=weights.parent.name)
    if cache_only:
        mode = "HF_HUB_OFFLINE is set" if hub_constants.HF_HUB_OFFLINE else "the hub could not be reached"
        raise CheckpointError(
            f"the weights of {repo_id} are not in the Hugging Face cache ({hub_constants.HF_HUB_CACHE}) and {mode}. "
            f"Download them where there is network (`hf download {repo_id}`, with the same HF_HOME / HF_HUB_CACHE), "
            "or pass a local checkpoint with --checkpoint PATH"
        )
    raise CheckpointError(
        f"the Hugging Face repository {repo_id} holds neither {' nor '.join(REPO_WEIGHT_FILES)}; "
        "pass a local checkpoint with --checkpoint PATH"
    )


def _hub_file(repo_id: str, filename: str, cache_only: bool) -> str:
    """``hf_hub_download`` with its failures other than a missing file turned into ``CheckpointError``."""
    try:
        return hf_hub_download(repo_id, filename, local_files_only=cache_only)
    except EntryNotFoundError:
        raise
    except GatedRepoError as exc:
        raise CheckpointError(
            f"{repo_id} is a gated repository: accept its license at https://huggingface.co/{repo_id} and log in "
            "(`hf auth login` or HF_TOKEN), or pass a local checkpoint with --checkpoint PATH"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise CheckpointError(
            f"{repo_id} is not a model on the Hugging Face hub (nor an existing local path); check the id "
            f"(default {DEFAULT_MODEL_ID}) or pass a local checkpoint with --checkpoint PATH"
        ) from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot fetch {filename} of {repo_id} from the Hugging Face hub ({_first_line(exc)}); "
            "retry, or pass a local checkpoint with --checkpoint PATH"
        ) from exc
