"""Choosing on meta-val tasks, per shot count: the test-time steps of the MAML family, the fine-tuning
steps, learning rate and layers of pretrain and random init, and then the method itself — the one a
user should run on a new region (`choose_methods`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from landmeta.data.store import ChipStore
from landmeta.data.tasks import load_or_create_tasks
from landmeta.evaluation.methods import tuning_grid
from landmeta.evaluation.runner import Evaluator, run_units, task_bar, val_unit


def tune(probe: Evaluator, store: ChipStore, kind: str, n_way: int, shots: list[int],
         tuned: dict[str, Any], workers: int, progress: bool) -> dict[str, Any]:
    """Score every method on the meta-val tasks of each shot count that `tuned` lacks for it: each
    candidate of its grid (`tuning_grid`), keeping the best with its mean `val_score` and `val_tasks`."""
    config, setup = probe.config, probe.setup
    tuned = {k: dict(v) for k, v in tuned.items()}
    todo = {s: [m.name for m in probe.methods if str(s) not in tuned.get(m.name, {})] for s in shots}
    items = []
    for s in (s for s in shots if todo[s]):
        val = load_or_create_tasks(store, "val", kind, n_way, s, config.task.q_query, config.task.val_tasks, setup.seed)
        items += [(s, i, task, todo[s]) for i, task in enumerate(val)]
    scores: dict[tuple[str, int], list[list[float]]] = {}
    bar = task_bar(progress, len(items), "tune on meta-val")
    for s, _, result in run_units(probe, workers, val_unit, items):
        for name, values in result.items():
            scores.setdefault((name, s), []).append(values)
        bar.update(1)
    bar.close()
    families = {m.name: m.family for m in probe.methods}
    for (name, s), values in scores.items():
        means = np.mean(values, axis=0)
        best = int(np.argmax(means))
        tuned.setdefault(name, {})[str(s)] = tuning_grid(config, families[name])[best] | {
            "val_score": float(means[best]), "val_tasks": len(values)}
    return tuned


def choose_methods(tuned: dict[str, Any], shots: list[int]) -> dict[str, dict[str, Any]]:
    """Per shot count (a string key, as in meta.json) the method with the best meta-val score and the
    runner-up; ties go to the method listed first. Shot counts with fewer than two scored methods
    are left out."""
    choice = {}
    for s in shots:
        scored = [(hp[str(s)]["val_score"], name) for name, hp in tuned.items()
                  if hp.get(str(s), {}).get("val_score") is not None]
        if len(scored) < 2:
            continue
        order = sorted(range(len(scored)), key=lambda i: (-scored[i][0], i))
        (best, method), (second, runner_up) = scored[order[0]], scored[order[1]]
        choice[str(s)] = {"method": method, "val_score": best, "runner_up": runner_up,
                          "runner_up_val_score": second, "val_tasks": tuned[method][str(s)]["val_tasks"]}
    return choice
