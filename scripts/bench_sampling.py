"""Benchmark: few-shot tasks per second of the task sampler next to the meta-training step that consumes them.

Usage:
    python scripts/bench_sampling.py                                # demo store, demo-cls and demo-seg configs
    python scripts/bench_sampling.py --store data/NAME --config configs/X.yaml [--config ...]

For each config, on tasks of the store's train regions, tasks/s of
  sample    - drawing a task (`sample_task`, chip indices only);
  + tensors - drawing and assembling its tensors (`BatchMaker.task_tensors`: read the memory-mapped
              chips, float16 -> float32, resize to the config's chip size, normalise), once with
              BatchMaker's cache of prepared chips off ("no cache") and once with it on (default);
  + augment - the same with the config's augmentation, exactly as `landmeta train` prepares a task;
  meta-step - one MAML meta-training step of the config's model (`landmeta.meta.maml.meta_step` over
              a meta-batch of prepared tasks, then the Adam step), per task of the meta-batch;
and the ratio of the training path (+ augment) to the meta-step. The measurements alternate
`--repeats` times and the fastest of each is kept (so the caches are warm, as they are after the
first pass of meta-training over the train chips); wall-clock and this process's CPU time are both
printed (on a shared machine the CPU-time figures are the steadier ones). One torch thread.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from landmeta.config import load_config
from landmeta.data.store import ChipStore
from landmeta.data.tasks import sample_task
from landmeta.data.transforms import BatchMaker
from landmeta.meta.maml import build_rates, meta_step
from landmeta.meta.run_setup import new_model, prepare

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STORE = ROOT / "demo" / "data" / "sen12ms"
DEFAULT_CONFIGS = [ROOT / "configs" / "demo-cls.yaml", ROOT / "configs" / "demo-seg.yaml"]


def rate(fn: Callable[[], int], seconds: float) -> tuple[float, float]:
    """Tasks per second of `fn` (which returns how many tasks it handled), by wall-clock and by this
    process's CPU time; one warm-up call first."""
    fn()
    tasks, start, cpu = 0, time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - start) < seconds:
        tasks += fn()
    return tasks / elapsed, tasks / (time.process_time() - cpu)


def bench_config(store: ChipStore, config_path: Path, seconds: float, repeats: int) -> None:
    config = load_config(config_path)
    setup = prepare(config, store)
    task, meta = config.task, config.meta
    kind = setup.kind
    plain = BatchMaker(store, config.data.bands, config.data.chip_size)
    uncached = BatchMaker(store, config.data.bands, config.data.chip_size, cache_mb=0)
    counter = iter(range(10**9))

    def draw() -> tuple:
        index = next(counter)
        rng = np.random.default_rng([config.seed, index])
        return sample_task(store, "train", kind, rng, task.n_way, task.k_shot, task.q_query), rng

    def sample() -> int:
        draw()
        return 1

    def tensors() -> int:
        plain.task_tensors(draw()[0])
        return 1

    def tensors_uncached() -> int:
        uncached.task_tensors(draw()[0])
        return 1

    def augmented() -> int:
        drawn, rng = draw()
        setup.batches.task_tensors(drawn, rng)
        return 1

    model = new_model(config, setup)
    rates = build_rates(model, meta)
    optimiser = torch.optim.Adam(list(model.parameters()) + list(rates.parameters()), lr=meta.outer_lr)
    global_head = kind == "classification" and meta.class_head == "global"
    batches = []
    for _ in range(4):  # a few prepared meta-batches, cycled: the step's cost does not depend on the draw
        drawn = [draw() for _ in range(meta.meta_batch)]
        made = [setup.batches.task_tensors(t, rng) for t, rng in drawn]
        rows = [torch.as_tensor(t.classes) for t, _ in drawn] if global_head else None
        batches.append(([(m.x_support, m.y_support, m.x_query, m.y_query) for m in made], rows))
    steps = iter(range(10**9))

    def step() -> int:
        index = next(steps)
        batch, rows = batches[index % len(batches)]
        optimiser.zero_grad(set_to_none=True)
        meta_step(model, rates, meta, batch, index, rows=rows)
        optimiser.step()
        return len(batch)

    names = ["sample", "+ tensors (no cache)", "+ tensors", "+ augment", "meta-step"]
    best = {name: (0.0, 0.0) for name in names}
    for _ in range(repeats):
        for name, fn in zip(names, (sample, tensors_uncached, tensors, augmented, step)):
            wall, cpu = rate(fn, seconds)
            best[name] = (max(best[name][0], wall), max(best[name][1], cpu))
    example = draw()[0]
    print(f"{config_path.name}: {kind}, {config.model.name} model, {len(example.support)} support + "
          f"{len(example.query)} query chips of {setup.batches.chip_size} px, meta-batch {meta.meta_batch}, "
          f"{meta.method}, {meta.inner_steps} inner step(s)")
    print(f"  {'tasks/s':21s} {'wall':>9s} {'cpu':>9s}")
    for name in names:
        print(f"  {name:21s} {best[name][0]:9.1f} {best[name][1]:9.1f}")
    train_path, stepping = best["+ augment"], best["meta-step"]
    print(f"  ratio (+ augment / meta-step): wall {train_path[0] / stepping[0]:.0f}x, "
          f"cpu {train_path[1] / stepping[1]:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="chip store (default: the demo's)")
    parser.add_argument("--config", type=Path, action="append", help="training config(s) (default: demo-cls, demo-seg)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--repeats", type=int, default=2, help="alternations of the measurements")
    args = parser.parse_args()
    if not (args.store / "manifest.json").is_file():
        raise SystemExit(f"{args.store}: no chip store; build the demo's with the first steps of scripts/demo.sh "
                         "or pass --store")
    torch.set_num_threads(1)
    store = ChipStore.open(args.store)
    print(f"store {store.path}: {len(store)} chips, {len(store.bands)} bands, {store.chip_size} px; torch threads: 1")
    for path in args.config or DEFAULT_CONFIGS:
        bench_config(store, path, args.seconds, args.repeats)


if __name__ == "__main__":
    main()
