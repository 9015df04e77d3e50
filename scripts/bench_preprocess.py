"""Preprocessing benchmark: throughput against a bare rasterio read of the same files, and peak memory.

Writes SEN12MS-layout GeoTIFF triplets (256² patches: S1 float32 x2, S2 uint16 x13, LC uint16 x4)
for two dataset sizes, then, each in a fresh subprocess (so peak RSS is its own):
  bare  - open and read every band of every s1/s2/lc file with rasterio (the I/O floor);
  store - `preprocess("sen12ms", ...)` of the same files into a chip store.
The two alternate `--repeats` times (so both see the same load on a shared machine); prints the
median patches/s of each, their ratio, the median CPU time per patch (preprocess: its own and its
worker processes') and the peak resident memory of any run (preprocess: its own and its largest
worker's). Library imports happen before the clock in both; the page cache is warmed first, so
both read from memory.

    .venv/bin/python scripts/bench_preprocess.py [--sizes 32 128] [--repeats 5] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SEASONS = ["ROIs1158_spring", "ROIs1868_summer", "ROIs1970_fall", "ROIs2017_winter"]
PATCHES_PER_SCENE = 4


def make_dataset(root: Path, patches: int, seed: int = 0) -> None:
    import rasterio
    from rasterio.transform import from_origin
    rng = np.random.default_rng(seed)
    igbp = np.array([1, 6, 8, 10, 11, 12, 13, 16, 17], dtype=np.uint16)
    for k in range(patches):
        scene, p = divmod(k, PATCHES_PER_SCENE)
        season = SEASONS[scene % len(SEASONS)]
        transform = from_origin(300000 + scene * 30000 + p * 2560, 5200000, 10, 10)
        arrays = {"s1": rng.normal(-15, 4, (2, 256, 256)).astype(np.float32),
                  "s2": rng.integers(1, 8000, (13, 256, 256), dtype=np.uint16),
                  "lc": np.repeat(igbp[rng.integers(0, 9, (1, 32, 32))].repeat(8, 1).repeat(8, 2), 4, 0)}
        for kind, arr in arrays.items():
            path = root / season / f"{kind}_{scene}" / f"{season}_{kind}_{scene}_p{p}.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            with rasterio.open(path, "w", driver="GTiff", height=256, width=256, count=arr.shape[0],
                               dtype=arr.dtype, crs="EPSG:32632", transform=transform) as dst:
                dst.write(arr)


def child(mode: str, root: Path, out: Path) -> None:
    """One measured run; prints JSON with wall and CPU seconds and peak RSS (MiB)."""
    if mode == "bare":
        import rasterio
        files = sorted(root.glob("*/*/*.tif"))
        start, cpu = time.perf_counter(), time.process_time()
        total = 0
        for path in files:
            with rasterio.open(path) as src:
                total += src.read().nbytes
        seconds = time.perf_counter() - start
    else:
        import cv2, geopandas, pyogrio, tqdm  # noqa: F401  imported before the clock: start-up, not throughput
        from landmeta.data.preprocess import PreprocessOptions, preprocess
        shutil.rmtree(out, ignore_errors=True)  # the previous run's store: removing it is not preprocessing
        start, cpu = time.perf_counter(), time.process_time()
        preprocess("sen12ms", root, out, PreprocessOptions(overwrite=True))
        seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu  # this process only; the workers' CPU time is in `workers_cpu`
    own, workers = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    print(json.dumps({"seconds": seconds, "cpu": cpu, "workers_cpu": workers.ru_utime + workers.ru_stime,
                      "peak_mib": own.ru_maxrss / 1024, "worker_peak_mib": workers.ru_maxrss / 1024}))


def measure(mode: str, root: Path, out: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", mode, str(root), str(out)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 128], help="patches per dataset")
    parser.add_argument("--repeats", type=int, default=5, help="alternated runs of each; the median is reported")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    print("patches/s by wall time; ratio = preprocess / bare read; CPU ms per patch (preprocess: main process + "
          "workers); peak resident memory in MiB (preprocess: main process / largest worker)")
    print(f"{'patches':>8} {'bare':>7} {'prep':>7} {'ratio':>6} {'CPU bare':>9} {'CPU prep':>9} "
          f"{'peak bare':>10} {'peak prep':>12}")
    try:
        for size in args.sizes:
            root, out = work / f"raw{size}", work / f"store{size}"
            make_dataset(root, size)
            measure("bare", root, out)  # warm the page cache: both runs read from memory
            bare, store = [], []
            for _ in range(args.repeats):  # alternated, so both see the same machine load
                bare.append(measure("bare", root, out))
                store.append(measure("store", root, out))
            b = {k: statistics.median(r[k] for r in bare) for k in ("seconds", "cpu")}
            s = {k: statistics.median(r[k] for r in store) for k in ("seconds", "cpu", "workers_cpu")}
            print(f"{size:>8} {size / b['seconds']:>7.1f} {size / s['seconds']:>7.1f} {b['seconds'] / s['seconds']:>6.2f} "
                  f"{b['cpu'] / size * 1000:>9.1f} {(s['cpu'] + s['workers_cpu']) / size * 1000:>9.1f} "
                  f"{max(r['peak_mib'] for r in bare):>10.0f} {max(r['peak_mib'] for r in store):>6.0f} / "
                  f"{max(r['worker_peak_mib'] for r in store):>3.0f}")
            shutil.rmtree(root)
            shutil.rmtree(out)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
