"""Choosing, per shot count on meta-val tasks, the test-time steps of the MAML family and the fine-tuning
steps, learning rate and layers of pretrain and random init."""

from __future__ import annotations

from typing import Any

import numpy as np

from landmeta.data.store import ChipStore
from landmeta.data.tasks import load_or_create_tasks
from landmeta.evaluation.methods import TUNED_FAMILIES, tuning_grid
from landmeta.evaluation.runner import Evaluator, run_units, task_bar, val_unit


def tune(probe: Evaluator, store: ChipStore, kind: str, n_way: int, shots: list[int],
          tuned: dict[str, Any], workers: int, progress: bool) -> dict[str, Any]:
    """Choose per shot count, on meta-val tasks, the MAML family's test-time steps and pretrain's and
    random init's fine-tuning steps, lr and layers."""
    config, setup = probe.config, probe.setup
    grids = {m.name: tuning_grid(config, m.family) for m in probe.methods if m.family in TUNED_FAMILIES}
    tuned = {k: dict(v) for k, v in tuned.items()}
    for name in [n for n, grid in grids.items() if len(grid) == 1]:  # nothing to choose: no meta-val runs
        tuned.setdefault(name, {}).update({str(s): grids[name][0] | {"val_score": None, "val_tasks": 0}
                                           for s in shots})
    names = [n for n, grid in grids.items() if len(grid) > 1]
    if not names:
        return tuned
    items = []
    for s in shots:
        val = load_or_create_tasks(store, "val", kind, n_way, s, config.task.q_query, config.task.val_tasks, setup.seed)
        items += [(s, i, task, names) for i, task in enumerate(val)]
    scores: dict[tuple[str, int], list[list[float]]] = {}
    bar = task_bar(progress, len(items), "tune on meta-val")
    for s, _, result in run_units(probe, workers, val_unit, items):
        for name, values in result.items():
            scores.setdefault((name, s), []).append(values)
        bar.update(1)
    bar.close()
    for (name, s), values in scores.items():
        means = np.mean(values, axis=0)
        best = int(np.argmax(means))
        tuned.setdefault(name, {})[str(s)] = grids[name][best] | {"val_score": float(means[best]),
                                                                  "val_tasks": len(values)}
    return tuned
