"""Out-of-range numbers in configs and CLI options, odd output paths, damaged result rows, odd names."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from landmeta.config import BOUNDS, Config, load_config
from landmeta.errors import ConfigError


def _numeric_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Dotted keys of every field holding a number or a list of numbers (optional or not)."""
    keys = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            keys += _numeric_keys(hint, f"{prefix}{f.name}.")
            continue
        flat = str(hint)
        if any(t in flat for t in ("int", "float")) or hint in (int, float):
            keys.append(prefix + f.name)
    return keys


def test_every_numeric_config_value_has_a_bound():
    numeric = set(_numeric_keys())
    assert numeric and numeric <= set(BOUNDS), sorted(numeric - set(BOUNDS))
    known = set(_numeric_keys()) | {"eval.finetune_layers"}
    assert set(BOUNDS) <= known, sorted(set(BOUNDS) - known)


@pytest.mark.parametrize("override, message", [
    ("meta.meta_batch=-2", "meta.meta_batch must be >= 1, got -2"),
    ("meta.outer_lr=-1", "meta.outer_lr must be > 0, got -1.0"),
    ("meta.inner_lr=-0.4", "meta.inner_lr must be > 0, got -0.4"),
    ("meta.inner_lr=.nan", "meta.inner_lr must be a finite number > 0, got nan"),
    ("meta.grad_clip=0", "meta.grad_clip must be > 0, got 0.0"),
    ("meta.steps=0", "meta.steps must be >= 1, got 0"),
    ("train.val_every=-5", "train.val_every must be >= 1, got -5"),
    ("train.workers=-1", "train.workers must be >= 0, got -1"),
    ("task.n_way=1", "task.n_way must be >= 2, got 1"),
    ("model.encoder_depth=9", "model.encoder_depth must be in [1, 5], got 9"),
    ("eval.finetune_steps=[10, -3]", "eval.finetune_steps[1] must be >= 0, got -3"),
    ("eval.finetune_lrs=[]", "eval.finetune_lrs needs at least 1 value(s), got []"),
    ("eval.bootstrap=0", "eval.bootstrap must be >= 1, got 0"),
    ("seed=-1", "seed must be in [0, 4294967295], got -1"),
])
def test_out_of_range_override_names_key_bound_and_value(override, message):
    with pytest.raises(ConfigError) as info:
        load_config("tiny", [override])
    assert str(info.value) == f"--set {override}: {message}"


def test_out_of_range_value_in_a_file_names_the_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("meta:\n  inner_lr: -0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: meta\.inner_lr must be > 0, got -0\.1"):
        load_config(bad)


def test_edge_values_are_accepted():
    cfg = load_config("tiny", ["meta.inner_steps=0", "eval.finetune_steps=[0]", "eval.adapt_steps=null",
                               "train.early_stop_patience=0", "eval.examples=0", "seed=4294967295"])
    assert cfg.meta.inner_steps == 0 and cfg.eval.finetune_steps == [0] and cfg.seed == 2**32 - 1
