"""Benchmark: few-shot tasks per second, sampling alone and with tensor assembly (BatchMaker).

Usage:
    python scripts/bench_sampling.py                    # 15-band stores from tests/store_factory.py, 32 and 128 px
    python scripts/bench_sampling.py --store data/NAME  # an existing chip store

Prints tasks/s for each task kind: drawing only, drawing + tensors, drawing + tensors + augmentation,
by wall-clock and by process CPU time. Single-threaded torch, so the figures compare with a
meta-training step measured the same way.
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

SEN12MS_BANDS = ["VV", "VH", "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
                 "B12"]


def rate(fn, seconds: float) -> tuple[float, float]:
    """Calls per second of `fn` by wall-clock and by this process's CPU time (one warm-up call first).

    On a shared machine the CPU-time rate is the steadier figure; both are printed.
    """
    fn()
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        n += 1
    return n / elapsed, n / (time.process_time() - cpu)


def bench_store(store: ChipStore, n_way: int, k_shot: int, q_query: int, seconds: float) -> None:
    print(f"store {store.path}: {len(store)} chips, {len(store.bands)} bands, {store.chip_size} px")
    print(f"  {'kind':14s} {'chips':>5s} | tasks/s (wall / cpu):  {'sample':>15s} {'+ tensors':>15s} "
          f"{'+ augment':>15s}")
    for kind in store.kinds:
        tasks = iter(TaskSampler(store, "train", kind, n_way, k_shot, q_query, seed=0))
        plain, augmented = BatchMaker(store), BatchMaker(store, augment=True)
        rng = np.random.default_rng(0)
        rates = [rate(lambda: next(tasks), seconds),
                 rate(lambda: plain.task_tensors(next(tasks)), seconds),
                 rate(lambda: augmented.task_tensors(next(tasks), rng), seconds)]
        task = next(tasks)
        cells = " ".join(f"{w:7.1f} / {c:7.1f}" for w, c in rates)
        print(f"  {kind:14s} {len(task.support) + len(task.query):5d} | {'':22s}{cells}")


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
            path = make_store(Path(tmp) / f"factory{size}", seed=0, chip_size=size, bands=SEN12MS_BANDS,
                              splits=("train",) * 6 + ("val", "test"))
            bench_store(ChipStore.open(path), args.n_way, args.k_shot, args.q_query, args.seconds)


if __name__ == "__main__":
    main()
