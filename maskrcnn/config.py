"""The one config tree: reference R50-FPN 1x COCO defaults, named presets, KEY=VALUE overrides.

Sections are frozen dataclasses, so the tree cannot be mutated after it is built and a typo in a
key is an error, never a silently ignored setting (the tensorpack habit). Overrides are parsed with
the type of the default value (never ``eval``). ``finalize`` derives the values that depend on the
number of training processes in one place and returns a new tree.

Units: sizes in pixels of the resized image, LR per image (multiplied by the global batch),
schedules in epochs of the training set (converted to steps by ``finalize``).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping, Sequence

import yaml

from maskrcnn.errors import UserError


@dataclass(frozen=True)
class BackboneConfig:
    DEPTH: int = 50                      # ResNet depth: 50 or 101 (ignored when BLOCKS is set)
    BLOCKS: tuple[int, ...] = ()         # bottleneck blocks per stage; () = standard for DEPTH
    WIDTH: int = 64                      # channels of the stem; stage i has WIDTH * 2**i bottleneck channels
    FREEZE_AT: int = 2                   # 0: train all, 1: freeze stem, 2: stem + res2 (reference)
    NORM: str = "FreezeBN"               # FreezeBN (reference) or None (no normalization, tiny models)
    WEIGHTS: str = ""                    # .npz (tensorpack) or TF checkpoint; "none" = random init on purpose


@dataclass(frozen=True)
class PreprocConfig:
    SHORT_SIZE: int = 800                # resize so the short side is this ...
    MAX_SIZE: int = 1333                 # ... unless the long side would exceed this
    PAD_SIZE: tuple[int, int] = (1344, 1344)  # fixed padded (height, width) so images batch; multiple of 64
    PIXEL_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)  # RGB, 0-255
    PIXEL_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)
    HFLIP_PROB: float = 0.5
    MAX_INSTANCES: int = 100             # ground-truth instances kept per image (padded to this)
    GT_MASK_SIZE: int = 112              # gt masks are cropped to their box and resized to NxN: full-image
                                         # masks would cost batch x instances x H x W memory (Model Garden does the same)


@dataclass(frozen=True)
class FPNConfig:
    CHANNELS: int = 256
    MIN_LEVEL: int = 2                   # P2 ... P6
    MAX_LEVEL: int = 6


@dataclass(frozen=True)
class RPNConfig:
    ANCHOR_SIZES: tuple[int, ...] = (32, 64, 128, 256, 512)   # one size per level P2..P6
    ANCHOR_RATIOS: tuple[float, ...] = (0.5, 1.0, 2.0)
    POSITIVE_THRESH: float = 0.7
    NEGATIVE_THRESH: float = 0.3
    BATCH_PER_IMAGE: int = 256
    FG_RATIO: float = 0.5
    TRAIN_PRE_NMS_TOPK: int = 2000       # per level
    TRAIN_POST_NMS_TOPK: int = 1000      # per image, after merging levels
    TEST_PRE_NMS_TOPK: int = 1000
    TEST_POST_NMS_TOPK: int = 1000
    NMS_THRESH: float = 0.7
    MIN_BOX_SIZE: float = 0.0
    HEAD_CHANNELS: int = 256


@dataclass(frozen=True)
class FRCNNConfig:
    BATCH_PER_IMAGE: int = 512
    FG_RATIO: float = 0.25
    FG_THRESH: float = 0.5
    BBOX_REG_WEIGHTS: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    FC_DIM: int = 1024
    POOL_SIZE: int = 7


@dataclass(frozen=True)
class MRCNNConfig:
    HEAD_DIM: int = 256
    NUM_CONVS: int = 4
    POOL_SIZE: int = 14
    MASK_SIZE: int = 28                  # POOL_SIZE * 2 (one deconv)


@dataclass(frozen=True)
class TestConfig:
    SCORE_THRESH: float = 0.05
    NMS_THRESH: float = 0.5
    DETECTIONS_PER_IMAGE: int = 100
    MASK_THRESH: float = 0.5
    BATCH_SIZE: int = 4                  # images per inference call in evaluate


@dataclass(frozen=True)
class TrainConfig:
    BATCH_PER_GPU: int = 4               # images per replica (several per GPU through padding)
    BASE_LR_PER_IMAGE: float = 0.0025    # 0.02 for a global batch of 8 (Detectron 1x)
    WARMUP_STEPS: int = 1000
    WARMUP_FACTOR: float = 0.001         # LR at step 0 = WARMUP_FACTOR * LR
    EPOCHS: float = 12.0                 # 1x schedule: 12 epochs of train2017 (~90k steps at batch 16)
    LR_DECAY_EPOCHS: tuple[float, ...] = (8.0, 11.0)
    LR_DECAY_FACTOR: float = 0.1
    MAX_STEPS: int = 0                   # > 0 overrides the epoch schedule (tests, smoke runs)
    MOMENTUM: float = 0.9
    WEIGHT_DECAY: float = 1e-4
    GRAD_CLIP_NORM: float = 0.0          # 0 = off
    PRECISION: str = "float32"           # float32, mixed_float16 (loss scaling), mixed_bfloat16
    XLA: bool = False
    CHECKPOINT_EVERY: int = 1000         # steps
    CHECKPOINTS_KEPT: int = 3
    LOG_EVERY: int = 20                  # steps
    SEED: int = 42
    SHUFFLE_BUFFER: int = 512


@dataclass(frozen=True)
class Config:
    PRESET: str = "r50-fpn-1x"
    MODE_MASK: bool = True
    NUM_CLASSES: int = 80                # foreground classes; set from the data's class map at train time
    BACKBONE: BackboneConfig = field(default_factory=BackboneConfig)
    PREPROC: PreprocConfig = field(default_factory=PreprocConfig)
    FPN: FPNConfig = field(default_factory=FPNConfig)
    RPN: RPNConfig = field(default_factory=RPNConfig)
    FRCNN: FRCNNConfig = field(default_factory=FRCNNConfig)
    MRCNN: MRCNNConfig = field(default_factory=MRCNNConfig)
    TEST: TestConfig = field(default_factory=TestConfig)
    TRAIN: TrainConfig = field(default_factory=TrainConfig)


# Presets are override lists over the reference defaults, so each reads as "how it differs".
PRESETS: dict[str, Sequence[str]] = {
    "r50-fpn-1x": (),
    "r101-fpn-1x": ("BACKBONE.DEPTH=101",),
    # Small enough to train on 2 CPU cores in minutes: narrow 1-block-per-stage ResNet, no
    # normalization (no pretrained statistics to freeze), small images and heads.
    "tiny": (
        "BACKBONE.BLOCKS=1,1,1,1",
        "BACKBONE.WIDTH=16",
        "BACKBONE.FREEZE_AT=0",
        "BACKBONE.NORM=None",
        "BACKBONE.WEIGHTS=none",
        "PREPROC.SHORT_SIZE=128",
        "PREPROC.MAX_SIZE=192",
        "PREPROC.PAD_SIZE=192,192",
        "PREPROC.MAX_INSTANCES=16",
        "PREPROC.GT_MASK_SIZE=56",
        "FPN.CHANNELS=64",
        "RPN.ANCHOR_SIZES=16,32,64,128,256",
        "RPN.BATCH_PER_IMAGE=128",
        "RPN.TRAIN_PRE_NMS_TOPK=500",
        "RPN.TRAIN_POST_NMS_TOPK=200",
        "RPN.TEST_PRE_NMS_TOPK=300",
        "RPN.TEST_POST_NMS_TOPK=100",
        "RPN.HEAD_CHANNELS=64",
        "FRCNN.BATCH_PER_IMAGE=64",
        "FRCNN.FC_DIM=256",
        "MRCNN.HEAD_DIM=64",
        "MRCNN.NUM_CONVS=2",
        "TRAIN.BATCH_PER_GPU=4",
        "TRAIN.BASE_LR_PER_IMAGE=0.005",
        "TRAIN.WARMUP_STEPS=50",
        "TRAIN.WARMUP_FACTOR=0.1",
        "TRAIN.EPOCHS=30",
        "TRAIN.LR_DECAY_EPOCHS=20,27",
        "TRAIN.CHECKPOINT_EVERY=100",
        "TRAIN.LOG_EVERY=10",
        "TEST.BATCH_SIZE=8",
    ),
}

_CHOICES: dict[str, tuple[str, ...]] = {
    "BACKBONE.NORM": ("FreezeBN", "None"),
    "TRAIN.PRECISION": ("float32", "mixed_float16", "mixed_bfloat16"),
}


# ----------------------------------------------------------------------------- parsing


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _parse_scalar(key: str, text: str, typ: Any) -> Any:
    text = text.strip()
    try:
        if typ is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if typ is int:
            return int(text)
        if typ is float:
            return float(text)
        if typ is str:
            return text
    except ValueError:
        raise UserError(
            f"config {key}={text!r}: expected {typ.__name__}; "
            f"run `maskrcnn config show` to see every key with its type"
        ) from None
    raise UserError(f"config {key}: cannot be set from the command line")


def _parse_value(key: str, text: str, typ: Any) -> Any:
    if typing.get_origin(typ) is tuple:
        args = typing.get_args(typ)
        items = [s for s in text.replace("(", "").replace(")", "").split(",") if s.strip()]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_parse_scalar(key, s, args[0]) for s in items)
        if len(items) != len(args):
            raise UserError(
                f"config {key}={text!r}: expected {len(args)} comma-separated values, got {len(items)}"
            )
        return tuple(_parse_scalar(key, s, t) for s, t in zip(items, args))
    return _parse_scalar(key, text, typ)


def _check_value(key: str, value: Any, typ: Any) -> Any:
    """Coerce a value read from YAML/JSON to the field's type, or raise UserError."""
    if typing.get_origin(typ) is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config {key}: expected a list, got {value!r}")
        return _parse_value(key, ",".join(str(v) for v in value), typ)
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is bool and not isinstance(value, bool):
        raise UserError(f"config {key}: expected true/false, got {value!r}")
    if typ in (int, str) and (not isinstance(value, typ) or isinstance(value, bool)):
        raise UserError(f"config {key}: expected {typ.__name__}, got {value!r}")
    return value


def _validate(cfg: Config) -> Config:
    flat = flatten(cfg)
    for key, choices in _CHOICES.items():
        if flat[key] not in choices:
            raise UserError(f"config {key}={flat[key]!r}: must be one of {', '.join(choices)}")
    if not cfg.BACKBONE.BLOCKS and cfg.BACKBONE.DEPTH not in (50, 101):
        raise UserError(f"config BACKBONE.DEPTH={cfg.BACKBONE.DEPTH}: must be 50 or 101 (or set BACKBONE.BLOCKS)")
    levels = cfg.FPN.MAX_LEVEL - cfg.FPN.MIN_LEVEL + 1
    if len(cfg.RPN.ANCHOR_SIZES) != levels:
        raise UserError(
            f"config RPN.ANCHOR_SIZES has {len(cfg.RPN.ANCHOR_SIZES)} sizes but FPN has {levels} levels"
        )
    stride = 2 ** cfg.FPN.MAX_LEVEL
    if any(p % stride for p in cfg.PREPROC.PAD_SIZE):
        raise UserError(f"config PREPROC.PAD_SIZE={cfg.PREPROC.PAD_SIZE}: each side must be a multiple of {stride}")
    if cfg.PREPROC.MAX_SIZE > max(cfg.PREPROC.PAD_SIZE):
        raise UserError(
            f"config PREPROC.MAX_SIZE={cfg.PREPROC.MAX_SIZE} exceeds PREPROC.PAD_SIZE={cfg.PREPROC.PAD_SIZE}"
        )
    return cfg


# ----------------------------------------------------------------------------- public API


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"TRAIN.BASE_LR_PER_IMAGE": 0.0025, ...}`` for a config (or section)."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, key + "."))
        else:
            out[key] = value
    return out


def _set(cfg: Any, path: list[str], value_text: str | None, raw: Any, full_key: str) -> Any:
    types = _field_types(type(cfg))
    name = path[0]
    if name not in types:
        known = ", ".join(sorted(types))
        raise UserError(f"config: unknown key {full_key!r} (known at this level: {known})")
    current = getattr(cfg, name)
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise UserError(f"config: unknown key {full_key!r} ({name} has no sub-keys)")
        return replace(cfg, **{name: _set(current, path[1:], value_text, raw, full_key)})
    if dataclasses.is_dataclass(current):
        raise UserError(f"config: {full_key!r} is a section; set one of its keys, e.g. {full_key}.<KEY>=...")
    typ = types[name]
    new = _parse_value(full_key, value_text, typ) if value_text is not None else _check_value(full_key, raw, typ)
    return replace(cfg, **{name: new})


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """Apply ``KEY.SUB=VALUE`` strings in order; unknown keys and wrong types raise UserError."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"config override {item!r}: expected KEY=VALUE, e.g. TRAIN.BASE_LR_PER_IMAGE=0.01")
        key, value = item.split("=", 1)
        key = key.strip()
        cfg = _set(cfg, key.split("."), value, None, key)
    return _validate(cfg)


def from_dict(data: Mapping[str, Any], base: Config | None = None) -> Config:
    """Build a config from a nested dict (a saved ``config.yaml``), checking every key and type."""
    cfg = base or Config()

    def walk(d: Mapping[str, Any], prefix: list[str]) -> None:
        nonlocal cfg
        for k, v in d.items():
            if isinstance(v, Mapping):
                walk(v, prefix + [k])
            else:
                full = ".".join(prefix + [k])
                cfg = _set(cfg, prefix + [k], None, v, full)

    walk(data, [])
    return _validate(cfg)


def to_dict(cfg: Config) -> dict[str, Any]:
    def conv(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    def walk(obj: Any) -> dict[str, Any]:
        return {
            f.name: walk(getattr(obj, f.name)) if dataclasses.is_dataclass(getattr(obj, f.name))
            else conv(getattr(obj, f.name))
            for f in fields(obj)
        }

    return walk(cfg)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def load_yaml(path: str) -> Config:
    with open(path) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, Mapping):
        raise UserError(f"{path}: not a config file (expected a YAML mapping)")
    return from_dict(data)


def get_config(preset: str = "r50-fpn-1x", overrides: Sequence[str] = ()) -> Config:
    """The preset's config with the overrides applied."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    cfg = apply_overrides(Config(PRESET=preset), PRESETS[preset])
    return apply_overrides(cfg, overrides)


@dataclass(frozen=True)
class Schedule:
    """Step-based training schedule derived from the config and the number of processes."""

    world_size: int
    global_batch: int
    learning_rate: float       # peak LR = BASE_LR_PER_IMAGE * global_batch
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    decay_steps: tuple[int, ...]


def schedule(cfg: Config, world_size: int, num_train_images: int) -> Schedule:
    """The one place where the global batch and the LR it implies are computed.

    Adding nodes grows the global batch, so the peak LR grows with it and the epoch-based schedule
    shrinks in steps: the recipe (LR per image, epochs) stays the same.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if num_train_images < 1:
        raise UserError("the training set is empty: check the shards' manifest.json")
    global_batch = cfg.TRAIN.BATCH_PER_GPU * world_size
    steps_per_epoch = max(1, num_train_images // global_batch)
    if cfg.TRAIN.MAX_STEPS > 0:
        total = cfg.TRAIN.MAX_STEPS
        # Keep the decay points at the same fraction of training as the epoch schedule.
        decay = tuple(max(1, int(round(total * e / cfg.TRAIN.EPOCHS))) for e in cfg.TRAIN.LR_DECAY_EPOCHS)
    else:
        total = max(1, int(round(cfg.TRAIN.EPOCHS * steps_per_epoch)))
        decay = tuple(int(round(e * steps_per_epoch)) for e in cfg.TRAIN.LR_DECAY_EPOCHS)
    return Schedule(
        world_size=world_size,
        global_batch=global_batch,
        learning_rate=cfg.TRAIN.BASE_LR_PER_IMAGE * global_batch,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        warmup_steps=min(cfg.TRAIN.WARMUP_STEPS, total),
        decay_steps=decay,
    )
