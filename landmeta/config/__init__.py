"""Typed run configuration: YAML files <-> dataclasses, with `--set section.key=value` overrides.

The sections and defaults are in `schema.py`, the range of every number in `bounds.py`; this module
reads, merges, checks and writes configs.

A config file may start with `extends: other.yaml` (resolved beside it) to inherit and override
another. Unknown keys and wrong types raise ConfigError naming the key and the file.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml

from landmeta.config.bounds import AT_LEAST_ONE, BOUNDS, NON_NEGATIVE, POSITIVE, SEED, Bound, check_bound
from landmeta.config.schema import Config, DataConfig, EvalConfig, MetaConfig, ModelConfig, TaskConfig, TrainConfig
from landmeta.errors import ConfigError

__all__ = ["AT_LEAST_ONE", "BOUNDS", "CONFIG_DIR", "NON_NEGATIVE", "POSITIVE", "SEED", "Bound", "Config", "DataConfig",
           "EvalConfig", "MetaConfig", "ModelConfig", "TaskConfig", "TrainConfig", "apply_overrides", "check_bound",
           "config_from_dict", "config_to_dict", "dump_config", "load_config", "parse_override",
           "resolve_config_path"]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


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
