"""Architecture hyperparameters of VGGT in one dataclass.

The defaults are VGGT-1B (facebook/VGGT-1B). ``VGGTConfig.from_json`` reads either a construction recipe (the
list of official constructor calls and their arguments that describes a reduced official model, as the parity
tests' models in ``tests/fixtures`` store it) or a flat ``config.json`` as the Hugging Face hub mixin writes it
(the top-level constructor's keyword arguments). docs/model.md, section 3.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PATCH_EMBED_KINDS = ("dinov2", "conv")
# The official aggregator's named DINOv2 backbones (with registers): embed_dim, depth, heads. ViT-g is left out:
# its SwiGLU feed-forward is not implemented here.
DINO_VARIANTS = {
    "dinov2_vits14_reg": (384, 12, 6),
    "dinov2_vitb14_reg": (768, 12, 12),
    "dinov2_vitl14_reg": (1024, 24, 16),
}


class ConfigError(ValueError):
    """A configuration file that cannot describe a VGGT model this package can build."""


@dataclass(frozen=True)
class VGGTConfig:
    """Every architectural hyperparameter of VGGT; the defaults build VGGT-1B.

    Heads read the aggregator output, whose width is ``2 * embed_dim`` (frame and global tokens concatenated).
    """

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024

    # Patch embedding: "conv" (one strided convolution) or "dinov2", a DINOv2 ViT with registers (VGGT-1B's is
    # ViT-L/14: the defaults below).
    patch_embed: str = "dinov2"
    patch_embed_depth: int = 24
    patch_embed_num_heads: int = 16
    patch_embed_mlp_ratio: float = 4.0
    patch_embed_num_register_tokens: int = 4

    # Aggregator: alternating frame / global attention.
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    qk_norm: bool = True
    rope_freq: float = 100.0  # <= 0: no RoPE

    # Camera head.
    enable_camera: bool = True
    camera_trunk_depth: int = 4
    camera_num_heads: int = 16
    camera_mlp_ratio: float = 4.0
    camera_iterations: int = 4

    # Depth and point heads (DPT), each with its own feature width, projection widths and aggregator layers.
    enable_depth: bool = True
    depth_features: int = 256
    depth_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    depth_layers: tuple[int, int, int, int] = (4, 11, 17, 23)
    enable_point: bool = True
    point_features: int = 256
    point_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    point_layers: tuple[int, int, int, int] = (4, 11, 17, 23)

    # Track head: a feature-only DPT plus the iterative tracker.
    enable_track: bool = True
    track_features: int = 128
    track_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    track_layers: tuple[int, int, int, int] = (4, 11, 17, 23)
    track_iters: int = 4
    track_stride: int = 2
    track_corr_levels: int = 7
    track_corr_radius: int = 4
    track_hidden_size: int = 384
    track_depth: int = 6
    track_num_heads: int = 8
    track_num_virtual_tracks: int = 64
    track_mlp_ratio: float = 4.0
    track_max_scale: int = 518

    def __post_init__(self) -> None:
        if self.patch_embed not in PATCH_EMBED_KINDS:
            raise ConfigError(f"patch_embed must be one of {PATCH_EMBED_KINDS}, got {self.patch_embed!r}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        for head in ("depth", "point", "track"):
            layers = getattr(self, f"{head}_layers")
            if getattr(self, f"enable_{head}") and any(not 0 <= i < self.depth for i in layers):
                raise ConfigError(f"{head}_layers {layers} must index aggregator layers 0..{self.depth - 1}")

    @property
    def head_dim_in(self) -> int:
        """Width of the aggregator output that every head reads."""
        return 2 * self.embed_dim

    @property
    def patch_start_idx(self) -> int:
        """Tokens before the patch tokens in every frame: one camera token plus the register tokens."""
        return 1 + self.num_register_tokens

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "VGGTConfig":
        """Build from this dataclass's own field names (as ``to_dict`` writes); unknown names are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown VGGTConfig fields: {unknown}")
        tuple_fields = {f.name for f in dataclasses.fields(cls) if str(f.type).startswith("tuple")}
        return cls(**{k: tuple(v) if k in tuple_fields else v for k, v in values.items()})

    @classmethod
    def from_json(cls, path: str | Path) -> "VGGTConfig":
        """Read a construction recipe (parity ``config.json``), a hub ``config.json`` or ``to_dict`` output."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read model config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"model config {path} must hold a JSON object")
        try:
            if "construction_steps" in data:
                return _from_recipe(data["construction_steps"])
            # A hub config.json holds the top-level constructor's arguments (img_size, patch_size, embed_dim,
            # enable_*), all of which are fields here too; everything else keeps VGGT-1B's value.
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"model config {path}: {exc}") from exc


def _expect(kwargs: dict[str, Any], key: str, allowed: tuple[Any, ...], where: str) -> None:
    if key in kwargs and kwargs[key] not in allowed:
        raise ConfigError(f"{where}: {key}={kwargs[key]!r} is not supported (supported: {allowed})")


def _from_recipe(steps: list[dict[str, Any]]) -> VGGTConfig:
    """Translate the official constructor calls of a parity recipe into one ``VGGTConfig``."""
    by_target = {step["target"]: step for step in steps}
    top = by_target.get("model")
    if top is None:
        raise ConfigError("recipe has no step that constructs 'model'")
    top_kwargs = top.get("kwargs", {})
    values: dict[str, Any] = {
        "img_size": top_kwargs.get("img_size", 518),
        "patch_size": top_kwargs.get("patch_size", 14),
        "embed_dim": top_kwargs.get("embed_dim", 1024),
    }
    for head in ("camera", "point", "depth", "track"):
        values[f"enable_{head}"] = bool(top_kwargs.get(f"enable_{head}", True)) or f"model.{head}_head" in by_target

    agg = by_target.get("model.aggregator", {}).get("kwargs", {})
    if agg:
        where = "model.aggregator"
        _expect(agg, "aa_order", (["frame", "global"],), where)
        _expect(agg, "aa_block_size", (1,), where)
        for flag in ("qkv_bias", "proj_bias", "ffn_bias"):
            _expect(agg, flag, (True,), where)
        values.update(
            embed_dim=agg.get("embed_dim", values["embed_dim"]),
            img_size=agg.get("img_size", values["img_size"]),
            patch_size=agg.get("patch_size", values["patch_size"]),
            depth=agg.get("depth", 24),
            num_heads=agg.get("num_heads", 16),
            mlp_ratio=float(agg.get("mlp_ratio", 4.0)),
            num_register_tokens=agg.get("num_register_tokens", 4),
            qk_norm=bool(agg.get("qk_norm", True)),
            rope_freq=float(agg.get("rope_freq", 100)),
        )
        values.update(_patch_embed_settings(agg.get("patch_embed", "dinov2_vitl14_reg"), values["embed_dim"]))
        # cached_layer_indices needs no field: the aggregator keeps exactly the layers the requested heads read.

    dino = by_target.get("model.aggregator.patch_embed")
    if dino is not None:
        kw = dino.get("kwargs", {})
        where = "model.aggregator.patch_embed"
        _expect(kw, "ffn_layer", ("mlp",), where)
        _expect(kw, "interpolate_antialias", (True,), where)
        _expect(kw, "interpolate_offset", (0.0, 0), where)
        _expect(kw, "qk_norm", (False,), where)
        if kw.get("embed_dim", values["embed_dim"]) != values["embed_dim"]:
            raise ConfigError(f"{where}: embed_dim must equal the aggregator's ({values['embed_dim']})")
        values.update(
            patch_embed="dinov2",
            patch_embed_depth=kw.get("depth", 24),
            patch_embed_num_heads=kw.get("num_heads", 16),
            patch_embed_mlp_ratio=float(kw.get("mlp_ratio", 4.0)),
            patch_embed_num_register_tokens=kw.get("num_register_tokens", 4),
        )

    dim_in = 2 * values["embed_dim"]
    cam = by_target.get("model.camera_head")
    if cam is not None:
        kw = cam.get("kwargs", {})
        where = "model.camera_head"
        _expect(kw, "pose_encoding_type", ("absT_quaR_FoV",), where)
        _expect(kw, "trans_act", ("linear",), where)
        _expect(kw, "quat_act", ("linear",), where)
        _expect(kw, "fl_act", ("relu",), where)
        _check_dim_in(kw, dim_in, where)
        values.update(
            camera_trunk_depth=kw.get("trunk_depth", 4),
            camera_num_heads=kw.get("num_heads", 16),
            camera_mlp_ratio=float(kw.get("mlp_ratio", 4.0)),
        )

    for head, activation, output_dim in (("point", "inv_log", 4), ("depth", "exp", 2)):
        step = by_target.get(f"model.{head}_head")
        if step is None:
            continue
        kw = step.get("kwargs", {})
        where = f"model.{head}_head"
        _expect(kw, "activation", (activation,), where)
        _expect(kw, "conf_activation", ("expp1",), where)
        _expect(kw, "output_dim", (output_dim,), where)
        _expect(kw, "pos_embed", (True,), where)
        _expect(kw, "feature_only", (False,), where)
        _expect(kw, "down_ratio", (1,), where)
        _check_dim_in(kw, dim_in, where)
        features, out_channels, layers = _dpt_settings(kw)
        values.update({f"{head}_features": features, f"{head}_out_channels": out_channels, f"{head}_layers": layers})

    track = by_target.get("model.track_head")
    if track is not None:
        kw = track.get("kwargs", {})
        where = "model.track_head"
        _expect(kw, "predict_conf", (True,), where)
        _check_dim_in(kw, dim_in, where)
        values.update(
            track_features=kw.get("features", 128),
            track_iters=kw.get("iters", 4),
            track_stride=kw.get("stride", 2),
            track_corr_levels=kw.get("corr_levels", 7),
            track_corr_radius=kw.get("corr_radius", 4),
            track_hidden_size=kw.get("hidden_size", 384),
        )
        extractor = by_target.get("model.track_head.feature_extractor")
        if extractor is not None:
            kw = extractor.get("kwargs", {})
            where = "model.track_head.feature_extractor"
            _expect(kw, "feature_only", (True,), where)
            _expect(kw, "pos_embed", (False,), where)
            _expect(kw, "down_ratio", (2,), where)
            _check_dim_in(kw, dim_in, where)
            features, out_channels, layers = _dpt_settings(kw)
            if features != values["track_features"]:
                raise ConfigError(
                    f"{where}: features {features} must equal the track head's {values['track_features']}"
                )
            values.update(track_out_channels=out_channels, track_layers=layers)
    return VGGTConfig(**values)


def _patch_embed_settings(name: str, embed_dim: int) -> dict[str, Any]:
    """Config fields for the aggregator's ``patch_embed`` argument: "conv" or a named DINOv2 backbone."""
    if name == "conv":
        return {"patch_embed": "conv"}
    if name not in DINO_VARIANTS:
        raise ConfigError(f"model.aggregator: patch_embed={name!r} is not supported (supported: conv, "
                          f"{', '.join(DINO_VARIANTS)})")
    width, depth, heads = DINO_VARIANTS[name]
    if width != embed_dim:
        raise ConfigError(f"model.aggregator: {name} is {width} wide but embed_dim is {embed_dim}")
    return {"patch_embed": "dinov2", "patch_embed_depth": depth, "patch_embed_num_heads": heads}


def _check_dim_in(kwargs: dict[str, Any], dim_in: int, where: str) -> None:
    if kwargs.get("dim_in", dim_in) != dim_in:
        raise ConfigError(f"{where}: dim_in {kwargs['dim_in']} must be 2 * embed_dim = {dim_in}")


def _dpt_settings(kwargs: dict[str, Any]) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    return (
        kwargs.get("features", 256),
        tuple(kwargs.get("out_channels", (256, 512, 1024, 1024))),
        tuple(kwargs.get("intermediate_layer_idx", (4, 11, 17, 23))),
    )
