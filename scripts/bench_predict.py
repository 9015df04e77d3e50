"""Benchmark `landmeta adapt` and `landmeta predict` on CPU: seconds, peak memory, tiling overhead.

1. adapt a 13-band U-Net (SEN12MS-like, 128-px chips) on 5 labelled 256² tiles;
2. predict a 2448² RGB JPG (DeepGlobe-like) and a 13-band 2048² uint16 GeoTIFF, each in its own
   process: seconds and peak RSS; then, in another process, throughput in megapixels/s against the
   same model's bare forward pass over the same pixels (non-overlapping windows of the same size,
   tensors already in memory), alternated side by side;
3. peak memory against raster size (2048², 4096², 10000² RGB GeoTIFFs, one process each) with a
   model trained on chips downsampled 4x (so the sweep runs in minutes on 2 cores).

Every measurement runs in a fresh subprocess and reads its own ru_maxrss. Usage:
    python scripts/bench_predict.py [--work DIR] [--threads 2] [--sizes 2048 4096 10000]
                                    [--window 1024] [--overlap 32] [--batch 1]
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

S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
RGB = ["red", "green", "blue"]


def make_checkpoint(path: Path, bands: list[str], classes: int, chip_size: int, store_chip_size: int) -> Path:
    """The default U-Net of landmeta (resnet18, depth 3), random weights, saved as a checkpoint."""
    import torch

    from landmeta.config import Config
    from landmeta.meta.checkpoint import Checkpoint
    from landmeta.models import build_model

    torch.manual_seed(0)
    config = Config()
    config.task.kind = "segmentation"
    config.model.name = "unet"
    model = build_model(config.model, len(bands), classes, "segmentation")
    scale = 10000.0 if len(bands) > 3 else 255.0
    Checkpoint(method="maml", kind="segmentation", config=config, model_state=model.state_dict(), bands=tuple(bands),
               class_names=tuple(f"class {i}" for i in range(classes)), class_colors=None,
               norm_mean=(1000.0 / scale,) * len(bands), norm_std=(500.0 / scale,) * len(bands),
               chip_size=chip_size, store_chip_size=store_chip_size, in_channels=len(bands), num_classes=classes,
               step=0, provenance={"benchmark": True}).save(path)
    return path


def scene_rows(rows: int, width: int, bands: int, seed: int, dtype: str) -> np.ndarray:
    """Rows of a synthetic scene: 32-px class fields with class spectra plus noise."""
    rng = np.random.default_rng(seed)
    fields = rng.integers(0, 6, size=(rows // 32 + 1, width // 32 + 1))
    classes = np.kron(fields, np.ones((32, 32), dtype=np.int64))[:rows, :width]
    spectra = rng.uniform(0.2, 0.8, size=(6, bands))
    top = 255 if dtype == "uint8" else 10000
    values = spectra[classes].transpose(2, 0, 1) * top * 0.5 + rng.normal(0, top * 0.02, size=(bands, rows, width))
    return values.clip(1, top).astype(dtype)


def write_scene(path: Path, size: int, bands: int, dtype: str, seed: int = 0) -> Path:
    """A GeoTIFF (UTM 31N, 10 m), written 1024 rows at a time."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=bands, dtype=dtype,
                       crs="EPSG:32631", transform=from_origin(440000, 5400000, 10, 10), tiled=True) as dst:
        for row in range(0, size, 1024):
            rows = min(1024, size - row)
            dst.write(scene_rows(rows, size, bands, seed + row, dtype), window=Window(0, row, size, rows))
    return path


def write_jpg(path: Path, size: int) -> Path:
    from PIL import Image
    Image.fromarray(np.moveaxis(scene_rows(size, size, 3, 1, "uint8"), 0, -1)).save(path, quality=90)
    return path


def write_support(folder: Path, tiles: int = 5, size: int = 256) -> Path:
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin
    for i in range(tiles):
        image = scene_rows(size, size, 13, 100 + i, "uint16")
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        with rasterio.open(folder / "images" / f"tile{i}.tif", "w", driver="GTiff", width=size, height=size,
                           count=13, dtype="uint16", crs="EPSG:32631",
                           transform=from_origin(440000 + 3000 * i, 5400000, 10, 10)) as dst:
            dst.write(image)
        mask = (image[1] > image[2]).astype(np.uint8) + (image[7] > 5000).astype(np.uint8) * 2
        Image.fromarray(mask).save(folder / "masks" / f"tile{i}.png")
    return folder


# ---- measurements, each run in a fresh process -------------------------------------------------------

def child_adapt(args: argparse.Namespace) -> dict:
    from landmeta.inference.adaptation import AdaptOptions, adapt_checkpoint
    started = time.perf_counter()
    info = adapt_checkpoint(Path(args.ckpt), Path(args.support), Path(args.out), AdaptOptions(overwrite=True))
    return {"seconds": time.perf_counter() - started, "chips": info["chips"], "steps": info["steps"]}


def child_predict(args: argparse.Namespace) -> dict:
    """Predict once (seconds, peak memory); with --bare, alternate twice: the bare forward pass, the
    sliding-window pipeline alone (read, forward, blend, write the two GeoTIFFs; model built before
    the clock) and the whole command (model build, quick-look, PNG/QML/JSON outputs), keeping the
    fastest of each (the machine is shared: the minimum is the least disturbed)."""
    import rasterio

    from landmeta.inference.mapping import PredictOptions, predict_maps
    from landmeta.meta.checkpoint import Checkpoint
    ckpt = Checkpoint.load(args.ckpt)
    with rasterio.open(args.input) as src:
        height, width = src.height, src.width
    options = PredictOptions(window=args.window, overlap=args.overlap, batch=args.batch, overwrite=True)
    times: dict[str, list[tuple[float, float]]] = {"bare": [], "pipeline": [], "command": []}
    for _ in range(2 if args.bare else 1):
        if args.bare:
            times["bare"].append(bare_forward(ckpt, height, width, args.window, args.batch))
            times["pipeline"].append(pipeline(ckpt, Path(args.input), Path(args.out), options))
        times["command"].append(clocked(predict_maps, ckpt, Path(args.input), Path(args.out), options))
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in times.items() if v}
    return {"pixels": height * width, **{f"{k}_wall": w for k, (w, _) in best.items()},
            **{f"{k}_cpu": c for k, (_, c) in best.items()}}


def clocked(fn, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def pipeline(ckpt: dict, path: Path, out: Path, options) -> tuple[float, float]:
    """(wall, CPU) seconds of the sliding window alone: strips predicted and written as the two
    GeoTIFFs (model built and scene opened before the clock, as for the bare forward pass)."""
    import warnings

    import rasterio

    from landmeta.inference.mapping import legend_of, resolve_window, window_model
    from landmeta.inference.maps import GDAL_CACHE_BYTES, _write_rasters
    from landmeta.inference.predict import predict_strips
    from landmeta.inference.scene import open_scene
    wm = window_model(ckpt)
    window, overlap = resolve_window(ckpt, options)
    with open_scene(path, list(ckpt.bands)) as scene, rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wall, cpu = time.perf_counter(), time.process_time()
        strips = predict_strips(scene, wm, window, overlap, options.batch)
        _write_rasters(scene, strips, out / "pipeline_classes.tif", out / "pipeline_confidence.tif",
                       legend_of(ckpt), {})
        return time.perf_counter() - wall, time.process_time() - cpu


def bare_forward(ckpt: dict, height: int, width: int, window: int, batch: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the model alone over height x width pixels: non-overlapping windows of
    the sizes predict uses (last ones cut the same way), batched alike, inputs already in memory."""
    import torch

    from landmeta.data.chips import sliding_windows
    from landmeta.inference.mapping import window_model
    from landmeta.inference.predict import _batches
    wm = window_model(ckpt)
    ys = sliding_windows(height, window, 0, wm.edge_multiple, False)
    xs = sliding_windows(width, window, 0, wm.edge_multiple, False)
    groups = [(h, xs[g[0]][1], len(g)) for _, h in ys for g in _batches(xs, batch)]
    bands = len(ckpt.bands)
    inputs = {(h, w, n): torch.randn(n, bands, wm.model_size(h), wm.model_size(w)) for h, w, n in set(groups)}
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for key in groups:
            torch.softmax(wm.model(inputs[key]), dim=1)
    return time.perf_counter() - wall, time.process_time() - cpu


def run_child(kind: str, threads: int, **kwargs: object) -> dict:
    argv = [sys.executable, __file__, "--child", kind, "--threads", str(threads)]
    for key, value in kwargs.items():
        if value is True:
            argv.append(f"--{key}")
        elif value is not None:
            argv += [f"--{key}", str(value)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="*", default=[2048, 4096, 10000],
                        help="raster sides of the memory sweep (none: skip it)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    for name in ("ckpt", "support", "out", "input"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        import torch
        torch.set_num_threads(args.threads)
        result = {"adapt": child_adapt, "predict": child_predict}[args.child](args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_predict_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder {work}; {args.threads} torch threads; window {args.window}, overlap {args.overlap}, "
          f"batch {args.batch}")
    s2 = make_checkpoint(work / "s2.pt", S2_BANDS, 10, 128, 128)
    rgb = make_checkpoint(work / "rgb.pt", RGB, 6, 512, 512)
    support = write_support(work / "support")
    r = run_child("adapt", args.threads, ckpt=s2, support=support, out=work / "region.pt")
    print(f"adapt: 5 tiles of 256² -> {r['chips']} chips, {r['steps']} steps: {r['seconds']:.1f} s, "
          f"peak RSS {r['peak_rss_mb']:.0f} MB")

    cases = [("RGB JPG 2448²", rgb, write_jpg(work / "deepglobe_sat.jpg", 2448)),
             ("13-band GeoTIFF 2048²", work / "region.pt", write_scene(work / "s2_2048.tif", 2048, 13, "uint16"))]
    for label, ckpt, scene in cases:
        common = {"ckpt": ckpt, "input": scene, "out": work / "maps", "window": args.window,
                  "overlap": args.overlap, "batch": args.batch}
        alone = run_child("predict", args.threads, **common)
        r = run_child("predict", args.threads, bare=True, **common)
        mp = r["pixels"] / 1e6
        print(f"predict {label}: {alone['command_wall']:.1f} s, peak RSS {alone['peak_rss_mb']:.0f} MB")
        for clock in ("wall", "cpu"):
            bare, pipe, whole = r[f"bare_{clock}"], r[f"pipeline_{clock}"], r[f"command_{clock}"]
            print(f"  side by side, best of 2, {clock} time: bare forward {bare:.1f} s ({mp / bare:.3f} MP/s); "
                  f"sliding window {pipe:.1f} s ({mp / pipe:.3f} MP/s, ratio {bare / pipe:.2f}); "
                  f"whole command {whole:.1f} s ({mp / whole:.3f} MP/s, ratio {bare / whole:.2f})")

    small = make_checkpoint(work / "rgb_x4.pt", RGB, 6, 64, 256)  # trained on 256-px chips resized to 64
    for size in args.sizes:
        scene = write_scene(work / f"rgb_{size}.tif", size, 3, "uint8")
        r = run_child("predict", args.threads, ckpt=small, input=scene, out=work / "maps", window=args.window,
                      overlap=args.overlap, batch=args.batch)
        print(f"memory sweep {size}²: {r['command_wall']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB")
        scene.unlink()


if __name__ == "__main__":
    main()
