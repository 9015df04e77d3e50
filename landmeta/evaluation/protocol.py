"""The held-out-region protocol: every method scored on the same saved tasks, per shot count.

Methods: each MAML-family checkpoint adapted with its own inner loop; pretrain-then-finetune and
random init, fine-tuned with steps, learning rate and layers chosen on meta-val tasks (never test);
a random forest on band values; on each checkpoint's features, nearest-class prototypes and the
random forest on band values plus those features; and 0-shot prediction where a network's head
covers the store's classes. Every method is also scored on the meta-val tasks, and the best there
is the method recommended per shot count (`choice.csv`).

Label spaces: classification predicts the task's N classes; for segmentation the networks predict
among all the store's classes (as a deployed map would), the random forests and the prototypes
among the classes labelled in the support set. The query's classes are never looked at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from landmeta.config import Config, config_to_dict
from landmeta.data.store import ChipStore
from landmeta.data.tasks import Task, load_or_create_tasks, task_file
from landmeta.errors import CheckpointError, TaskError
from landmeta.evaluation.methods import check_heads, resolve_checkpoint
from landmeta.evaluation.results import (
    ResultsLog,
    check_results_folder,
    read_results_csv,
    write_examples,
    write_meta,
    write_summaries,
)
from landmeta.evaluation.resume import resume_or_start
from landmeta.evaluation.runner import EvalSetup, Evaluator, run_units, task_bar, test_unit
from landmeta.evaluation.tuning import choose_methods, tune
from landmeta.io import output_lock, provenance
from landmeta.meta.checkpoint import Checkpoint
from landmeta.metrics import metric_names


def evaluate(store_path: str | Path, runs: list[str | Path], out: str | Path, config: Config,
             split: str = "test", shots: list[int] | None = None, tasks: int | None = None,
             workers: int | None = None, overwrite: bool = False, progress: bool = False) -> Path:
    """Evaluate every method on the saved tasks of `split` and write the results folder `out`.

    A folder left by an interrupted run with the same settings is resumed from its rows; the whole
    evaluation holds `out`'s write lock.
    """
    check_results_folder(Path(out))  # before the lock, which would create folders under a file
    with output_lock(out):
        return _evaluate(store_path, runs, Path(out), config, split, shots, tasks, workers, overwrite, progress)


def _evaluate(store_path: str | Path, runs: list[str | Path], out: Path, config: Config, split: str,
              shots: list[int] | None, tasks: int | None, workers: int | None, overwrite: bool,
              progress: bool) -> Path:
    store = ChipStore.open(store_path)
    checkpoints = [str(resolve_checkpoint(r).resolve()) for r in runs]
    kind = Checkpoint.load(checkpoints[0]).kind
    if kind not in store.kinds:
        raise CheckpointError(f"{checkpoints[0]}: a {kind} checkpoint; the store {store.path} has {store.kinds}")
    shots, count, workers = task_counts(config, shots, tasks, workers)
    t = config.task
    n_way = t.n_way
    positive = [s for s in shots if s > 0] or [1]
    setup = EvalSetup(str(store.path.resolve()), split, kind, checkpoints, config_to_dict(config), config.seed)
    probe = Evaluator(setup)  # validates every checkpoint against the store before anything is written
    methods = probe.methods
    check_heads(methods, kind, n_way, f"the tasks are {n_way}-way (task.n_way)")
    task_lists = {s: load_or_create_tasks(store, split, kind, n_way, s or positive[0], t.q_query, count, config.seed)
                  for s in shots}
    task_files = {s: str(task_file(store, split, kind, n_way, s or positive[0], t.q_query, count, config.seed))
                  for s in shots}
    meta: dict[str, Any] = {"kind": kind, "store": str(store.path.resolve()), "split": split, "shots": shots, "tasks": count,
            "n_way": n_way, "q_query": t.q_query, "task_files": task_files, "zero_shot_tasks": "0-shot uses the "
            f"{positive[0]}-shot task list without its support set",
            "methods": {m.name: m.info | {"zero_shot": m.zero_shot} for m in methods},
            "reference": next((m.name for m in methods if m.family == "maml"), None),
            "metrics": list(metric_names(kind)), "seeds": {"seed": config.seed, "tasks": config.seed},
            "class_names": store.class_names, "class_colors": [list(c) for c in store.class_colors],
            "ignore_index": store.ignore_index,
            "regions": [{"region": r.region, "lon": _num(r.lon), "lat": _num(r.lat)}
                        for r in store.regions[store.regions["split"] == split].itertuples()],
            "store_manifest": {k: store.manifest.get(k) for k in ("source", "bands", "num_chips", "chip_size",
                                                                    "counts", "checksums", "provenance")},
            "config": config_to_dict(config)}
    out.mkdir(parents=True, exist_ok=True)
    meta["tuned"] = resume_or_start(out, meta, overwrite)
    write_meta(out, meta | {"status": "running", "provenance": provenance()})
    scored = [s for s in positive if s in shots]
    if any(str(s) not in meta["tuned"].get(m.name, {}) for s in scored for m in methods):
        meta["tuned"] = tune(probe, store, kind, n_way, scored, meta["tuned"], workers, progress)
    meta["choice"] = choose_methods(meta["tuned"], scored)
    write_meta(out, meta | {"status": "running", "provenance": provenance()})
    return score_tasks(probe, out, meta, task_lists, workers, progress)


def score_tasks(probe: Evaluator, out: Path, meta: dict[str, Any], task_lists: dict[int, list[Task]],
                workers: int, progress: bool) -> Path:
    """Score every method on every task with the settings in `meta["tuned"]` (rows already in
    results.csv are kept), then write the examples, summaries and the finished meta.json."""
    setup, config, kind, methods = probe.setup, probe.config, probe.kind, probe.methods
    shots = meta["shots"]
    positive = [s for s in shots if s > 0] or [1]
    setup.tuned = {m: {int(s): hp for s, hp in v.items()} for m, v in meta["tuned"].items()}
    log = ResultsLog(out / "results.csv", kind)
    example_shots = positive[0] if positive[0] in shots else shots[0]
    items = []
    for s in shots:
        for i, task in enumerate(task_lists[s]):
            names = [m.name for m in methods if (s > 0 or m.zero_shot) and not log.has(i, m.name, s)]
            keep = s == example_shots and i < config.eval.examples
            if names or keep:
                items.append((s, i, task, [m.name for m in methods if s > 0 or m.zero_shot] if keep else names, keep))
    examples = []
    bar = task_bar(progress, len(items), "evaluate")
    for rows, example in run_units(probe, workers, test_unit, items):
        log.append([r for r in rows if not log.has(r["task"], r["method"], r["shots"])])
        if example is not None:
            examples.append(example)
        bar.update(1)
    bar.close()
    if examples:
        write_examples(out / "examples.npz", examples)
    results = read_results_csv(out / "results.csv", kind)
    write_summaries(out, results, kind, meta["reference"], seed=config.seed, n_boot=config.eval.bootstrap,
                    choice=meta.get("choice"))
    write_meta(out, meta | {"status": "complete", "provenance": provenance()})
    return out


def task_counts(config: Config, shots: list[int] | None, tasks: int | None,
                workers: int | None) -> tuple[list[int], int, int]:
    """Shot counts (sorted), tasks per shot count and worker processes: as given, else from the config."""
    shots = sorted(set(config.eval.shots if shots is None else shots))
    if not shots or min(shots) < 0:
        raise TaskError(f"shots must be non-negative integers, got {shots}")
    count = config.task.test_tasks if tasks is None else tasks
    if count < 1:
        raise TaskError(f"tasks per shot count must be >= 1, got {count}")
    return shots, count, config.eval.workers if workers is None else workers


def _num(value: Any) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None
