"""Benchmark the map viewer page of `landmeta predict --html`: build time, page size, memory.

For each side in --sizes: a synthetic 4-band uint16 GeoTIFF scene (scripts/bench_labels.py's, UTM
31N, 10 m, tiled, deflate) and a class map of 6 classes in 64-px fields with a nodata corner,
written by predict's own writer strip by strip (which also counts the pixels). Plus one real
DeepGlobe tile (2448² RGB JPG, no georeference) with its real mask as the class map. Then, each
in a fresh process: `write_viewer` alone — seconds (wall, CPU), peak RSS and RSS before the call
(imports), page size and the two images' share; for georeferenced scenes, the error of the page's
lon/lat (bilinear in its grid, as its script does) against pyproj at 10,000 random points.

    python scripts/bench_viewer.py [--work DIR] [--sizes 2048 10980]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_labels import BANDS, CLASSES, write_scene  # noqa: E402

DEEPGLOBE = Path(__file__).resolve().parents[2] / "shared" / "data" / "deepglobe-dev" / "tiles" / "10233_sat.jpg"
RGB = ["red", "green", "blue"]


def class_strips(height: int, width: int, rows: int = 1024, seed: int = 0):
    """Strips of 64-px class fields, the top-left 512² nodata, as predict would stream them."""
    from landmeta.inference.predict import NODATA, Strip
    rng = np.random.default_rng(seed)
    for row in range(0, height, rows):
        n = min(rows, height - row)
        fields = rng.integers(0, len(CLASSES), size=(n // 64 + 1, width // 64 + 1))
        classes = np.kron(fields, np.ones((64, 64), dtype=np.uint8))[:n, :width].astype(np.uint8)
        classes[:max(0, 512 - row), :512] = NODATA
        yield Strip(row=row, classes=classes, confidence=np.full_like(classes, 80))


def write_class_map(scene_path: Path, bands: list[str], out: Path, mask: Path | None = None) -> Path:
    """The class map GeoTIFF (and its counts, beside it as .npy) written with predict's writer."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    from landmeta.inference.colours import Legend
    from landmeta.inference.maps import GDAL_CACHE_BYTES, _write_rasters
    from landmeta.inference.predict import Strip
    from landmeta.inference.scene import open_scene
    legend = Legend(names=CLASSES, colors=[(0, 153, 0), (198, 176, 68), (182, 255, 5), (194, 79, 68),
                                           (165, 165, 165), (28, 13, 255)])
    if mask is not None:
        from landmeta.classes import DEEPGLOBE_CLASSES, DEEPGLOBE_COLORS
        legend = Legend(names=DEEPGLOBE_CLASSES, colors=DEEPGLOBE_COLORS)
    with open_scene(scene_path, bands) as scene, rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        if mask is None:
            strips = class_strips(scene.height, scene.width)
        else:
            from PIL import Image

            from landmeta.classes import decode_deepglobe_mask
            ids = decode_deepglobe_mask(np.asarray(Image.open(mask).convert("RGB")))[0]
            strips = [Strip(row=0, classes=ids, confidence=np.full_like(ids, 80))]
        counts = _write_rasters(scene, strips, out, out.with_name(out.stem + "_confidence.tif"), legend, {})
    np.save(out.with_suffix(".npy"), counts)
    return out


def child(scene_path: Path, bands: list[str], cls_path: Path, out: Path) -> dict:
    import pyproj
    import rasterio

    from landmeta.inference.colours import Legend
    from landmeta.inference.maps import GDAL_CACHE_BYTES
    from landmeta.inference.scene import open_scene
    from landmeta.inference.viewer import leaflet_css, leaflet_js, lonlat_grid, write_viewer
    with rasterio.open(cls_path) as src:  # the legend the class map was written with
        names = json.loads(src.tags()["classes"])
        legend = Legend(names=names, colors=[src.colormap(1)[i][:3] for i in range(len(names))])
    counts = np.load(cls_path.with_suffix(".npy"))
    leaflet_js(), leaflet_css()  # read once per process: not timed
    before = peak_rss_mb()
    with open_scene(scene_path, bands) as scene, rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        wall, cpu = time.perf_counter(), time.process_time()
        write_viewer(scene, cls_path, legend, counts, out, {})
        result = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                  "rss_before_mb": before, "peak_rss_mb": peak_rss_mb(),
                  "page_mb": out.stat().st_size / 2 ** 20, "pixels": scene.height * scene.width}
        text = out.read_text()
        data = json.loads(text.split('type="application/json">', 1)[1].split("</script>", 1)[0])
        result["images_mb"] = (len(data["quicklook"]) + len(data["classes"])) / 2 ** 20
        if scene.crs is not None:
            result["lonlat_error_m"] = lonlat_error(lonlat_grid(pyproj.CRS.from_user_input(scene.crs),
                                                                scene.transform, scene.height, scene.width),
                                                    scene)
    return result


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss would carry over the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmHWM in /proc/self/status (Linux only)")


def lonlat_error(grid: dict, scene) -> float:
    """Largest distance (m) between the page's bilinear lon/lat and pyproj's, at 10,000 random points."""
    import pyproj
    n = grid["nodes"]
    lon, lat = np.reshape(grid["lon"], (n, n)), np.reshape(grid["lat"], (n, n))
    rng = np.random.default_rng(0)
    rows, cols = rng.uniform(0, scene.height, 10_000), rng.uniform(0, scene.width, 10_000)
    u, v = cols / scene.width * (n - 1), rows / scene.height * (n - 1)
    j, i = np.minimum(u.astype(int), n - 2), np.minimum(v.astype(int), n - 2)
    fu, fv = u - j, v - i

    def at(a: np.ndarray) -> np.ndarray:
        return (1 - fv) * ((1 - fu) * a[i, j] + fu * a[i, j + 1]) + fv * ((1 - fu) * a[i + 1, j] + fu * a[i + 1, j + 1])

    xs, ys = scene.transform @ (cols, rows)
    true_lon, true_lat = pyproj.Transformer.from_crs(scene.crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    _, _, distance = pyproj.Geod(ellps="WGS84").inv(at(lon), at(lat), true_lon, true_lat)
    return float(np.max(distance))


def run_child(scene: Path, bands: list[str], cls_path: Path, out: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", str(scene), ",".join(bands), str(cls_path), str(out)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[2048, 10980])
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        scene, bands, cls_path, out = args.child
        print(json.dumps(child(Path(scene), bands.split(","), Path(cls_path), Path(out))))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_viewer_"))
    work.mkdir(parents=True, exist_ok=True)
    cases = []
    for size in args.sizes:
        scene = write_scene(work / f"scene_{size}.tif", size)
        cases.append((f"synthetic 4-band GeoTIFF {size}²", scene, BANDS,
                      write_class_map(scene, BANDS, work / f"classes_{size}.tif")))
    if DEEPGLOBE.is_file():
        cases.append(("real DeepGlobe tile 2448² JPG", DEEPGLOBE, RGB,
                      write_class_map(DEEPGLOBE, RGB, work / "classes_deepglobe.tif",
                                      mask=DEEPGLOBE.with_name(DEEPGLOBE.name.replace("_sat.jpg", "_mask.png")))))
    for label, scene, bands, cls_path in cases:
        r = run_child(scene, bands, cls_path, work / f"{cls_path.stem}_map.html")
        line = (f"{label}: {r['wall']:.2f} s wall, {r['cpu']:.2f} s CPU; page {r['page_mb']:.1f} MB "
                f"(images {r['images_mb']:.1f} MB); peak RSS {r['peak_rss_mb']:.0f} MB, "
                f"{r['peak_rss_mb'] - r['rss_before_mb']:.0f} MB above the {r['rss_before_mb']:.0f} MB before")
        if "lonlat_error_m" in r:
            line += f"; lon/lat error at most {r['lonlat_error_m'] * 1000:.1f} mm"
        print(line, flush=True)


if __name__ == "__main__":
    main()
