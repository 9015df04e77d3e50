"""Benchmark building a support set from vector labels (`landmeta adapt --scene --labels`) on a big scene.

Writes a synthetic 10,980² 4-band uint16 GeoTIFF (tiled, GDAL's default 256² blocks, deflate; UTM 31N, 10 m: the size of
a Sentinel-2 tile) and, for each count, a GeoPackage of that many random polygons (rotated
quadrilaterals of 10-60 px, 6 classes, saved in EPSG:4326) spread over the scene. Then, each in a
fresh process: `read_label_support` with a U-Net checkpoint trained on 256-px store chips resized
to 128 — seconds (wall and this process's CPU time), peak RSS, RSS before the call (imports, checkpoint), and the size of the
support tensors it returns (which grow with the windows by design: they are what adapt trains on).

    python scripts/bench_labels.py [--work DIR] [--counts 10 100 1000] [--size 10980]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BANDS = ["B02", "B03", "B04", "B08"]
CLASSES = ["Forest", "Shrubland", "Grassland", "Cropland", "Urban", "Water"]


def write_scene(path: Path, size: int) -> Path:
    """A tiled, deflate-compressed uint16 GeoTIFF of 64-px class fields with class spectra plus noise."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    spectra = rng.uniform(500, 4000, size=(len(CLASSES), len(BANDS)))
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=len(BANDS), dtype="uint16",
                       crs="EPSG:32631", transform=from_origin(440000, 5400000, 10, 10), tiled=True,
                       compress="deflate") as dst:
        for row in range(0, size, 1024):
            rows = min(1024, size - row)
            fields = rng.integers(0, len(CLASSES), size=(rows // 64 + 1, size // 64 + 1))
            classes = np.kron(fields, np.ones((64, 64), dtype=np.int64))[:rows, :size]
            noise = rng.integers(0, 200, size=(len(BANDS), rows, size), dtype=np.uint16)
            dst.write(spectra[classes].transpose(2, 0, 1).astype(np.uint16) + noise, window=Window(0, row, size, rows))
        for i, band in enumerate(BANDS):
            dst.set_band_description(i + 1, band)
    return path


def write_labels(path: Path, count: int, size: int, seed: int = 1) -> Path:
    """`count` random rotated quadrilaterals (10-60 px a side) over the scene, saved in EPSG:4326."""
    import geopandas as gpd
    from rasterio.transform import from_origin
    from shapely.geometry import Polygon

    transform = from_origin(440000, 5400000, 10, 10)
    rng = np.random.default_rng(seed)
    geoms = []
    for _ in range(count):
        r, c = rng.uniform(40, size - 40, size=2)
        h, w = rng.uniform(10, 60, size=2) / 2
        a = rng.uniform(0, np.pi)
        corners = [(c + dx * np.cos(a) - dy * np.sin(a), r + dx * np.sin(a) + dy * np.cos(a))
                   for dx, dy in ((-w, -h), (w, -h), (w, h), (-w, h))]
        geoms.append(Polygon([transform @ xy for xy in corners]))
    names = [CLASSES[i] for i in rng.integers(0, len(CLASSES), size=count)]
    gpd.GeoDataFrame({"class": names}, geometry=geoms, crs="EPSG:32631").to_crs("EPSG:4326").to_file(path)
    return path


def make_checkpoint(path: Path) -> Path:
    """The default U-Net (random weights) trained on 256-px store chips resized to 128."""
    import torch
    from landmeta.config import Config
    from landmeta.meta.checkpoint import Checkpoint
    from landmeta.models import build_model

    torch.manual_seed(0)
    config = Config()
    config.task.kind, config.model.name = "segmentation", "unet"
    model = build_model(config.model, len(BANDS), len(CLASSES), "segmentation")
    Checkpoint(method="maml", kind="segmentation", config=config, model_state=model.state_dict(),
               bands=tuple(BANDS), class_names=tuple(CLASSES), class_colors=None, norm_mean=(0.2,) * len(BANDS),
               norm_std=(0.1,) * len(BANDS), chip_size=128, store_chip_size=256, in_channels=len(BANDS),
               num_classes=len(CLASSES), step=0, provenance={"benchmark": True}).save(path)
    return path


def child(args: argparse.Namespace) -> dict:
    """One measurement, in this (fresh) process."""
    import warnings

    from landmeta.inference.labels import LabelSource, read_label_support
    from landmeta.meta.checkpoint import Checkpoint

    ckpt = Checkpoint.load(args.checkpoint)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings(record=True):
        data = read_label_support(LabelSource(args.scene, args.labels), ckpt)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    tensors = (data.support.x.numel() * 4 + data.support.y.numel() * 8) / 2 ** 20
    return {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "windows": len(data.windows), "overlap_pixels": data.overlap_pixels,
            "rss_before_mb": round(before), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "support_tensors_mb": round(tensors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="folder for the scene and labels (default: a temp folder)")
    parser.add_argument("--counts", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--size", type=int, default=10980)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scene", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--labels", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        scene = write_scene(work / "scene.tif", args.size)
        print(f"scene {args.size}² x {len(BANDS)} bands uint16, tiled deflate: {scene.stat().st_size / 2 ** 20:.0f} MB "
              f"on disk, written in {time.perf_counter() - started:.0f} s")
        checkpoint = make_checkpoint(work / "unet.pt")
        print("| polygons | windows | seconds (wall) | seconds (CPU) | peak RSS | RSS before | support tensors "
              "| peak - before - tensors |")
        print("|---|---|---|---|---|---|---|---|")
        for count in args.counts:
            labels = write_labels(work / f"labels-{count}.gpkg", count, args.size)
            done = subprocess.run([sys.executable, __file__, "--child", "--checkpoint", str(checkpoint),
                                   "--scene", str(scene), "--labels", str(labels)],
                                  capture_output=True, text=True, check=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            rest = r["peak_rss_mb"] - r["rss_before_mb"] - r["support_tensors_mb"]
            print(f"| {count} | {r['windows']} | {r['seconds']} | {r['cpu_seconds']} | {r['peak_rss_mb']} MB | {r['rss_before_mb']} MB | "
                  f"{r['support_tensors_mb']} MB | {rest} MB |", flush=True)


if __name__ == "__main__":
    main()
