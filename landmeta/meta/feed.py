"""The training data of each outer step, made in DataLoader worker processes when asked.

Outer step s's data depends only on the seed, s and the rank: MAML task i of the meta-batch comes
from a generator seeded by (seed, s, i), a pretraining batch from one seeded by (seed, s). Steps
can therefore be made ahead, in other processes, and a run gives the same result with any number
of workers (`train.workers`). Chips are read from the store's memory maps, so the store may be
larger than memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from landmeta.data.store import ChipStore
from landmeta.data.tasks import sample_task
from landmeta.data.transforms import BatchMaker, TaskTensors
from landmeta.errors import ConfigError
from landmeta.meta.distributed import World, my_share
from landmeta.workers import die_with_parent


@dataclass
class TaskDraw:
    """One task of a meta-batch: its classes (store ids, for a global head) and its tensors."""

    classes: tuple[int, ...]
    tensors: TaskTensors


@dataclass(frozen=True)
class MetaBatches(Dataset):
    """Item s: the tasks this rank takes at outer step s (tasks rank, rank + N, ... of the meta-batch)."""

    store: ChipStore
    batches: BatchMaker
    kind: str
    n_way: int
    k_shot: int
    q_query: int
    meta_batch: int
    seed: int
    world: World

    def __getitem__(self, step: int) -> list[TaskDraw]:
        draws = []
        for i in my_share(self.meta_batch, self.world):
            rng = np.random.default_rng([self.seed, step, i])
            task = sample_task(self.store, "train", self.kind, rng, self.n_way, self.k_shot, self.q_query)
            draws.append(TaskDraw(task.classes, self.batches.task_tensors(task, rng)))
        return draws


@dataclass(frozen=True)
class PooledBatches(Dataset):
    """Item s: this rank's share (chips rank, rank + N, ...) of the pooled pretraining batch of step s."""

    batches: BatchMaker
    chips: np.ndarray  # chip ids of the pool
    kind: str
    batch_size: int
    seed: int
    world: World

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step])
        idx = np.sort(rng.choice(self.chips, size=min(self.batch_size, len(self.chips)), replace=False))
        return self.batches.chip_tensors(idx[self.world.rank::self.world.size], self.kind, rng)


def pretraining_pool(store: ChipStore, kind: str) -> np.ndarray:
    """Chip ids of the meta-train regions that pretraining draws from (labelled chips for classification)."""
    pool = store.chips[store.chips["region"].isin(store.regions_in("train"))]
    if kind == "classification":
        pool = pool[pool["label"] >= 0]
    if len(pool) == 0:
        raise ConfigError(f"{store.path}: no {kind} chips in meta-train regions to pretrain on")
    return pool["chip"].to_numpy()


def steps_data(dataset: Dataset, start: int, stop: int, workers: int) -> Iterator:
    """Items start .. stop-1 of `dataset`, in order; made ahead by `workers` processes when > 0."""
    if workers < 0:
        raise ConfigError(f"train.workers must be >= 0, got {workers}")
    if workers == 0:
        return (dataset[s] for s in range(start, stop))
    loader = DataLoader(dataset, batch_size=None, sampler=range(start, stop), num_workers=workers,
                        collate_fn=_as_is, prefetch_factor=2, worker_init_fn=_start_worker)
    return iter(loader)


def _start_worker(worker_id: int) -> None:
    """A DataLoader worker ends with the training process (even one killed with SIGKILL)."""
    die_with_parent()


def _as_is(item: object) -> object:
    return item
