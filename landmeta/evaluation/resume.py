"""Resuming an evaluation: which results folder may be continued, and with which tuned settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from landmeta.config import EvalConfig
from landmeta.errors import DataError, OutputExistsError
from landmeta.evaluation.results import read_meta

RESUME_KEYS = ("kind", "store", "split", "tasks", "n_way", "q_query")  # meta.json entries a resumed run must share


def resume_or_start(out: Path, meta: dict[str, Any], overwrite: bool,
                     keys: tuple[str, ...] = RESUME_KEYS) -> dict[str, Any]:
    """Tuned hyperparameters of a resumable run in `out` ({} for a fresh start); DataError if `out`
    holds results of other data, split, task lists or methods (`keys` of meta.json)."""
    if overwrite:
        for name in ("results.csv", "summary.csv", "tests.csv", "choice.csv", "examples.npz", "meta.json"):
            (out / name).unlink(missing_ok=True)
        return {}
    if not (out / "meta.json").exists():
        if any(out.iterdir()):
            raise OutputExistsError(f"{out}: not empty and not an evaluation's results folder (no meta.json); "
                                    "choose another --out or pass --overwrite")
        return {}
    old = read_meta(out / "meta.json")
    for key in keys:
        before, now = old.get(key), meta[key]
        if before != now:
            if isinstance(before, dict) and isinstance(now, dict):  # name the entry that differs
                entry = next(k for k in {**before, **now} if before.get(k) != now.get(k))
                key, before, now = f"{key}.{entry}", before.get(entry), now.get(entry)
            raise DataError(f"{out / 'meta.json'}: results of another evaluation ({key} {before!r}, "
                            f"now {now!r}); choose another --out or pass --overwrite")
    for name, info in meta["methods"].items():
        before = old.get("methods", {}).get(name)
        if before is not None and before.get("checkpoint") != info.get("checkpoint"):
            raise DataError(f"{out / 'meta.json'}: method {name} was evaluated from {before.get('checkpoint')}, "
                            f"now {info.get('checkpoint')}; choose another --out or pass --overwrite")
    if _eval_settings(old.get("config", {}).get("eval")) != meta["config"]["eval"] or old.get("seeds") != meta["seeds"]:
        raise DataError(f"{out / 'meta.json'}: written with other eval settings or seeds; choose another --out "
                        "or pass --overwrite")
    return old.get("tuned", {})


def _eval_settings(before: Any) -> Any:
    """Eval settings of an earlier run, with those added to landmeta since at their defaults (what the
    earlier run did)."""
    if not isinstance(before, dict):
        return before
    return {**dataclasses.asdict(EvalConfig()), **before}
