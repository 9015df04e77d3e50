"""Scoring tasks: the `Evaluator` (methods and data of one evaluation) and the work units it runs on
meta-val and test tasks, in this process or in a pool of worker processes."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import multiprocessing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landmeta.config import config_from_dict
from landmeta.data.store import ChipStore
from landmeta.data.tasks import Task
from landmeta.data.transforms import BatchMaker
from landmeta.evaluation.baselines import head_inputs, nearest_prototype, random_forest
from landmeta.evaluation.methods import FEATURE_FAMILIES, Method, load_methods, tuning_grid
from landmeta.evaluation.windows import open_windows
from landmeta.meta.adapt import adapt, set_norm_stats
from landmeta.metrics import metric_names, task_metrics
from landmeta.models import build_model
from landmeta.models.symmetry import symmetric_probabilities
from landmeta.workers import die_with_parent

RGB_CANDIDATES = (("B04", "B03", "B02"), ("B4", "B3", "B2"), ("R", "G", "B"), ("RED", "GREEN", "BLUE"))


@dataclass
class EvalSetup:
    """Everything a worker needs to rebuild the methods: paths and plain values."""

    store: str
    split: str
    kind: str
    checkpoints: list[str]
    config: dict[str, Any]
    seed: int
    tuned: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    windows: bool = False  # `store` is a user region's windows.npz (`landmeta.evaluation.windows`)

    def to_json(self) -> str:
        """The setup as JSON text, what worker processes rebuild it from (nothing is unpickled)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EvalSetup:
        """The setup `to_json` wrote (JSON keys are strings: the tuned shot counts become ints again)."""
        values = json.loads(text)
        values["tuned"] = {m: {int(s): hp for s, hp in by_shots.items()} for m, by_shots in values["tuned"].items()}
        return cls(**values)


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
        first = self.methods[0].checkpoint  # every checkpoint's bands, chips and normalisation agree
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
        features = None
        if method.family in FEATURE_FAMILIES:
            model = copy.deepcopy(method.network)
            set_norm_stats(model, xs, cfg.norm_stats)
            model.eval()
            fs, fq = head_inputs(model, xs), head_inputs(model, xq)
            if method.family == "ncm":
                return nearest_prototype(fs, ys, fq, self.store.ignore_index).numpy()
            features = (fs.numpy(), fq.numpy())
        if method.family in ("rf", "rff"):
            return random_forest(self.kind, xs.numpy(), ys.numpy(), xq.numpy(), seed=seed, trees=cfg.rf_trees,
                                 max_pixels=cfg.rf_max_pixels, ignore_index=self.store.ignore_index,
                                 features=features)
        if method.family == "maml":
            model = adapt(method.checkpoint, method.network, xs, ys, steps=(hp or {}).get("steps"),
                          classes=classes if self.kind == "classification" else None, norm_stats=cfg.norm_stats)
        else:
            model = self._finetuned(method, xs, ys, classes, seed, hp or {})
        with torch.no_grad():
            scores = symmetric_probabilities(model, xq) if cfg.tta else model(xq)
        return scores.argmax(1).numpy()

    def _finetuned(self, method: Method, xs: Tensor, ys: Tensor, classes: list[int], seed: int,
                   hp: dict[str, Any]) -> nn.Module:
        """Pretrain or random init, fine-tuned on the support set with the chosen steps, lr and layers."""
        if method.family == "random":
            torch.manual_seed(seed)
            n_out = len(classes) if self.kind == "classification" else self.store.num_classes
            model = build_model(method.checkpoint.config.model, method.checkpoint.in_channels, n_out, self.kind)
        else:
            model = copy.deepcopy(method.network)
        return adapt(method.checkpoint, model, xs, ys, steps=hp.get("steps"), lr=hp.get("lr"),
                     layers=hp.get("layers") or "all",
                     classes=classes if self.kind == "classification" else None,
                     norm_stats=self.config.eval.norm_stats)

    def score(self, task: Task, y_query: Tensor, pred: np.ndarray) -> dict[str, float]:
        labels = list(range(len(task.classes))) if self.kind == "classification" else None
        return task_metrics(self.kind, y_query.numpy(), pred, self.store.ignore_index, labels=labels)


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


def val_unit(ev: Evaluator, args: tuple[int, int, Task, list[str]]) -> tuple[int, int, dict[str, list[float]]]:
    """Score every grid candidate of the named methods on one meta-val task."""
    shots, task_id, task, names = args
    xs, ys, xq, yq = ev.tensors(task)
    headline = metric_names(ev.kind)[0]
    scores = {}
    for method in (m for m in ev.methods if m.name in names):
        scores[method.name] = [ev.score(task, yq, ev.predict(method, task, xs, ys, xq, ev.setup.seed + task_id, hp))[headline]
                               for hp in tuning_grid(ev.config, method.family)]
    return shots, task_id, scores


def test_unit(ev: Evaluator, args: tuple[int, int, Task, list[str], bool]
              ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Score the given methods on one test task; optionally keep the predictions as an example."""
    shots, task_id, task, names, keep = args
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


Unit = Callable[[Evaluator, Any], Any]  # `val_unit` or `test_unit`


def run_units(local: Evaluator, workers: int, fn: Unit, items: list) -> Iterator:
    """Run `fn` over items in this process with `local` (workers ≤ 1) or in a spawn pool whose workers
    rebuild the evaluator from its setup (one torch thread each); results in order."""
    if workers <= 1 or len(items) <= 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in the workers: small per-task models gain little from more threads
        try:
            yield from map(functools.partial(fn, local), items)
        finally:
            torch.set_num_threads(threads)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_start_worker) as pool:
        yield from pool.imap(_InWorker(fn, local.setup.to_json()), items)


@dataclass(frozen=True)
class _InWorker:
    """`fn` bound to its evaluation, sent with each item to a worker process; the worker builds the
    evaluation's `Evaluator` on its first item and keeps it for the next ones (`_worker_evaluator`)."""

    fn: Unit
    setup: str  # EvalSetup.to_json(): plain values, and the cache key

    def __call__(self, args: Any) -> Any:
        return self.fn(_worker_evaluator(self.setup), args)


@functools.lru_cache(maxsize=1)
def _worker_evaluator(setup: str) -> Evaluator:
    """The Evaluator of a worker process, built once per evaluation (its models and store loaded once)."""
    return Evaluator(EvalSetup.from_json(setup))


def _start_worker() -> None:
    """End with the parent process; one torch thread."""
    die_with_parent()
    torch.set_num_threads(1)


def task_bar(progress: bool, total: int, desc: str) -> Any:
    """A tqdm bar over tasks (hidden without `progress`)."""
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="task", disable=not progress)
