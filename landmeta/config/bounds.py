"""The allowed range of every numeric config value (`BOUNDS`), checked when a config is read and by
the CLI's numeric options."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from landmeta.errors import ConfigError


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
