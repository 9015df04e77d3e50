"""Exact resume: the random generators' state, the config changes a resumed run may make, and the
metrics rows it rewrites."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from landmeta.config import Config, config_to_dict
from landmeta.errors import CheckpointError
from landmeta.io import atomic_write_text
from landmeta.meta.checkpoint import Checkpoint
from landmeta.meta.progress import METRICS_FIELDS

RESUMABLE_CHANGES = ("train.", "meta.steps", "eval.")  # config keys a resumed run may change


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors and plain values (what a checkpoint may hold)."""
    name, keys, pos, has_gauss, gauss = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    return {"python": random.getstate(), "numpy": (name, keys.tolist(), pos, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore every generator from `rng_state()`'s record."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_resumable(ckpt: Checkpoint, config: Config) -> None:
    """CheckpointError if `config` differs from the run's in anything but train.*, eval.*, meta.steps
    (options added since the run was made count with their defaults)."""
    old = _flatten(config_to_dict(ckpt.config))
    new = _flatten(config_to_dict(config))
    changed = [k for k in sorted(set(old) | set(new))
               if old.get(k) != new.get(k) and not k.startswith(RESUMABLE_CHANGES)]
    if changed:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:3])
        raise CheckpointError(f"{ckpt.where}: the run was made with another config ({shown})")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def step_of(path: Path) -> int | str:
    """The step of a checkpoint file, or 'unreadable' (for messages)."""
    try:
        return Checkpoint.load(path).step
    except CheckpointError:
        return "unreadable"


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the metrics rows up to `step` (a resumed run rewrites the later ones)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= step]
    lines = [",".join(METRICS_FIELDS)] + [",".join(r[f] for f in METRICS_FIELDS) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")
