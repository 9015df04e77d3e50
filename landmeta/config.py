"""Typed run configuration: YAML files <-> dataclasses, with `--set section.key=value` overrides.

A config file may start with `extends: other.yaml` (resolved beside it) to inherit and override
another. Unknown keys and wrong types raise ConfigError naming the key and the file.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from landmeta.errors import ConfigError
from landmeta.vocab import HEAD, TaskKind, TrainMethod

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class DataConfig:
    """What the model sees of the chip store."""

    bands: list[str] | None = None  # band names to use; None = all bands of the store
    chip_size: int | None = None  # resize chips to this size; None = the store's size
    augment: bool = True  # flips and 90-degree rotations on support/query chips
    photometric: float = 0.0  # with augment: brightness, contrast and per-band shifts of this strength
    crop_scale: float = 1.0  # with augment: random square crops of this to 1 times the side, resized back


@dataclass
class TaskConfig:
    """How few-shot tasks are drawn."""

    kind: TaskKind = "classification"
    n_way: int = 4  # classification only
    k_shot: int = 2  # support samples per class (classification) or support tiles (segmentation)
    q_query: int = 4  # query samples per class (classification) or query tiles (segmentation)
    val_tasks: int = 32  # size of the saved meta-val task list
    test_tasks: int = 200  # size of the saved meta-test task list


@dataclass
class ModelConfig:
    """Model architecture, chosen by name."""

    name: str = "conv"  # conv (paper classifier), smp-classifier, unet
    width: int = 64  # conv: channels per block
    depth: int = 4  # conv: number of blocks
    encoder: str = "resnet18"  # smp encoder for smp-classifier and unet
    encoder_depth: int = 3
    decoder_channels: list[int] = field(default_factory=lambda: [64, 32, 16])
    norm: Literal["batch", "group", "instance", "none"] = "batch"
    encoder_weights: str | None = None  # path to local weights; never a hub download


@dataclass
class MetaConfig:
    """The meta-learning method and its inner and outer loops."""

    method: TrainMethod = "maml"
    inner_steps: int = 1
    inner_lr: float = 0.4
    inner_lr_mode: Literal["fixed", "lslr", "metasgd"] = "fixed"
    test_inner_steps: int = 5  # adaptation steps at validation and test time
    first_order: bool = False
    first_order_until: int = 0  # MAML++ annealing: first order for the first N outer steps
    multi_step_loss: bool = False
    multi_step_anneal: int = 100  # outer steps over which multi-step weights anneal to the last step
    meta_batch: int = 4
    outer_lr: float = 1e-3
    grad_clip: float = 10.0
    steps: int = 200
    head_pattern: str = HEAD  # first name component of the head (also matches smp's segmentation_head)
    class_head: Literal["task", "global"] = "task"  # classification: N task-local outputs, or one per
    # store class with each task using its classes' rows (the class identities carry over regions)
    per_step_bn: bool = False  # MAML++: BatchNorm running statistics kept per inner step (meta/maml.py)
    keep_norm_stats: bool = False  # BatchNorm running statistics stay the starting network's (e.g. pretrained)


@dataclass
class TrainConfig:
    """Logging, validation, checkpoints and pretraining batches."""

    val_every: int = 50
    ckpt_every: int = 50
    early_stop_patience: int = 0  # validations without improvement; 0 = never stop early
    batch_size: int = 32  # pretraining batch size
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = False  # bf16 autocast on CUDA; pretraining and first-order methods only
    compile: bool = False  # torch.compile the model for pretraining
    init_from: str | None = None  # checkpoint whose weights start the run (e.g. MAML from pretraining)
    workers: int = 0  # DataLoader processes making the next steps' tasks ahead; 0 = in the training process


@dataclass
class EvalConfig:
    """Held-out evaluation: shots, the fine-tuning grid tuned on meta-val tasks, baselines, workers."""

    shots: list[int] = field(default_factory=lambda: [0, 1, 2, 5])
    finetune_steps: list[int] = field(default_factory=lambda: [10, 50])  # grid for pretrain and random init
    finetune_lrs: list[float] = field(default_factory=lambda: [1e-3, 1e-2])
    finetune_layers: list[Literal["all", "head"]] = field(default_factory=lambda: ["all", "head"])
    adapt_steps: list[int] | None = None  # MAML-family test-time steps tried on meta-val; None = meta.test_inner_steps
    norm_stats: Literal["support", "trained", "blend"] = "support"  # BatchNorm statistics after adaptation
    rf_trees: int = 100  # random-forest baseline
    rf_max_pixels: int = 20000  # support pixels sampled per segmentation task for the random forest
    examples: int = 2  # tasks saved as qualitative examples for the report
    bootstrap: int = 10000  # paired-bootstrap resamples
    workers: int = 1


@dataclass
class Config:
    """A whole run: data, tasks, model, method, training and evaluation."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass(frozen=True)
class Bound:
    """The allowed range of a number (or of each number in a list), and the fewest items of a list."""

    low: float | None = None
    high: float | None = None
    above: bool = False  # the low end is excluded: > low rather than >= low
    min_items: int = 0

    def describe(self) -> str:
        """The range in words, e.g. '>= 1', '> 0', 'in [1, 5]'."""
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.above else '['}{_num(self.low)}, {_num(self.high)}]"
        if self.low is not None:
            return f"{'>' if self.above else '>='} {_num(self.low)}"
        return f"<= {_num(self.high)}" if self.high is not None else "a number"

    def violation(self, value: float) -> str | None:
        """None when `value` is in range, else 'must be <range>, got <value>'."""
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number {self.describe()}, got {value!r}"
        bad = (self.low is not None and (value <= self.low if self.above else value < self.low)
               or self.high is not None and value > self.high)
        return f"must be {self.describe()}, got {value!r}" if bad else None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


POSITIVE = Bound(0, above=True)
NON_NEGATIVE = Bound(0)
AT_LEAST_ONE = Bound(1)
SEED = Bound(0, 2**32 - 1)  # what numpy's seeding accepts

# The range of every numeric option, by dotted key; lists are checked item by item. Cross-option
# limits that need the data (n_way <= the store's classes, meta_batch per process) are checked where used.
BOUNDS: dict[str, Bound] = {
    "seed": SEED,
    "data.chip_size": AT_LEAST_ONE,
    "data.photometric": Bound(0, 1),
    "data.crop_scale": Bound(0, 1, above=True),
    "task.n_way": Bound(2),
    "task.k_shot": AT_LEAST_ONE,
    "task.q_query": AT_LEAST_ONE,
    "task.val_tasks": AT_LEAST_ONE,
    "task.test_tasks": AT_LEAST_ONE,
    "model.width": AT_LEAST_ONE,
    "model.depth": AT_LEAST_ONE,
    "model.encoder_depth": Bound(1, 5),
    "model.decoder_channels": Bound(1, min_items=1),
    "meta.inner_steps": NON_NEGATIVE,
    "meta.inner_lr": POSITIVE,
    "meta.test_inner_steps": NON_NEGATIVE,
    "meta.first_order_until": NON_NEGATIVE,
    "meta.multi_step_anneal": NON_NEGATIVE,
    "meta.meta_batch": AT_LEAST_ONE,
    "meta.outer_lr": NON_NEGATIVE,  # 0 keeps the weights (e.g. to check an init_from run)
    "meta.grad_clip": POSITIVE,
    "meta.steps": AT_LEAST_ONE,
    "train.val_every": AT_LEAST_ONE,
    "train.ckpt_every": AT_LEAST_ONE,
    "train.early_stop_patience": NON_NEGATIVE,
    "train.batch_size": AT_LEAST_ONE,
    "train.workers": NON_NEGATIVE,
    "eval.shots": Bound(0, min_items=1),
    "eval.finetune_steps": Bound(0, min_items=1),
    "eval.finetune_lrs": Bound(0, above=True, min_items=1),
    "eval.finetune_layers": Bound(min_items=1),
    "eval.adapt_steps": NON_NEGATIVE,
    "eval.rf_trees": AT_LEAST_ONE,
    "eval.rf_max_pixels": AT_LEAST_ONE,
    "eval.examples": NON_NEGATIVE,
    "eval.bootstrap": AT_LEAST_ONE,
    "eval.workers": AT_LEAST_ONE,
}


def check_bound(key: str, value: Any, source: str) -> Any:
    """`value` if it is within BOUNDS[key] (each item of a list), else ConfigError naming key, range and value."""
    bound = BOUNDS.get(key)
    if bound is None or value is None:
        return value
    if isinstance(value, list):
        if len(value) < bound.min_items:
            raise ConfigError(f"{source}: {key} needs at least {bound.min_items} value(s), got {value!r}")
        items = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
    else:
        items = [(key, value)]
    for name, item in items:
        problem = bound.violation(item) if isinstance(item, (int, float)) and not isinstance(item, bool) else None
        if problem:
            raise ConfigError(f"{source}: {name} {problem}")
    return value


def resolve_config_path(name: str | Path) -> Path:
    """A path as given, or a bare name looked up in the shipped configs/ folder."""
    path = Path(name)
    if path.exists():
        return path
    for candidate in (CONFIG_DIR / path.name, CONFIG_DIR / f"{path.name}.yaml"):
        if candidate.exists():
            return candidate
    raise ConfigError(f"{name}: config file not found (nor in {CONFIG_DIR})")


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping, following `extends:` chains (deep-merged, child wins)."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' forms a cycle")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    base = _read_yaml(resolve_config_path(path.parent / parent if not Path(parent).is_absolute() else parent),
                      seen + (path.resolve(),))
    return _deep_merge(base, raw)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check `value` against a type hint, converting int->float; raise ConfigError on mismatch."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError:
                continue
        raise ConfigError(f"{source}: {key}: expected {_hint_name(hint)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: {key}: expected one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key}: expected a mapping, got {value!r}")
        return _build(hint, value, source, prefix=f"{key}.")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 2e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{source}: {key}: expected true or false, got {value!r}")
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{source}: {key}: expected an integer, got {value!r}")
    if not isinstance(value, hint):
        raise ConfigError(f"{source}: {key}: expected {_hint_name(hint)}, got {value!r}")
    return value


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _build(cls: type, values: dict[str, Any], source: str, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            raise ConfigError(f"{source}: unknown key '{prefix}{key}' (known: {', '.join(sorted(names))})")
    kwargs = {k: check_bound(prefix + k, _coerce(v, hints[k], prefix + k, source), source) for k, v in values.items()}
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`section.key=value` -> (['section', 'key'], value parsed as YAML scalar/list)."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text}: value is not valid YAML") from exc
    return key.strip().split("."), value


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Load a config file (or the defaults) and apply `--set` overrides, checking every key."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        resolved = resolve_config_path(path)
        raw = _read_yaml(resolved)
        source = str(resolved)
    return apply_overrides(_build(Config, raw, source), overrides)


def apply_overrides(config: Config, overrides: Iterable[str]) -> Config:
    """A copy of `config` with `--set section.key=value` overrides applied, each key and value checked."""
    config = copy.deepcopy(config)
    for text in overrides:
        keys, value = parse_override(text)
        _apply(config, keys, value, f"--set {text}")
    return config


def _apply(obj: Any, keys: list[str], value: Any, source: str) -> None:
    for depth, key in enumerate(keys):
        names = {f.name for f in dataclasses.fields(obj)}
        dotted = ".".join(keys[: depth + 1])
        if key not in names:
            raise ConfigError(f"{source}: unknown key '{dotted}'")
        if depth == len(keys) - 1:
            hint = typing.get_type_hints(type(obj))[key]
            setattr(obj, key, check_bound(dotted, _coerce(value, hint, dotted, source), source))
            return
        obj = getattr(obj, key)
        if not dataclasses.is_dataclass(obj):
            raise ConfigError(f"{source}: '{dotted}' is not a section")


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as nested plain dicts (YAML, checkpoints)."""
    return dataclasses.asdict(config)


def config_from_dict(values: dict[str, Any], source: str = "checkpoint") -> Config:
    """A config from nested dicts, every key and value checked (`source` names them in errors)."""
    return _build(Config, values, source)


def dump_config(config: Config) -> str:
    """The config as YAML, in field order."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
