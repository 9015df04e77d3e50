"""Raw tiles -> chip store (format in docs/architecture.md, section "Chip store").

The store is sized from the readers' headers first, then filled tile by tile (plain writes of rows
in order to the .npy files, hashed on the way), so memory does not grow with the dataset;
normalisation statistics are summed per region on the way. Reading, converting and writing
overlap in three threads. The store is built aside and renamed at the end.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from landmeta.classes import IGNORE_INDEX
from landmeta.data import Scan, Skips, Tile, TileRef
from landmeta.data import deepglobe, folder, sen12ms
from landmeta.data.geo import footprints
from landmeta.data.regions import (assign_splits, cluster_regions, clustered_split, image_features,
                                   plot_clusters, random_split)
from landmeta.errors import ConfigError, DataError
from landmeta.io import atomic_dir, atomic_write_json, check_output_dir, provenance

SOURCES = {"sen12ms": sen12ms.scan, "deepglobe": deepglobe.scan, "folder": folder.scan}
TILE_BATCH = 4096  # rows of the `tiles` layer written at a time
FLOAT16_MAX = float(np.finfo(np.float16).max)
COPY_BYTES = 1 << 24  # bytes copied at a time when dropping unused rows
READ_AHEAD = 2  # tiles read ahead of the one being converted (memory: this many tiles more)
# The smallest tasks there are: 2-way 1-shot 1-query (2 classes with 2 chips each), or one support
# and one query tile. A region below both is kept but reported.
MIN_CLASS_CHIPS, MIN_CLASSES, MIN_SEG_CHIPS = 2, 2, 2


@dataclass
class PreprocessOptions:
    """Options of `landmeta preprocess`; recorded in the manifest."""

    bands: list[str] | None = None  # band names in channel order; None = all of the source
    chip_size: int | None = None  # None: SEN12MS 128, folder = tile size, DeepGlobe = size // grid
    downsample: int = 1  # integer factor (block mean for images, nearest for masks)
    grid: int = 4  # DeepGlobe: sub-tiles per image side
    split_seed: int = 0
    split_file: Path | None = None  # lines `region,split`
    holdout: Path | None = None  # one test region per line
    split: Literal["random", "clustered"] = "random"  # DeepGlobe: images at random, or whole clusters
    clusters: int = 6  # DeepGlobe: KMeans clusters (pseudo-regions)
    class_map: Path | None = None  # folder: `name,id[,R,G,B]` lines
    strict: bool = False  # any bad input is fatal
    overwrite: bool = False


def preprocess(source: str, root: Path, out: Path, options: PreprocessOptions, progress: bool = False) -> Path:
    """Read `root` as `source` (sen12ms, deepglobe, folder) and write the chip store `out`."""
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r} (expected one of {sorted(SOURCES)})")
    if options.downsample < 1 or options.grid < 1 or (options.chip_size is not None and options.chip_size < 1):
        raise ConfigError("--downsample, --grid and --chip-size must be positive integers")
    if options.split_file and options.holdout:
        raise ConfigError("give either --split-file or --holdout, not both")
    if options.split == "clustered" and source != "deepglobe":
        raise ConfigError("--split clustered is for DeepGlobe (other sources have real regions)")
    root, out = Path(root), Path(out)
    check_output_dir(out, options.overwrite)
    skips = Skips(options.strict)
    scan = SOURCES[source](root, options, skips)
    layout = _layout(scan, options.downsample, skips)
    if not layout:
        raise DataError(f"{root}: no usable tiles ({_skip_summary(skips)})")
    with atomic_dir(out, options.overwrite) as tmp:
        _write_store(tmp, source, scan, layout, options, skips, progress)
    return out


def _layout(scan: Scan, factor: int, skips: Skips) -> list[tuple[TileRef, int, int]]:
    """(tile, chip rows, chip cols) for every tile with room for at least one chip."""
    size = scan.chip_size
    out = []
    for ref in scan.tiles:
        rows, cols = (ref.height // factor) // max(size, 1), (ref.width // factor) // max(size, 1)
        if size < 1 or rows * cols == 0:
            skips.add(ref.source, f"tile {ref.width}x{ref.height} (downsample {factor}) is smaller "
                                  f"than one {size}-px chip")
            continue
        out.append((ref, rows, cols))
    return out


def _skip_summary(skips: Skips) -> str:
    if not len(skips):
        return "nothing was skipped"
    first = skips.items[0]
    return f"{len(skips)} inputs skipped, first: {first['file']}: {first['reason']}"


@dataclass
class _Region:
    season: str = ""
    n_chips: int = 0
    labels: Counter = field(default_factory=Counter)
    footprints: list = field(default_factory=list)
    features: np.ndarray | None = None
    sums: np.ndarray | float = 0.0  # per band, over the region's chips (float64)
    squares: np.ndarray | float = 0.0
    pixels: int = 0  # valid (not nodata) pixels in the sums


def _write_store(tmp: Path, source: str, scan: Scan, layout: list[tuple[TileRef, int, int]],
                 options: PreprocessOptions, skips: Skips, progress: bool) -> None:
    """Fill the arrays, chips.csv and the tiles layer; then split, statistics, regions and manifest."""
    regions, counts, max_id, checksums = _fill(tmp, source, scan, layout, options, skips, progress)
    class_names, class_colors = scan.class_names, scan.class_colors
    if not class_names:  # a folder of id masks without a class map
        class_names = [f"class_{i}" for i in range(max_id + 1)]
        class_colors = [folder._palette(i) for i in range(max_id + 1)]
    names = sorted(regions)
    split, clusters, warnings = _split(tmp, source, names, regions, options)
    small = _small_regions(names, regions, scan.kinds)
    warnings += [f"region {r}: too few samples for any task ({why})" for r, why in small.items()]

    train = [r for r in names if split[r] == "train"]
    mean, std, pixels = _band_stats([regions[r] for r in train])
    n_train = sum(regions[r].n_chips for r in train)
    atomic_write_json(tmp / "stats.json", {"bands": scan.bands, "mean": mean.tolist(), "std": std.tolist(),
                                           "regions": train, "num_chips": n_train, "pixels": pixels})
    _write_regions(tmp / "regions.gpkg", names, regions, split, clusters, class_names)

    per_split = Counter(split.values())
    counts.update({
        "inputs_skipped": len(skips), "regions": len(names), "regions_train": per_split["train"],
        "regions_val": per_split["val"], "regions_test": per_split["test"], "chips_train": n_train,
        "small_regions": len(small),
    })
    options_record = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(options).items()}
    manifest = {
        "source": source, "kinds": scan.kinds, "bands": scan.bands,
        "class_names": class_names, "class_colors": [list(c) for c in class_colors],
        "ignore_index": IGNORE_INDEX, "chip_size": scan.chip_size, "num_chips": counts["chips"],
        "options": options_record, "counts": dict(counts), "skipped": skips.items, "warnings": warnings,
        "checksums": {**checksums, "chips.csv": _sha256(tmp / "chips.csv")},
        "provenance": provenance(),
    }
    atomic_write_json(tmp / "manifest.json", manifest)


def _fill(tmp: Path, source: str, scan: Scan, layout: list[tuple[TileRef, int, int]],
          options: PreprocessOptions, skips: Skips,
          progress: bool) -> tuple[dict[str, _Region], Counter, int, dict[str, str]]:
    """Read tile by tile and write its chips; returns per-region sums, counts, the largest class id and
    the arrays' checksums.

    Three stages overlap: a thread reads the next tiles (rasterio releases the GIL), this thread
    checks and converts, and each array's own thread writes and hashes the finished rows.
    """
    from tqdm import tqdm
    size, factor = scan.chip_size, options.downsample
    n_alloc = sum(rows * cols for _, rows, cols in layout)
    tiles_layer = _TileLayer(tmp / "regions.gpkg")
    regions: dict[str, _Region] = {}
    counts: Counter = Counter()
    n = 0
    max_id = -1
    with (_NpyRows(tmp / "images.npy", np.float16, (n_alloc, len(scan.bands), size, size)) as images,
          _NpyRows(tmp / "masks.npy", np.uint8, (n_alloc, size, size)) as masks,
          open(tmp / "chips.csv", "w", newline="") as fh, ThreadPoolExecutor(1) as reader):
        writer = csv.writer(fh)
        writer.writerow(["chip", "tile", "region", "parent", "label", "source"])
        loads = _read_ahead(reader, scan.load, [ref for ref, _, _ in layout])
        for (ref, rows, cols), loading in tqdm(zip(layout, loads), total=len(layout), desc=f"preprocess {source}",
                                               unit="tile", disable=not progress):
            step = size * factor
            windows = [(0, 0, ref.height, ref.width)] + [(i * step, j * step, step, step)
                                                        for i in range(rows) for j in range(cols)]
            try:
                tile = loading.result()
                outline, *chip_outlines = footprints(tile.crs, tile.transform, windows)
            except DataError as exc:
                skips.add_error(ref.source, exc)
                continue
            image, mask = tile.image, tile.mask
            if max(np.fmax.reduce(image, axis=None), -np.fmin.reduce(image, axis=None)) > FLOAT16_MAX:
                skips.add(ref.source, f"values beyond ±{FLOAT16_MAX:g} do not fit the store's float16")
                continue
            bad = ~np.isfinite(image.sum(axis=0))  # a NaN in any band
            if tile.nodata is not None:
                bad |= tile.nodata
            if bad.any():
                image[:, bad] = 0.0
                mask = mask.copy()
                mask[bad] = IGNORE_INDEX
                counts["nodata_pixels"] += int(bad.sum())
                counts["nodata_tiles"] += 1
            if factor > 1:
                image, mask, bad = _downsample(image, mask, bad, factor)
            info = regions.setdefault(ref.region, _Region(season=ref.season))
            if source == "deepglobe":
                info.features = image_features(image, mask, len(scan.class_names))
            if outline is not None:
                info.footprints.append(outline)
            covered = np.ascontiguousarray(image[:, :rows * size, :cols * size])
            flat = covered.reshape(len(covered), -1)  # nodata pixels are 0: they add nothing to the sums
            info.sums += flat.sum(axis=1).astype(np.float64)  # per tile: float32 pairwise sums, 3x faster
            info.squares += np.einsum("ij,ij->i", flat, flat).astype(np.float64)
            info.pixels += flat.shape[1] - int(np.count_nonzero(bad[:rows * size, :cols * size]))
            images.append(_chips_float16(covered, rows, cols, size))
            chip_masks = _chips(mask[:rows * size, :cols * size], rows, cols, size)
            masks.append(chip_masks)
            for k, chip_mask in enumerate(chip_masks):
                hist = np.bincount(chip_mask.ravel(), minlength=256)[:IGNORE_INDEX]
                present = np.flatnonzero(hist)
                label = ref.label if ref.label >= 0 else (int(hist.argmax()) if present.size else -1)
                name = f"{ref.tile}_r{k // cols}c{k % cols}" if rows * cols > 1 else ref.tile
                writer.writerow([n, name, ref.region, name if scan.parent_is_chip else ref.tile, label, ref.source])
                tiles_layer.add({"tile": name, "region": ref.region, "label": label,
                                 "class_hist": json.dumps({int(c): int(hist[c]) for c in present}),
                                 "source": ref.source, "geometry": chip_outlines[k]})
                info.n_chips += 1
                info.labels[label] += 1
                max_id = max(max_id, label, int(present[-1]) if present.size else -1)
                n += 1
            counts["tiles_used"] += 1
        tiles_layer.flush()
        if n == 0:
            raise DataError(f"no chips written: every tile was skipped ({_skip_summary(skips)})")
        checksums = {"images.npy": images.finish(), "masks.npy": masks.finish()}
    counts["chips"] = n
    return regions, counts, max_id, checksums


def _read_ahead(pool: ThreadPoolExecutor, load: Callable[[TileRef], Tile],
                refs: list[TileRef]) -> Iterator[Future]:
    """Futures of `load(ref)` in order, started at most READ_AHEAD tiles before they are consumed."""
    pending = deque(pool.submit(load, ref) for ref in refs[:READ_AHEAD])
    for k in range(len(refs)):
        if k + READ_AHEAD < len(refs):
            pending.append(pool.submit(load, refs[k + READ_AHEAD]))
        yield pending.popleft()


def _chips(a: np.ndarray, rows: int, cols: int, size: int) -> np.ndarray:
    """(..., rows*size, cols*size) -> (rows*cols, ..., size, size), chips in row-major order (a copy)."""
    lead = a.shape[:-2]
    grid = a.reshape(*lead, rows, size, cols, size)
    d = len(lead)
    order = (d, d + 2, *range(d), d + 1, d + 3)
    return np.ascontiguousarray(grid.transpose(order)).reshape(rows * cols, *lead, size, size)


def _chips_float16(image: np.ndarray, rows: int, cols: int, size: int) -> np.ndarray:
    """`_chips` of a float32 image, converted to float16 (OpenCV: the same values as numpy's astype,
    rounded to nearest even, in a fifth of the time)."""
    import cv2
    c, h, w = image.shape
    half = cv2.multiply(image.reshape(c, h * w), 1.0, dtype=cv2.CV_16F).reshape(c, h, w)
    return _chips(half, rows, cols, size)


def _split(tmp: Path, source: str, names: list[str], regions: dict[str, _Region],
           options: PreprocessOptions) -> tuple[dict[str, str], np.ndarray, list[str]]:
    """Split of each region, DeepGlobe clusters (-1 elsewhere) and warnings; writes clusters.png."""
    if source != "deepglobe":
        split, warnings = assign_splits(names, options.split_seed, options.split_file, options.holdout)
        return split, np.full(len(names), -1), warnings
    features = np.stack([regions[r].features for r in names])
    clusters = cluster_regions(features, options.clusters, options.split_seed)
    warnings: list[str] = []
    if options.split_file or options.holdout:
        split, warnings = assign_splits(names, options.split_seed, options.split_file, options.holdout)
    elif options.split == "clustered":
        split = clustered_split(names, clusters, options.split_seed)
    else:
        split = random_split(names, options.split_seed)
    plot_clusters(tmp / "clusters.png", features, clusters, [split[r] for r in names])
    return split, clusters, warnings


def _small_regions(names: list[str], regions: dict[str, _Region], kinds: list[str]) -> dict[str, str]:
    """Regions that cannot hold the smallest task of any kind the store supports, with why."""
    small = {}
    for r in names:
        info = regions[r]
        eligible = sum(1 for label, k in info.labels.items() if label >= 0 and k >= MIN_CLASS_CHIPS)
        if eligible < MIN_CLASSES and ("segmentation" not in kinds or info.n_chips < MIN_SEG_CHIPS):
            small[r] = f"{info.n_chips} chips, {eligible} classes with {MIN_CLASS_CHIPS}+ chips"
    return small


def _downsample(image: np.ndarray, mask: np.ndarray, bad: np.ndarray,
                f: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block mean of the image's valid pixels (0 and nodata where a block has none), centre pixel of
    each block for the mask."""
    c, h, w = image.shape
    h2, w2 = h // f, w // f
    sums = image[:, :h2 * f, :w2 * f].reshape(c, h2, f, w2, f).sum(axis=(2, 4))  # nodata pixels are 0
    valid = (~bad[:h2 * f, :w2 * f]).reshape(h2, f, w2, f).sum(axis=(1, 3))
    small = (sums / np.maximum(valid, 1)).astype(np.float32)
    return small, np.ascontiguousarray(mask[f // 2::f, f // 2::f][:h2, :w2]), valid == 0


def _band_stats(train: list[_Region]) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-band mean and std over the valid pixels of the train regions' chips (from float64 sums),
    and the number of those pixels."""
    count = sum(r.pixels for r in train)
    if count == 0:
        raise DataError("no valid pixels in train regions to compute normalisation statistics from")
    mean = sum(r.sums for r in train) / count
    var = sum(r.squares for r in train) / count - mean ** 2
    return mean, np.sqrt(np.maximum(var, 0.0)), count


def _create_npy(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """Write a .npy header and size the file (sparse until filled); return the header's bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    with open(path, "wb") as fh:
        fh.write(header.getvalue())
        fh.truncate(len(header.getvalue()) + int(np.prod(shape)) * dtype.itemsize)
    return header.getvalue()


class _NpyRows:
    """A .npy array filled with blocks of rows in order, by plain file writes, so memory stays flat at
    any size (a writable memory map would count every written page in the process's resident memory).

    A thread of its own writes each block and adds it to the file's sha256 while the caller prepares
    the next (file writes and hashing release the GIL); at most one block waits. `finish(n)` keeps
    the first `n` rows when tiles were skipped after the store was sized, and returns the checksum.
    """

    def __init__(self, path: Path, dtype: type, shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.shape = path, np.dtype(dtype), shape
        header = _create_npy(path, self.dtype, shape)
        self.offset = len(header)
        self.digest = hashlib.sha256(header)
        self.row_bytes = int(np.prod(shape[1:])) * self.dtype.itemsize
        self.rows = 0
        self.fh = open(path, "r+b")
        self.fh.seek(self.offset)
        self.thread = ThreadPoolExecutor(1)
        self.pending: Future | None = None

    def __enter__(self) -> _NpyRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.shutdown()
        self.fh.close()

    def append(self, block: np.ndarray) -> None:
        """Queue the next rows (a C-contiguous array of this dtype); it must not change afterwards."""
        self._wait()
        self.pending = self.thread.submit(self._write, memoryview(block).cast("B"))
        self.rows += len(block)

    def _write(self, data: memoryview) -> None:
        self.fh.write(data)
        self.digest.update(data)

    def _wait(self) -> None:
        if self.pending is not None:
            self.pending.result()
            self.pending = None

    def finish(self) -> str:
        """Flush, drop the unused rows, and return the finished file's sha256."""
        self._wait()
        if self.rows == self.shape[0]:
            self.fh.flush()
            return self.digest.hexdigest()
        tmp = self.path.with_name(f".{self.path.name}.shrink")
        offset = len(_create_npy(tmp, self.dtype, (self.rows, *self.shape[1:])))
        self.fh.flush()
        with open(tmp, "r+b") as out:
            out.seek(offset)
            self.fh.seek(self.offset)
            left = self.rows * self.row_bytes
            while left:
                block = self.fh.read(min(left, COPY_BYTES))
                out.write(block)
                left -= len(block)
        self.fh.close()
        os.replace(tmp, self.path)
        return _sha256(self.path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _TileLayer:
    """The `tiles` layer of regions.gpkg, appended in batches."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict] = []
        self.started = False

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= TILE_BATCH:
            self.flush()

    def flush(self) -> None:
        import geopandas as gpd
        import pyogrio
        if not self.rows:
            return
        gdf = gpd.GeoDataFrame(self.rows, geometry="geometry", crs="EPSG:4326")
        pyogrio.write_dataframe(gdf, self.path, layer="tiles", driver="GPKG", geometry_type="Polygon",
                                append=self.started)
        self.started = True
        self.rows = []


def _write_regions(path: Path, names: list[str], regions: dict[str, _Region], split: dict[str, str],
                   clusters: np.ndarray, class_names: list[str]) -> None:
    import geopandas as gpd
    import pyogrio
    from shapely import union_all
    from shapely.geometry import MultiPolygon
    rows = []
    for r, cluster in zip(names, clusters):
        info = regions[r]
        shape = union_all(info.footprints) if info.footprints else None
        if shape is not None and shape.geom_type == "Polygon":
            shape = MultiPolygon([shape])
        counts = {class_names[k]: int(v) for k, v in sorted(info.labels.items()) if 0 <= k < len(class_names)}
        rows.append({"region": r, "split": split[r], "season": info.season, "cluster": int(cluster),
                     "n_chips": info.n_chips, "class_counts": json.dumps(counts), "geometry": shape})
    gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
    pyogrio.write_dataframe(gdf, path, layer="regions", driver="GPKG", geometry_type="MultiPolygon")
