"""Task sampling streams a chip store larger than the machine's memory.

Builds a store whose images.npy is larger than this machine's RAM (a sparse file: the chips of a
small generated store, repeated, at 256 px; the new rows read as zeros, which costs no disk), then,
in a child process whose heap is capped with RLIMIT_DATA (private, writable memory: what reading
the store into memory would need; the store's read-only memory map does not count), samples
meta-training tasks spread over the whole store as meta-training draws them (`landmeta.meta.feed`,
in DataLoader worker processes, which inherit the cap).
Prints the store size, the cap, the peak resident memory, and checks that loading images.npy
into memory fails under the same cap.

    .venv/bin/python scripts/scale_out_memory.py --gib 32 --tasks 100 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from store_factory import make_store  # noqa: E402

CHILD = r"""
import resource, sys, time
import numpy as np
from landmeta.data.store import ChipStore
from landmeta.data.tasks import sample_task
from landmeta.data.transforms import BatchMaker
from landmeta.meta.distributed import World
from landmeta.meta.feed import MetaBatches, steps_data

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
path, tasks, headroom, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
store = ChipStore.open(path)
batches = BatchMaker(store, chip_size=32)
cap = status("VmData") + headroom
resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))  # inherited by the DataLoader workers
data = MetaBatches(store, batches, "classification", 4, 1, 2, 1, 0, World())  # one task per step
started = time.perf_counter()
made = sum(len(draws) for draws in steps_data(data, 0, tasks, workers))  # as meta-training draws them
seconds = time.perf_counter() - started
touched = set()
for step in range(tasks):  # the same tasks again, indices only
    task = sample_task(store, "train", "classification", np.random.default_rng([0, step, 0]), 4, 1, 2)
    touched.update(task.support.tolist() + task.query.tolist())
try:
    np.load(store.path / "images.npy")
    loaded = "loaded (the cap did not bind)"
except MemoryError:
    loaded = "MemoryError"
workers_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(f"cap {cap / 2**30:.2f} GiB (heap after imports + {headroom / 2**30:.2f} GiB); {workers} DataLoader "
      f"workers; {made} tasks, {len(touched)} distinct chips from index {min(touched)} to {max(touched)}, "
      f"{made / seconds:.1f} tasks/s; peak RSS {status('VmHWM') / 2**30:.2f} GiB (largest worker "
      f"{workers_peak / 2**30:.2f} GiB); np.load(images.npy) without memory map: {loaded}")
"""


def build(small: Path, big: Path, gib: float) -> int:
    """A store with the small store's chips repeated, at 256 px, images.npy of about `gib` GiB; its chip count."""
    manifest = json.loads((small / "manifest.json").read_text())
    chips = pd.read_csv(small / "chips.csv", dtype={"tile": str, "region": str, "parent": str, "source": str},
                        keep_default_na=False)
    size, bands = 256, len(manifest["bands"])
    per_chip = bands * size * size * 4
    repeats = int(np.ceil(gib * 2**30 / per_chip / len(chips)))
    big.mkdir(parents=True)
    table = pd.concat([chips] * repeats, ignore_index=True)
    table["chip"] = np.arange(len(table))
    table.to_csv(big / "chips.csv", index=False)
    for name in ("regions.gpkg", "stats.json"):
        shutil.copy(small / name, big / name)
    manifest.update(num_chips=len(table), chip_size=size, kinds=["classification"])
    (big / "manifest.json").write_text(json.dumps(manifest))
    images = np.lib.format.open_memmap(big / "images.npy", mode="w+", dtype=np.float32,
                                       shape=(len(table), bands, size, size))  # sparse until written
    del images
    return len(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=32.0, help="size of images.npy in GiB")
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--headroom-mib", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (0: none)")
    args = parser.parse_args()
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    with tempfile.TemporaryDirectory() as tmp:
        small = make_store(Path(tmp) / "small", kinds=("classification",))
        n = build(small, Path(tmp) / "big", args.gib)
        size = (Path(tmp) / "big" / "images.npy").stat().st_size
        print(f"store: {n} chips, images.npy {size / 2**30:.1f} GiB; machine RAM {ram / 2**30:.1f} GiB")
        subprocess.run([sys.executable, "-c", CHILD, str(Path(tmp) / "big"), str(args.tasks),
                        str(args.headroom_mib * 2**20), str(args.workers)], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


if __name__ == "__main__":
    main()
