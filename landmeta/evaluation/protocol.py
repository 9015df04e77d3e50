"""The held-out-region protocol: every method scored on the same saved tasks, per shot count.

Methods: each MAML-family checkpoint adapted with its own inner loop; pretrain-then-finetune and
random init, fine-tuned with steps, learning rate and layers chosen on meta-val tasks (never test);
a random forest on band values; nearest-class prototypes on each checkpoint's features; and 0-shot
prediction where a network's head covers the store's classes.

Label spaces: classification predicts the task's N classes; for segmentation the networks predict
among all the store's classes (as a deployed map would), the random forest and the prototypes
among the classes labelled in the support set. The query's classes are never looked at.
"""

from __future__ import annotations

import copy
import itertools
import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landmeta.config import Config, config_from_dict, config_to_dict
from landmeta.data.store import ChipStore
from landmeta.data.tasks import Task, load_or_create_tasks, task_file
from landmeta.data.transforms import BatchMaker
from landmeta.errors import CheckpointError, DataError, OutputExistsError, TaskError
from landmeta.evaluation.baselines import head_inputs, nearest_prototype, random_forest
from landmeta.evaluation.results import (
    ResultsLog,
    check_results_folder,
    read_meta,
    read_results_csv,
    write_examples,
    write_meta,
    write_summaries,
)
from landmeta.evaluation.windows import open_windows
from landmeta.io import output_lock, provenance
from landmeta.meta.adapt import adapt, set_norm_stats
from landmeta.meta.checkpoint import Checkpoint
from landmeta.metrics import metric_names, task_metrics
from landmeta.models import build_model, head_names
from landmeta.vocab import TRAIN_METHODS

CHECKPOINT_NAMES = ("best.pt", "last.pt")  # what `landmeta train` writes into a run folder
TUNED_FAMILIES = ("maml", "pretrain", "random")  # methods with settings chosen on meta-val
RESUME_KEYS = ("kind", "store", "split", "tasks", "n_way", "q_query")  # meta.json entries a resumed run must share
RGB_CANDIDATES = (("B04", "B03", "B02"), ("B4", "B3", "B2"), ("R", "G", "B"), ("RED", "GREEN", "BLUE"))


@dataclass
class Method:
    """One evaluated method: its family (maml, pretrain, random, rf, proto) and, for networks, a model."""

    name: str
    family: str
    ckpt: Checkpoint | None = None
    model: nn.Module | None = None
    zero_shot: bool = False
    info: dict[str, Any] = field(default_factory=dict)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's best.pt (else last.pt); CheckpointError naming the path otherwise."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"{path}: no checkpoint or run folder here")
    for name in CHECKPOINT_NAMES:
        if (path / name).is_file():
            return path / name
    raise CheckpointError(f"{path}: run folder without a checkpoint ({' or '.join(CHECKPOINT_NAMES)})")


def rgb_indices(bands: list[str]) -> list[int]:
    """Band positions shown as red, green, blue; the first band three times if no RGB bands are named."""
    upper = [b.upper() for b in bands]
    for names in RGB_CANDIDATES:
        if all(n in upper for n in names):
            return [upper.index(n) for n in names]
    return [0, 0, 0]


def to_rgb(images: np.ndarray, bands: list[str]) -> np.ndarray:
    """(n, C, H, W) physical values -> (n, H, W, 3) uint8, 2–98 percentile stretch per channel."""
    rgb = images[:, rgb_indices(bands)].transpose(0, 2, 3, 1).astype(np.float64)
    low = np.percentile(rgb, 2, axis=(0, 1, 2))
    high = np.percentile(rgb, 98, axis=(0, 1, 2))
    return (np.clip((rgb - low) / np.maximum(high - low, 1e-12), 0, 1) * 255).astype(np.uint8)


@dataclass
class EvalSetup:
    """Everything a worker needs to rebuild the methods, picklable (paths and plain values)."""

    store: str
    split: str
    kind: str
    checkpoints: list[str]
    config: dict[str, Any]
    seed: int
    tuned: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    windows: bool = False  # `store` is a user region's windows.npz (`landmeta.evaluation.windows`)


class Evaluator:
    """Methods and data of one evaluation, built from an `EvalSetup` (once per worker process), or
    on a store already open (a user region's windows before they are saved)."""

    def __init__(self, setup: EvalSetup, store: ChipStore | None = None) -> None:
        self.setup = setup
        self.config = config_from_dict(setup.config, source="evaluation config")
        self.store = store if store is not None else (open_windows(setup.store) if setup.windows
                                                      else ChipStore.open(setup.store))
        self.kind = setup.kind
        self.methods = load_methods(setup.checkpoints, self.store, self.kind, setup.seed)
        first = next(m.ckpt for m in self.methods if m.ckpt is not None)
        self.batches = BatchMaker(self.store, bands=list(first.bands), chip_size=first.chip_size)
        self.batches.mean = np.asarray(first.norm_mean, dtype=np.float32)
        self.batches.std = np.asarray(first.norm_std, dtype=np.float32)

    def tensors(self, task: Task) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        t = self.batches.task_tensors(task)
        return t.x_support, t.y_support, t.x_query, t.y_query

    def predict(self, method: Method, task: Task, xs: Tensor, ys: Tensor, xq: Tensor, seed: int,
                hp: dict[str, Any] | None = None) -> np.ndarray:
        """Query predictions of one method after fitting on the support set (empty support: 0-shot)."""
        cfg = self.config.eval
        classes = list(task.classes)
        if method.family == "rf":
            return random_forest(self.kind, xs.numpy(), ys.numpy(), xq.numpy(), seed=seed, trees=cfg.rf_trees,
                                 max_pixels=cfg.rf_max_pixels, ignore_index=self.store.ignore_index)
        if method.family == "proto":
            model = copy.deepcopy(method.model)
            set_norm_stats(model, xs, cfg.norm_stats)
            model.eval()
            return nearest_prototype(head_inputs(model, xs), ys, head_inputs(model, xq),
                                     self.store.ignore_index).numpy()
        if method.family == "maml":
            model = adapt(method.ckpt, method.model, xs, ys, steps=(hp or {}).get("steps"),
                          classes=classes if self.kind == "classification" else None, norm_stats=cfg.norm_stats)
        else:
            model = self._finetuned(method, xs, ys, classes, seed, hp or {})
        with torch.no_grad():
            logits = model(xq)
        return logits.argmax(1).numpy()

    def _finetuned(self, method: Method, xs: Tensor, ys: Tensor, classes: list[int], seed: int,
                   hp: dict[str, Any]) -> nn.Module:
        """Pretrain or random init, fine-tuned on the support set with the chosen steps, lr and layers."""
        if method.family == "random":
            torch.manual_seed(seed)
            n_out = len(classes) if self.kind == "classification" else self.store.num_classes
            model = build_model(method.ckpt.config.model, method.ckpt.in_channels, n_out, self.kind)
        else:
            model = copy.deepcopy(method.model)
        if hp.get("layers") == "head":
            heads = set(head_names(model, method.ckpt.config.meta.head_pattern))
            for name, param in model.named_parameters():
                param.requires_grad_(name in heads)
        return adapt(method.ckpt, model, xs, ys, steps=hp.get("steps"), lr=hp.get("lr"),
                     classes=classes if self.kind == "classification" else None,
                     norm_stats=self.config.eval.norm_stats)

    def score(self, task: Task, y_query: Tensor, pred: np.ndarray) -> dict[str, float]:
        labels = list(range(len(task.classes))) if self.kind == "classification" else None
        return task_metrics(self.kind, y_query.numpy(), pred, self.store.ignore_index, labels=labels)



def tuning_grid(config: Config, family: str = "pretrain") -> list[dict[str, Any]]:
    """The candidates tried on meta-val: test-time inner steps for the MAML family (`eval.adapt_steps`;
    none given: the checkpoint's `meta.test_inner_steps` alone), fine-tuning steps × lr × layers for
    pretrain or random init.

    For pretraining, 0 steps (no fine-tuning: the network as trained, its head cut to the task's
    classes) is one candidate, without learning rate or layers. A random-init network is
    always trained, and in all its layers (its random features are worth nothing alone)."""
    cfg = config.eval
    if family == "maml":
        return [{"steps": s} for s in cfg.adapt_steps] if cfg.adapt_steps else [{"steps": None}]
    grid = [{"steps": s, "lr": lr, "layers": layers}
            for s, lr, layers in itertools.product(cfg.finetune_steps, cfg.finetune_lrs, cfg.finetune_layers)]
    if family == "random":
        grid = [hp for hp in grid if hp["steps"] > 0 and hp["layers"] == "all"]
        return grid or [{"steps": max(cfg.finetune_steps), "lr": max(cfg.finetune_lrs), "layers": "all"}]
    zero = [{"steps": 0, "lr": None, "layers": None}] if 0 in cfg.finetune_steps else []
    return zero + [hp for hp in grid if hp["steps"] != 0]


def load_methods(checkpoints: list[str], store: ChipStore, kind: str, seed: int) -> list[Method]:
    """The checkpoints' methods plus random init, random forest and prototypes, in report order."""
    runs: list[Method] = []
    for path in checkpoints:
        ckpt = Checkpoint.load(path)
        ckpt.fits(kind, store.bands, store.class_names, data=f"the store {store.path}")
        family = ckpt.family
        if family == "random":
            raise CheckpointError(f"{path}: method {ckpt.method!r} cannot be evaluated here "
                                  f"(expected one of {list(TRAIN_METHODS)})")
        name = ckpt.method
        if any(m.name == name for m in runs):
            name = f"{name}-{Path(path).parent.name if Path(path).parent.name else len(runs)}"
        zero = (family == "pretrain" or ckpt.global_class_head
                or (kind == "segmentation" and ckpt.num_classes == store.num_classes))
        runs.append(Method(name, family, ckpt, ckpt.model(), zero_shot=zero,
                           info={"family": family, "checkpoint": str(path), "checkpoint_method": ckpt.method,
                                 "step": ckpt.step, "provenance": ckpt.provenance,
                                 "config": config_to_dict(ckpt.config)}))
    if not runs:
        raise CheckpointError("no checkpoint given (--runs)")
    first = runs[0].ckpt
    for m in runs[1:]:
        for key in ("bands", "chip_size"):
            if getattr(m.ckpt, key) != getattr(first, key):
                raise CheckpointError(f"{m.ckpt.where}: {key} {getattr(m.ckpt, key)} differ from {first.where}'s "
                                      f"{getattr(first, key)}")
        if not (np.allclose(m.ckpt.norm_mean, first.norm_mean) and np.allclose(m.ckpt.norm_std, first.norm_std)):
            raise CheckpointError(f"{m.ckpt.where}: normalisation statistics differ from {first.where}'s "
                                  "(trained on another store)")
    base = next((m for m in runs if m.family == "pretrain"), runs[0])
    methods = list(runs)
    methods.append(Method("random", "random", base.ckpt.replace(method="random"),
                          info={"family": "random", "architecture_of": base.ckpt.where}))
    methods.append(Method("rf", "rf", info={"family": "rf"}))
    methods += [Method(f"proto-{m.name}", "proto", m.ckpt, m.model,
                       info={"family": "proto", "features_of": m.ckpt.where}) for m in runs]
    return methods


# --- work units (run in worker processes) -------------------------------------------------------

_EVALUATOR: Evaluator | None = None


def _init_worker(setup: EvalSetup) -> None:
    """End with the parent process; one torch thread; build this worker's evaluator."""
    from landmeta.workers import die_with_parent
    global _EVALUATOR
    die_with_parent()
    torch.set_num_threads(1)
    _EVALUATOR = Evaluator(setup)


def _val_unit(args: tuple[int, int, Task, list[str]]) -> tuple[int, int, dict[str, list[float]]]:
    """Score every grid candidate of the named methods on one meta-val task."""
    shots, task_id, task, names = args
    ev = _EVALUATOR
    xs, ys, xq, yq = ev.tensors(task)
    headline = metric_names(ev.kind)[0]
    scores = {}
    for method in (m for m in ev.methods if m.name in names):
        scores[method.name] = [ev.score(task, yq, ev.predict(method, task, xs, ys, xq, ev.setup.seed + task_id, hp))[headline]
                               for hp in tuning_grid(ev.config, method.family)]
    return shots, task_id, scores


def _test_unit(args: tuple[int, int, Task, list[str], bool]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Score the given methods on one test task; optionally keep the predictions as an example."""
    shots, task_id, task, names, keep = args
    ev = _EVALUATOR
    xs, ys, xq, yq = ev.tensors(task)
    if shots == 0:
        xs, ys = xs[:0], ys[:0]
    rows, predictions = [], {}
    for method in (m for m in ev.methods if m.name in names):
        hp = ev.setup.tuned.get(method.name, {}).get(shots)
        pred = ev.predict(method, task, xs, ys, xq, ev.setup.seed + task_id, hp)
        rows.append({"task": task_id, "region": task.region, "method": method.name, "shots": shots,
                     **ev.score(task, yq, pred)})
        predictions[method.name] = pred
    example = None
    if keep:
        store, classes = ev.store, np.asarray(task.classes)
        to_global = (lambda y: classes[y]) if ev.kind == "classification" else (lambda y: y)
        bands = ev.batches.bands
        chosen = [store.bands.index(b) for b in bands]
        rgb = to_rgb(store.images(np.concatenate([task.support, task.query]))[:, chosen], bands)  # one stretch
        example = {"task": task_id, "region": task.region, "shots": shots, "classes": [int(c) for c in classes],
                   "support_rgb": rgb[:len(task.support)][:len(ys)],
                   "support_y": to_global(ys.numpy()),
                   "query_rgb": rgb[len(task.support):],
                   "query_y": to_global(yq.numpy()),
                   "predictions": {m: to_global(p) for m, p in predictions.items()}}
    return rows, example


def _map(local: Evaluator, workers: int, fn, items: list) -> Iterator:
    """Run `fn` over items in this process with `local` (workers ≤ 1) or in a spawn pool whose workers
    rebuild the evaluator from its setup (one torch thread each); results in order."""
    global _EVALUATOR
    setup = local.setup
    if workers <= 1 or len(items) <= 1:
        _EVALUATOR = local
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in the workers: small per-task models gain little from more threads
        try:
            yield from map(fn, items)
        finally:
            torch.set_num_threads(threads)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(setup,)) as pool:
        yield from pool.imap(fn, items)


# --- the whole evaluation --------------------------------------------------------------------------

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
    meta = {"kind": kind, "store": str(store.path.resolve()), "split": split, "shots": shots, "tasks": count,
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
    missing_tuning = [s for s in positive if s in shots and any(
        str(s) not in meta["tuned"].get(m.name, {}) for m in methods if m.family in TUNED_FAMILIES)]
    if missing_tuning:
        meta["tuned"] = _tune(probe, store, kind, n_way, missing_tuning, meta["tuned"], workers, progress)
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
    bar = _bar(progress, len(items), "evaluate")
    for rows, example in _map(probe, workers, _test_unit, items):
        log.append([r for r in rows if not log.has(r["task"], r["method"], r["shots"])])
        if example is not None:
            examples.append(example)
        bar.update(1)
    bar.close()
    if examples:
        write_examples(out / "examples.npz", examples)
    results = read_results_csv(out / "results.csv", kind)
    write_summaries(out, results, kind, meta["reference"], seed=config.seed, n_boot=config.eval.bootstrap)
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


def check_heads(methods: list[Method], kind: str, n_way: int | None, tasks: str) -> None:
    """CheckpointError for a MAML-family classifier whose task-local head does not have `n_way` outputs."""
    for m in methods:
        if (kind == "classification" and m.family == "maml" and m.ckpt is not None
                and not m.ckpt.global_class_head and m.ckpt.num_classes != n_way):
            raise CheckpointError(f"{m.ckpt.where}: a {m.ckpt.num_classes}-way classifier; {tasks}")


def _num(value: Any) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def _bar(progress: bool, total: int, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="task", disable=not progress)


def resume_or_start(out: Path, meta: dict[str, Any], overwrite: bool,
                     keys: tuple[str, ...] = RESUME_KEYS) -> dict[str, Any]:
    """Tuned hyperparameters of a resumable run in `out` ({} for a fresh start); DataError if `out`
    holds results of other data, split, task lists or methods (`keys` of meta.json)."""
    if overwrite:
        for name in ("results.csv", "summary.csv", "tests.csv", "examples.npz", "meta.json"):
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
    if old.get("config", {}).get("eval") != meta["config"]["eval"] or old.get("seeds") != meta["seeds"]:
        raise DataError(f"{out / 'meta.json'}: written with other eval settings or seeds; choose another --out "
                        "or pass --overwrite")
    return old.get("tuned", {})


def _tune(probe: Evaluator, store: ChipStore, kind: str, n_way: int, shots: list[int],
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
    bar = _bar(progress, len(items), "tune on meta-val")
    for s, _, result in _map(probe, workers, _val_unit, items):
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
