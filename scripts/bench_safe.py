"""Benchmark reading a Sentinel-2 L2A `.SAFE` product (JPEG 2000) against the same pixels as a folder of
GeoTIFF bands: seconds per prediction window, peak memory, the quick-look and the SCL count.

A synthetic full-size product is written first (10,980² at 10 m: B02 B03 B04 B08; 5,490² at 20 m:
B05 B06 B07 B8A B11 B12 and SCL; 1,830² at 60 m: B01 B09; lossless JPEG 2000 with GDAL's default
1024² tiles), and the same bands as tiled GeoTIFFs (256² tiles, deflate). Pixels are 32-px fields of
6 classes with class spectra plus noise; the SCL has square clouds and shadows over about 20 %.

Each measurement runs in a fresh process reading its own ru_maxrss (the inputs are written in one
too, as a child starts with its parent's RSS as its peak), alternating product and folder, best of
`--repeats`: every window of `predict`'s layout (`--window`, `--overlap`), read strip by strip as
`predict` does (`Scene.read`, with the GDAL block cache `landmeta predict` sets unless `--cache-mb`);
then the quick-look (`Scene.overview`) and, for the product, the SCL count. Usage:
    python scripts/bench_safe.py [--work DIR] [--size 10980] [--bands 12|4] [--repeats 2] [--cache-mb 64]
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

BANDS_10 = ["B02", "B03", "B04", "B08"]
BANDS_20 = ["B05", "B06", "B07", "B8A", "B11", "B12"]
BANDS_60 = ["B01", "B09"]
ORDER = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
STRIP = 1024  # rows generated and written at a time


def band_rows(row: int, rows: int, width: int, band: int, cell: int) -> np.ndarray:
    """uint16 DN of rows [row, row + rows) of one band: fields of `cell` pixels, class spectra, noise."""
    fields = np.random.default_rng(row // cell).integers(0, 6, size=(rows // cell + 2, width // cell + 1))
    first = row % cell
    classes = np.kron(fields, np.ones((cell, cell), dtype=np.int64))[first:first + rows, :width]
    spectra = np.random.default_rng(1000 + band).uniform(400, 4000, size=6)
    noise = np.random.default_rng((row + 1) * 100 + band).normal(0, 120, size=(rows, width))
    return (spectra[classes] + noise).clip(1, 10000).astype(np.uint16)


def write_band(path: Path, size: int, res: int, band: int, driver: str) -> None:
    import rasterio
    import rasterio.shutil
    from rasterio.transform import from_origin
    from rasterio.windows import Window
    side = size * 10 // res
    tif = path.with_suffix(".tif")
    with rasterio.open(tif, "w", driver="GTiff", width=side, height=side, count=1, dtype="uint16",
                       crs="EPSG:32629", transform=from_origin(600000, 5800020, res, res), tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate") as dst:
        for row in range(0, side, STRIP):
            rows = min(STRIP, side - row)
            dst.write(band_rows(row, rows, side, band, 32 * 10 // res), 1, window=Window(0, row, side, rows))
    if driver == "JP2OpenJPEG":
        rasterio.shutil.copy(tif, path, driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES")
        tif.unlink()


def write_scl(path: Path, size: int) -> None:
    """SCL at 20 m: vegetation / bare soil / water, with square clouds (8, 9), shadows (3) and cirrus (10)."""
    import rasterio
    import rasterio.shutil
    from rasterio.transform import from_origin
    side = size // 2
    rng = np.random.default_rng(7)
    scl = np.kron(rng.choice(np.array([4, 5, 6], dtype=np.uint8), size=(side // 64 + 1, side // 64 + 1)),
                  np.ones((64, 64), dtype=np.uint8))[:side, :side]
    for _ in range(max(1, side // 200)):
        r, c, s = rng.integers(0, side), rng.integers(0, side), rng.integers(40, 240)
        scl[r:r + s, c:c + s] = rng.choice([8, 9, 10])
        scl[r + s:r + s + s // 2, c:c + s] = 3  # its shadow
    tif = path.with_suffix(".tif")
    with rasterio.open(tif, "w", driver="GTiff", width=side, height=side, count=1, dtype="uint8", crs="EPSG:32629",
                       transform=from_origin(600000, 5800020, 20, 20)) as dst:
        dst.write(scl, 1)
    rasterio.shutil.copy(tif, path, driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES")
    tif.unlink()


def make_inputs(work: Path, size: int) -> tuple[Path, Path]:
    """The product and the GeoTIFF band folder (written once; reused when present)."""
    product = work / "S2B_MSIL2A_20240601T113319_N0510_R080_T29UPU_20240601T140000.SAFE"
    folder = work / "T29UPU_20240601_bands"
    done = work / f"inputs-{size}.done"
    if done.exists():
        return product, folder
    images = product / "GRANULE" / "L2A_T29UPU_A037000_20240601T113319" / "IMG_DATA"
    folder.mkdir(parents=True, exist_ok=True)
    for res, bands in ((10, BANDS_10), (20, BANDS_20), (60, BANDS_60)):
        (images / f"R{res}m").mkdir(parents=True, exist_ok=True)
        for band in bands:
            started = time.perf_counter()
            write_band(images / f"R{res}m" / f"T29UPU_20240601T113319_{band}_{res}m.jp2", size, res,
                       ORDER.index(band), "JP2OpenJPEG")
            write_band(folder / f"T29UPU_20240601_{band}.tif", size, res, ORDER.index(band), "GTiff")
            print(f"  wrote {band} at {res} m in {time.perf_counter() - started:.0f} s", flush=True)
    write_scl(images / "R20m" / "T29UPU_20240601T113319_SCL_20m.jp2", size)
    done.write_text("ok\n")
    return product, folder


def du(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


# ---- measurements, each run in a fresh process -------------------------------------------------------

def child_read(args: argparse.Namespace) -> dict:
    """Every window of predict's layout, strip by strip, as predict reads them (GDAL cache as predict's)."""
    import rasterio
    from landmeta.inference.maps import GDAL_CACHE_BYTES
    from landmeta.inference.predict import window_layout
    from landmeta.inference.scene import open_scene
    bands = ORDER if args.bands == 12 else BANDS_10
    times, masked = [], 0
    started = time.perf_counter(), time.process_time()
    with open_scene(Path(args.input), bands, warn=False) as scene:
        cache = max(GDAL_CACHE_BYTES, scene.cache_bytes) if args.cache_mb is None else args.cache_mb * 2**20
        ys = window_layout(scene.height, args.window, args.overlap, 32, False)
        xs = window_layout(scene.width, args.window, args.overlap, 32, False)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with rasterio.Env(GDAL_CACHEMAX=cache):
            for y, h in ys:
                for x, w in xs:
                    t = time.perf_counter()
                    _, valid = scene.read(y, x, h, w)
                    times.append(time.perf_counter() - t)
                    masked += int((~valid).sum())
    wall, cpu = time.perf_counter() - started[0], time.process_time() - started[1]
    return {"windows": len(times), "wall": wall, "cpu": cpu, "mean": float(np.mean(times)),
            "median": float(np.median(times)), "max": float(np.max(times)), "invalid": masked,
            "rss_before_mb": before, "cache_mb": cache / 2**20}


def child_extras(args: argparse.Namespace) -> dict:
    """The quick-look (natural colours, 1024 px a side) and the SCL count, under predict's block cache."""
    import rasterio
    from landmeta.inference.maps import GDAL_CACHE_BYTES
    from landmeta.inference.scene import open_scene
    bands = ORDER if args.bands == 12 else BANDS_10
    with open_scene(Path(args.input), bands, warn=False) as scene, \
            rasterio.Env(GDAL_CACHEMAX=max(GDAL_CACHE_BYTES, scene.cache_bytes)):
        t = time.perf_counter()
        scene.overview(1024, [bands.index("B04"), bands.index("B03"), bands.index("B02")])
        quicklook = time.perf_counter() - t
        t = time.perf_counter()
        count = scene.masked_count()
        counted = time.perf_counter() - t
    return {"quicklook": quicklook, "count": counted if count else None,
            "masked_percent": count.percent if count else None}


def child_make(args: argparse.Namespace) -> dict:
    product, folder = make_inputs(Path(args.input), args.size)
    return {"product": str(product), "folder": str(folder)}


def run_child(kind: str, args: argparse.Namespace, path: Path) -> dict:
    argv = [sys.executable, __file__, "--child", kind, "--input", str(path), "--bands", str(args.bands),
            "--window", str(args.window), "--overlap", str(args.overlap)]
    if args.cache_mb is not None:
        argv += ["--cache-mb", str(args.cache_mb)]
    if kind == "make":
        argv += ["--size", str(args.size)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one; inputs are reused)")
    parser.add_argument("--size", type=int, default=10980, help="side of the 10 m bands (a multiple of 6)")
    parser.add_argument("--bands", type=int, choices=(4, 12), default=12, help="model bands: 4 (10 m) or all 12")
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache-mb", type=int, help="GDAL block cache while reading windows "
                                                    "(default: landmeta predict's)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = {"read": child_read, "extras": child_extras, "make": child_make}[args.child](args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_safe_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder {work}; {args.size}² at 10 m; {args.bands} bands; window {args.window}, "
          f"overlap {args.overlap}; GDAL cache {f'{args.cache_mb} MB' if args.cache_mb else 'as predict sets it'}",
          flush=True)
    started = time.perf_counter()
    made = run_child("make", args, work)  # in a child: the parent stays small, and children inherit
    product, folder = Path(made["product"]), Path(made["folder"])  # its RSS as their starting peak
    print(f"inputs ready in {time.perf_counter() - started:.0f} s: product {du(product):.0f} MiB (JPEG 2000), "
          f"band folder {du(folder):.0f} MiB (GeoTIFF, deflate)", flush=True)
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for label, path in (("product", product), ("folder", folder)):
            r = run_child("read", args, path)
            print(f"  {label}: {r['windows']} windows in {r['wall']:.1f} s (CPU {r['cpu']:.1f} s), per window "
                  f"mean {r['mean']:.3f} s, median {r['median']:.3f} s, max {r['max']:.3f} s; "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB ({r['rss_before_mb']:.0f} MB before the reads); "
                  f"invalid window pixels {r['invalid']}; GDAL cache {r['cache_mb']:.0f} MB", flush=True)
            if label not in best or r["wall"] < best[label]["wall"]:
                best[label] = r
    for label, path in (("product", product), ("folder", folder)):
        r = run_child("extras", args, path)
        count = f"; SCL count {r['count']:.1f} s ({r['masked_percent']:.1f} % masked)" if r["count"] else ""
        print(f"  {label}: quick-look {r['quicklook']:.1f} s{count}; peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    p, f = best["product"], best["folder"]
    print(f"best of {args.repeats}: product {p['wall']:.1f} s ({p['median']:.3f} s a window), folder "
          f"{f['wall']:.1f} s ({f['median']:.3f} s a window): ratio {p['wall'] / f['wall']:.2f}")


if __name__ == "__main__":
    main()
