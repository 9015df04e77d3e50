"""Few-shot tasks over a chip store: seeded N-way k-shot classification and k-shot segmentation.

A task lives in one region. Support and query never share a chip nor a parent patch (the quadrants
of one patch are near neighbours, so a query chip beside a support chip would be partly seen).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from landmeta.data.store import ChipStore
from landmeta.errors import LandmetaWarning, TaskError
from landmeta.io import atomic_write_json, provenance
from landmeta.vocab import KINDS, SPLITS

TASKS_FORMAT = "landmeta-tasks"
MAX_TRIES = 100  # redraws when a classification draw leaves a class too few parent-disjoint queries


@dataclass(frozen=True, eq=False)
class Task:
    """One few-shot task: chip indices of support and query, and its global class ids.

    Classification: local label `i` is `classes[i]`, support/query grouped by class in that order.
    Segmentation: `classes` are the classes present in the support and query masks, sorted.
    """

    region: str
    support: np.ndarray
    query: np.ndarray
    classes: tuple[int, ...]
    kind: str = "classification"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Task):
            return NotImplemented
        return (self.region == other.region and self.classes == other.classes and self.kind == other.kind
                and np.array_equal(self.support, other.support) and np.array_equal(self.query, other.query))

    def __hash__(self) -> int:
        return hash((self.region, self.classes, self.kind, self.support.tobytes(), self.query.tobytes()))

    def to_json(self) -> dict[str, Any]:
        return {"region": self.region, "support": self.support.tolist(), "query": self.query.tolist(),
                "classes": list(self.classes), "kind": self.kind}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Task:
        return cls(str(obj["region"]), np.asarray(obj["support"], dtype=np.int64),
                   np.asarray(obj["query"], dtype=np.int64), tuple(int(c) for c in obj["classes"]), str(obj["kind"]))


@dataclass(frozen=True)
class _Region:
    """Chip pools of one region: labelled chips, their parents (as codes) and chips per class."""

    chips: np.ndarray
    parents: np.ndarray
    by_class: dict[int, np.ndarray]
    class_parents: dict[int, np.ndarray]  # parents of by_class's chips, in the same order


def _split_index(store: ChipStore, split: str) -> dict[str, _Region]:
    cache = store.derived  # region pools by split, built once per store
    if ("index", split) not in cache:
        if split not in SPLITS:
            raise TaskError(f"{store.path}: unknown split {split!r} (expected one of {list(SPLITS)})")
        chips = store.chips
        parent_codes = chips["parent"].astype("category").cat.codes.to_numpy(dtype=np.int64)
        labels = chips["label"].to_numpy(dtype=np.int64)
        index: dict[str, _Region] = {}
        for region in store.regions_in(split):
            idx = np.flatnonzero((chips["region"] == region).to_numpy() & (labels >= 0))
            by_class = {int(c): idx[labels[idx] == c] for c in np.unique(labels[idx])}
            index[region] = _Region(idx, parent_codes[idx], by_class,
                                    {c: parent_codes[chips_c] for c, chips_c in by_class.items()})
        cache[("index", split)] = index
    return cache[("index", split)]


def _check(store: ChipStore, kind: str, n_way: int, k_shot: int, q_query: int) -> None:
    if kind not in store.kinds:
        raise TaskError(f"{store.path}: store has no {kind!r} tasks (kinds: {store.kinds})")
    if k_shot < 1 or q_query < 1 or (kind == "classification" and n_way < 2):
        raise TaskError(f"need k_shot ≥ 1, q_query ≥ 1 and, for classification, n_way ≥ 2 "
                        f"(got n_way={n_way}, k_shot={k_shot}, q_query={q_query})")


def usable_regions(store: ChipStore, split: str, kind: str, n_way: int, k_shot: int, q_query: int) -> list[str]:
    """Regions of `split` where a task can be drawn.

    Classification: at least `n_way` classes with more than `k_shot + q_query` chips.
    Segmentation: at least `k_shot + q_query` distinct parent patches.
    Only labelled chips count (label ≥ 0: a chip without any labelled pixel is never drawn).
    """
    _check(store, kind, n_way, k_shot, q_query)
    key = ("usable", split, kind, n_way, k_shot, q_query)
    cache = store.derived  # usable regions by settings, found once per store
    if key not in cache:
        index = _split_index(store, split)
        if kind == "classification":
            cache[key] = [r for r, reg in index.items() if len(_eligible(reg, k_shot + q_query)) >= n_way]
        else:
            cache[key] = [r for r, reg in index.items() if len(np.unique(reg.parents)) >= k_shot + q_query]
    return list(cache[key])


def warn_left_out(store: ChipStore, split: str, kind: str, n_way: int, k_shot: int, q_query: int) -> None:
    """One LandmetaWarning naming the regions of `split` where no task of these settings can be drawn
    (a scene with fewer classes than the ways, or too few chips or patches); none when every region
    is usable, and none when no region is (drawing a task then fails with the rule)."""
    usable = set(usable_regions(store, split, kind, n_way, k_shot, q_query))
    index = _split_index(store, split)
    if not usable or len(usable) == len(index):
        return
    need = k_shot + q_query
    left = [f"{r} ({len(_eligible(reg, need))} classes of > {need} chips)" if kind == "classification"
            else f"{r} ({len(np.unique(reg.parents))} patches)" for r, reg in index.items() if r not in usable]
    what = f"{n_way}-way {k_shot}-shot" if kind == "classification" else f"{k_shot}-shot"
    warnings.warn(f"{store.path}: split {split!r}: {len(left)} of {len(index)} regions cannot give a {what} "
                  f"task with {q_query} queries and are left out: {', '.join(left[:5])}"
                  + (f" and {len(left) - 5} more" if len(left) > 5 else ""), LandmetaWarning, stacklevel=2)


def _eligible(region: _Region, need: int) -> list[int]:
    return [c for c, idx in region.by_class.items() if len(idx) > need]


def _no_region_error(store: ChipStore, split: str, kind: str, n_way: int, k_shot: int, q_query: int) -> TaskError:
    rule = (f"≥ {n_way} classes of > {k_shot + q_query} chips" if kind == "classification"
            else f"≥ {k_shot + q_query} parent patches")
    return TaskError(f"{store.path}: split {split!r} has no region with {rule}")


def sample_task(store: ChipStore, split: str, kind: str, rng: np.random.Generator,
                n_way: int, k_shot: int, q_query: int) -> Task:
    """Draw one task: a region uniformly among the usable ones of `split`, then classes, then chips."""
    regions = usable_regions(store, split, kind, n_way, k_shot, q_query)
    if not regions:
        raise _no_region_error(store, split, kind, n_way, k_shot, q_query)
    index = _split_index(store, split)
    if kind == "segmentation":
        region = regions[int(rng.integers(len(regions)))]
        return _segmentation_task(store, region, index[region], rng, k_shot, q_query)
    for _ in range(MAX_TRIES):
        region = regions[int(rng.integers(len(regions)))]
        task = _classification_task(region, index[region], rng, n_way, k_shot, q_query)
        if task is not None:
            return task
    raise TaskError(f"{store.path}: split {split!r}: no {n_way}-way {k_shot}-shot draw with {q_query} queries per "
                    f"class kept support and query on distinct parent patches in {MAX_TRIES} tries")


def _classification_task(region: str, reg: _Region, rng: np.random.Generator,
                         n_way: int, k_shot: int, q_query: int) -> Task | None:
    """Support first, then queries from chips whose parent holds no support chip; None if a class runs short."""
    eligible = _eligible(reg, k_shot + q_query)
    classes = [eligible[i] for i in rng.choice(len(eligible), size=n_way, replace=False)]
    support = [rng.choice(reg.by_class[c], size=k_shot, replace=False) for c in classes]
    taken = np.unique(reg.parents[np.searchsorted(reg.chips, np.concatenate(support))])
    query = []
    for c in classes:
        free = (reg.class_parents[c][:, None] != taken[None, :]).all(axis=1)  # parent holds no support chip
        pool = reg.by_class[c][free]
        if len(pool) < q_query:
            return None
        query.append(rng.choice(pool, size=q_query, replace=False))
    return Task(region, np.concatenate(support).astype(np.int64), np.concatenate(query).astype(np.int64),
                tuple(int(c) for c in classes), "classification")


def _segmentation_task(store: ChipStore, region: str, reg: _Region, rng: np.random.Generator,
                       k_shot: int, q_query: int) -> Task:
    """k + q distinct parents at random, one chip from each: the first k are support, the rest query."""
    parents = np.unique(reg.parents)
    chosen = rng.choice(parents, size=k_shot + q_query, replace=False)
    picks = np.array([rng.choice(reg.chips[reg.parents == p]) for p in chosen], dtype=np.int64)
    support, query = picks[:k_shot], picks[k_shot:]
    masks = store.masks(picks)
    present = np.unique(masks)
    classes = tuple(int(c) for c in present if c != store.ignore_index)
    return Task(region, support, query, classes, "segmentation")


def task_file(store: ChipStore, split: str, kind: str, n_way: int, k_shot: int, q_query: int,
              count: int, seed: int) -> Path:
    """Where a saved task list lives in the store."""
    return store.path / "tasks" / f"{split}-{kind}-{n_way}way-{k_shot}shot-{q_query}q-{count}-seed{seed}.json"


def load_or_create_tasks(store: ChipStore, split: str, kind: str, n_way: int, k_shot: int, q_query: int,
                         count: int, seed: int) -> list[Task]:
    """The saved list of `count` tasks for these settings, drawn (seeded) and saved on first use."""
    if kind not in KINDS:
        raise TaskError(f"unknown task kind {kind!r} (expected one of {list(KINDS)})")
    path = task_file(store, split, kind, n_way, k_shot, q_query, count, seed)
    settings = {"split": split, "kind": kind, "n_way": n_way, "k_shot": k_shot, "q_query": q_query,
                "count": count, "seed": seed, "num_chips": len(store)}
    if path.exists():
        return _load_tasks(path, store, settings)
    warn_left_out(store, split, kind, n_way, k_shot, q_query)
    rng = np.random.default_rng(seed)
    tasks = [sample_task(store, split, kind, rng, n_way, k_shot, q_query) for _ in range(count)]
    atomic_write_json(path, {"format": TASKS_FORMAT, **settings, "provenance": provenance(),
                             "tasks": [t.to_json() for t in tasks]})
    return tasks


def _load_tasks(path: Path, store: ChipStore, settings: dict[str, Any]) -> list[Task]:
    try:
        obj = json.loads(path.read_text())
        tasks = [Task.from_json(t) for t in obj["tasks"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TaskError(f"{path}: not a readable task list ({exc}); delete it to draw the tasks again") from exc
    if obj.get("format") != TASKS_FORMAT or any(obj.get(k) != v for k, v in settings.items()):
        raise TaskError(f"{path}: task list does not match this store or these settings "
                        f"({ {k: obj.get(k) for k in settings} }); delete it to draw the tasks again")
    if len(tasks) != settings["count"]:
        raise TaskError(f"{path}: holds {len(tasks)} tasks, expected {settings['count']}")
    return tasks
