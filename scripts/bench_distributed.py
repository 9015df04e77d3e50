"""Meta-training throughput (tasks per second) with 1 and N processes on this machine's CPUs.

Runs `landmeta train` on a generated store for each set-up, side by side in one invocation, and
reads the time per outer step from the run's metrics.csv (steps after a warm-up, the validation at
the last step left out), so process start-up and imports do not count.

    .venv/bin/python scripts/bench_distributed.py --steps 30 --meta-batch 4 --chip 64
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from store_factory import make_store  # noqa: E402


def run(store: Path, out: Path, nproc: int, threads: int, args: argparse.Namespace) -> float:
    """Tasks per second of one training run."""
    cmd = [sys.executable, "-m", "landmeta", "train", "--config", "tiny", "--data", str(store), "--out",
           str(out), "--no-progress", "--nproc", str(nproc), "--method", args.method,
           "--set", f"meta.steps={args.steps}", "--set", f"meta.meta_batch={args.meta_batch}",
           "--set", f"data.chip_size={args.chip}", "--set", f"model.width={args.width}",
           "--set", f"train.val_every={args.steps + 1}", "--set", f"train.ckpt_every={args.steps + 1}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    seconds = pd.read_csv(out / "metrics.csv").set_index("step")["seconds"]
    first, last = args.warmup, args.steps - 1  # the last step also validates
    return args.meta_batch * (last - first) / (seconds[last] - seconds[first])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--chip", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--method", default="maml")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    setups = [(1, 1), (1, args.nproc), (args.nproc, 1)]  # (processes, threads per process)
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(Path(tmp) / "store", chip_size=args.chip)
        rates: dict[tuple[int, int], list[float]] = {s: [] for s in setups}
        for r in range(args.repeats):  # interleaved, so that load from other users hits every set-up
            for nproc, threads in setups:
                rates[(nproc, threads)].append(run(store, Path(tmp) / f"run-{nproc}-{threads}-{r}", nproc,
                                                   threads, args))
    print(f"{args.method}, meta-batch {args.meta_batch}, {args.chip} px, conv width {args.width}, "
          f"{os.cpu_count()} CPUs; tasks/s per repeat, best of {args.repeats}")
    base = max(rates[(1, 1)])
    for (nproc, threads), values in rates.items():
        best = max(values)
        shown = ", ".join(f"{v:.2f}" for v in values)
        line = f"{nproc} process(es) x {threads} thread(s): {best:6.2f} tasks/s ({shown}); speed-up {best / base:.2f}"
        if nproc > 1:
            line += f", scaling efficiency {best / base / nproc:.0%}"
        print(line)


if __name__ == "__main__":
    main()
