"""Benchmark: few-shot tasks per second, sampling alone and with tensor assembly (BatchMaker).

Usage:
    python scripts/bench_sampling.py                    # stores made by tests/store_factory.py at 32 and 128 px
    python scripts/bench_sampling.py --store data/NAME  # an existing chip store

Prints tasks/s for each task kind: drawing only, drawing + tensors, drawing + tensors + augmentation.
Single-threaded torch, so the figure compares with a meta-training step measured the same way.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from landmeta.data.store import ChipStore
from landmeta.data.tasks import TaskSampler
from landmeta.data.transforms import BatchMaker


def rate(fn, seconds: float) -> float:
    """Calls per second of `fn`, over at least `seconds` (after one warm-up call)."""
    fn()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        n += 1
    return n / elapsed


def bench_store(store: ChipStore, n_way: int, k_shot: int, q_query: int, seconds: float) -> None:
    print(f"store {store.path}: {len(store)} chips, {len(store.bands)} bands, {store.chip_size} px")
    for kind in store.kinds:
        tasks = iter(TaskSampler(store, "train", kind, n_way, k_shot, q_query, seed=0))
        plain, augmented = BatchMaker(store), BatchMaker(store, augment=True)
        rng = np.random.default_rng(0)
        r_sample = rate(lambda: next(tasks), seconds)
        r_tensors = rate(lambda: plain.task_tensors(next(tasks)), seconds)
        r_augment = rate(lambda: augmented.task_tensors(next(tasks), rng), seconds)
        task = next(tasks)
        chips = len(task.support) + len(task.query)
        print(f"  {kind:14s} {chips:3d} chips/task | sample {r_sample:9.1f} tasks/s | + tensors "
              f"{r_tensors:8.1f} tasks/s | + tensors + augment {r_augment:8.1f} tasks/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, action="append", help="chip store(s) to benchmark")
    parser.add_argument("--n-way", type=int, default=4)
    parser.add_argument("--k-shot", type=int, default=2)
    parser.add_argument("--q-query", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{args.n_way}-way {args.k_shot}-shot, {args.q_query} queries per class (segmentation: "
          f"{args.k_shot} support + {args.q_query} query chips); torch threads: 1")
    if args.store:
        for path in args.store:
            bench_store(ChipStore.open(path), args.n_way, args.k_shot, args.q_query, args.seconds)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from store_factory import make_store
    with tempfile.TemporaryDirectory() as tmp:
        for size in (32, 128):
            path = make_store(Path(tmp) / f"factory{size}", seed=0, chip_size=size,
                              splits=("train",) * 6 + ("val", "test"))
            bench_store(ChipStore.open(path), args.n_way, args.k_shot, args.q_query, args.seconds)


if __name__ == "__main__":
    main()
