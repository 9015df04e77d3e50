"""Evaluation speed: fine-tuning with 1 vs 2 torch threads, and `evaluate` with 1 vs 2 worker processes.

Usage: python scripts/bench_evaluate.py [--tasks 6]. Builds a small store with tests/store_factory.py
and untrained checkpoints (the cost of evaluation does not depend on training), in a temporary folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from store_factory import make_store  # noqa: E402
from test_evaluate import write_checkpoint  # noqa: E402

from landmeta.config import load_config  # noqa: E402
from landmeta.data.store import ChipStore  # noqa: E402
from landmeta.data.tasks import load_or_create_tasks  # noqa: E402
from landmeta.data.transforms import BatchMaker  # noqa: E402
from landmeta.evaluation.protocol import evaluate  # noqa: E402
from landmeta.meta.adapt import adapt  # noqa: E402
from landmeta.meta.checkpoint import Checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = ChipStore.open(make_store(root / "store", chip_size=32))
        runs = [write_checkpoint(root / f"{m}.pt", store, m, "classification") for m in ("maml", "pretrain")]
        ckpt = Checkpoint.load(runs[1])
        model = ckpt.model()
        task = load_or_create_tasks(store, "val", "classification", 4, 2, 4, 1, 0)[0]
        t = BatchMaker(store).task_tensors(task)
        print("fine-tune 50 Adam steps, 4-way 2-shot, tiny conv, 32 px (wall s / cpu s):")
        for threads in (1, 2):
            torch.set_num_threads(threads)
            wall, cpu = time.perf_counter(), time.process_time()
            adapt(ckpt, model, t.x_support, t.y_support, steps=50, lr=0.01, classes=task.classes)
            print(f"  torch threads {threads}: {time.perf_counter() - wall:.2f} / {time.process_time() - cpu:.2f}")
        torch.set_num_threads(1)
        config = load_config("tiny.yaml", ["task.q_query=4", "task.val_tasks=4", "eval.finetune_steps=[10,50]",
                                           "eval.finetune_lrs=[0.001,0.01]", "eval.finetune_layers=[all,head]",
                                           "eval.rf_trees=100"])
        print(f"evaluate: shots 0,1,2, {args.tasks} test tasks, 4 meta-val tasks x 8 grid candidates (wall s):")
        for workers in (1, 2):
            wall = time.perf_counter()
            evaluate(store.path, runs, root / f"res{workers}", config, shots=[0, 1, 2], tasks=args.tasks,
                     workers=workers)
            print(f"  workers {workers}: {time.perf_counter() - wall:.1f}")


if __name__ == "__main__":
    main()
