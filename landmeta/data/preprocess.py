"""Raw tiles -> chip store (format in docs/architecture.md, section "Chip store").

The store is sized from the readers' headers first. Worker processes then read the tiles, cut them
into chips and write each tile's chips at its place in the .npy files, while this process records
the tiles in order (chips.csv, the tiles layer, per-region sums for the normalisation statistics)
and hashes the arrays' rows as they are finished; memory does not grow with the dataset. The
store is built aside and renamed at the end.
"""

from __future__ import annotations

import csv
import ctypes
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import signal
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from shapely.geometry import Polygon

from landmeta.classes import IGNORE_INDEX
from landmeta.data import Scan, Skips, Tile, TileRef, deepglobe, folder, sen12ms
from landmeta.data.geo import footprints
from landmeta.data.regions import (
    assign_splits,
    cluster_regions,
    clustered_split,
    image_features,
    plot_clusters,
    random_split,
)
from landmeta.errors import ConfigError, DataError
from landmeta.io import atomic_dir, atomic_write_json, check_output_dir, provenance
from landmeta.workers import die_with_parent

SOURCES = {"sen12ms": sen12ms.scan, "deepglobe": deepglobe.scan, "folder": folder.scan}
TILE_BATCH = 4096  # rows of the `tiles` layer written at a time
FLOAT16_MAX = float(np.finfo(np.float16).max)
FLOAT32_LOWEST = float(np.finfo(np.float32).min)  # GDAL's default nodata of float rasters (-3.4e38)
COPY_BYTES = 1 << 24  # bytes copied at a time when dropping the rows of skipped tiles
PREPARE_AHEAD = 2  # tiles per worker prepared ahead of the one being written (memory: this many more)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"  # of the worker processes
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
    parent_pattern: str | None = None  # folder: regex whose first group names a tile's parent patch
    strict: bool = False  # any bad input is fatal
    overwrite: bool = False


def preprocess(source: str, root: Path, out: Path, options: PreprocessOptions, progress: bool = False,
               workers: int | None = None) -> Path:
    """Read `root` as `source` (sen12ms, deepglobe, folder) and write the chip store `out`.

    Tiles are read and cut in `workers` processes (default: one per usable CPU core; 0 or 1: in this
    process); the store is the same for any number.
    """
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r} (expected one of {sorted(SOURCES)})")
    if options.downsample < 1 or options.grid < 1 or (options.chip_size is not None and options.chip_size < 1):
        raise ConfigError("--downsample, --grid and --chip-size must be positive integers")
    if workers is not None and workers < 0:
        raise ConfigError(f"--workers must be 0 or more (0 and 1: no worker processes), got {workers}")
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
        _write_store(tmp, source, scan, layout, options, skips, progress,
                     _usable_cpus() if workers is None else workers)
    return out


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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


@dataclass
class _Findings:
    """Values the store had to change, over all tiles: floats clipped to float16, unknown label values."""

    clipped: Counter = field(default_factory=Counter)  # file -> values clipped
    clipped_tiles: int = 0
    unknown: Counter = field(default_factory=Counter)  # label value -> pixels
    unknown_files: list[str] = field(default_factory=list)  # mask files holding unknown values

    def add(self, tile: _Prepared) -> None:
        """Count one tile's clipped values and unknown label values."""
        if tile.clipped:
            self.clipped.update(tile.clipped)
            self.clipped_tiles += 1
        if tile.unknown_labels:
            self.unknown.update(tile.unknown_labels)
            self.unknown_files.append(tile.mask_source)

    def counts(self) -> dict[str, int]:
        """The manifest's counts of these findings."""
        return {"clipped_values": sum(self.clipped.values()), "clipped_tiles": self.clipped_tiles,
                "unknown_label_pixels": sum(self.unknown.values()), "unknown_label_tiles": len(self.unknown_files)}

    def warnings(self, source: str) -> list[str]:
        """One line per kind of finding, naming the files at fault (the first three)."""
        out = []
        if self.clipped:
            files = ", ".join(f"{f} ({n})" for f, n in list(self.clipped.items())[:3])
            out.append(f"{sum(self.clipped.values())} values beyond ±{FLOAT16_MAX:g} (not nodata) in "
                       f"{_plural(len(self.clipped), 'file')} clipped to fit the store's float16: {files}"
                       f"{' ...' if len(self.clipped) > 3 else ''}")
        if self.unknown:
            what = "IGBP values outside 1..17" if source == "sen12ms" else "mask values outside the classes"
            values = ", ".join(str(v) for v in sorted(self.unknown)[:10])
            out.append(f"{sum(self.unknown.values())} mask pixels in {_plural(len(self.unknown_files), 'file')} hold {what} "
                       f"({values}), ignored (255): {', '.join(self.unknown_files[:3])}"
                       f"{' ...' if len(self.unknown_files) > 3 else ''}")
        return out


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _write_store(tmp: Path, source: str, scan: Scan, layout: list[tuple[TileRef, int, int]],
                 options: PreprocessOptions, skips: Skips, progress: bool, workers: int) -> None:
    """Fill the arrays, chips.csv and the tiles layer; then split, statistics, regions and manifest."""
    regions, counts, max_id, checksums, findings = _fill(tmp, source, scan, layout, options, skips, progress,
                                                         workers)
    class_names, class_colors = scan.class_names, scan.class_colors
    if not class_names:  # a folder of id masks without a class map
        class_names = [f"class_{i}" for i in range(max_id + 1)]
        class_colors = [folder._palette(i) for i in range(max_id + 1)]
    names = sorted(regions)
    split, clusters, warnings = _split(tmp, source, names, regions, options)
    small = _small_regions(names, regions, scan.kinds)
    warnings += [f"region {r}: too few samples for any task ({why})" for r, why in small.items()]
    warnings += findings.warnings(source)

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
        "small_regions": len(small), **findings.counts(),
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
          options: PreprocessOptions, skips: Skips, progress: bool,
          workers: int) -> tuple[dict[str, _Region], Counter, int, dict[str, str], _Findings]:
    """Prepare the tiles (in `workers` processes, which write their chips straight into the arrays) and
    record them in order; returns per-region sums, counts, the largest class id, the arrays' checksums
    and the values that had to be changed (clipped floats, unknown label values)."""
    from tqdm import tqdm
    size = scan.chip_size
    starts = np.cumsum([0] + [rows * cols for _, rows, cols in layout])
    tiles_layer = _TileLayer(tmp / "regions.gpkg")
    regions: dict[str, _Region] = {}
    counts: Counter = Counter()
    findings = _Findings()
    n = 0
    max_id = -1
    with (_NpyBlocks(tmp / "images.npy", np.float16, (int(starts[-1]), len(scan.bands), size, size)) as images,
          _NpyBlocks(tmp / "masks.npy", np.uint8, (int(starts[-1]), size, size)) as masks,
          open(tmp / "chips.csv", "w", newline="") as fh):
        job = _Job(scan.load, size, options.downsample, len(scan.class_names) if source == "deepglobe" else 0,
                   images, masks)
        writer = csv.writer(fh)
        writer.writerow(["chip", "tile", "region", "parent", "label", "source"])
        items = [(ref, rows, cols, int(first)) for (ref, rows, cols), first in zip(layout, starts)]
        prepared = _prepared_tiles(job, items, workers)
        for (ref, rows, cols, first), tile in tqdm(zip(items, prepared), total=len(items),
                                                   desc=f"preprocess {source}", unit="tile", disable=not progress):
            if isinstance(tile, DataError):
                skips.add_error(ref.source, tile)
                continue
            images.written(first, rows * cols)
            masks.written(first, rows * cols)
            info = regions.setdefault(ref.region, _Region(season=ref.season))
            if tile.features is not None:
                info.features = tile.features
            if tile.outline is not None:
                info.footprints.append(tile.outline)
            info.sums += tile.sums
            info.squares += tile.squares
            info.pixels += tile.pixels
            if tile.nodata_pixels:
                counts["nodata_pixels"] += tile.nodata_pixels
                counts["nodata_tiles"] += 1
            findings.add(tile)
            for k, (label, hist) in enumerate(zip(tile.labels, tile.hists)):
                name = f"{ref.tile}_r{k // cols}c{k % cols}" if rows * cols > 1 else ref.tile
                parent = name if scan.parent_is_chip else ref.parent or ref.tile
                writer.writerow([n, name, ref.region, parent, label, ref.source])
                tiles_layer.add({"tile": name, "region": ref.region, "label": label, "class_hist": hist,
                                 "source": ref.source, "geometry": tile.chip_outlines[k]})
                info.n_chips += 1
                info.labels[label] += 1
                n += 1
            max_id = max(max_id, tile.max_id)
            counts["tiles_used"] += 1
        tiles_layer.flush()
        if n == 0:
            raise DataError(f"no chips written: every tile was skipped ({_skip_summary(skips)})")
        checksums = {"images.npy": images.finish(), "masks.npy": masks.finish()}
    counts["chips"] = n
    return regions, counts, max_id, checksums, findings


@dataclass
class _Job:
    """What preparing a tile needs besides the tile (sent once to each worker process)."""

    load: Callable[[TileRef], Tile]
    size: int
    factor: int
    feature_classes: int  # DeepGlobe: classes of the per-image features; 0 = no features
    images: _NpyBlocks
    masks: _NpyBlocks


@dataclass
class _Prepared:
    """What the store records of one tile's chips (the chips themselves are already in the arrays)."""

    labels: list[int]
    hists: list[str]  # per chip: JSON {class id: pixels}
    max_id: int  # the largest class id seen, -1 if none
    outline: Polygon | None
    chip_outlines: list[Polygon | None]
    sums: np.ndarray  # per band, float64, over the valid pixels of the chips
    squares: np.ndarray
    pixels: int  # valid pixels in the sums
    nodata_pixels: int
    features: np.ndarray | None = None
    clipped: dict[str, int] = field(default_factory=dict)  # file -> values clipped to the float16 range
    unknown_labels: dict[int, int] = field(default_factory=dict)  # label values outside the classes -> pixels
    mask_source: str = ""  # the file the mask was read from


_JOB: _Job | None = None  # the job of this (worker) process


def _start_worker(job: _Job) -> None:
    global _JOB
    die_with_parent()  # a killed preprocess leaves no worker blocked on the pool's pipe
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    _keep_freed_memory()
    _JOB = job


def _keep_freed_memory() -> None:
    """Have glibc serve arrays up to 32 MB from the heap and keep freed memory for reuse: every tile
    allocates arrays of the same sizes, which would otherwise be mapped afresh and fault in page by
    page (measured: a third of a worker's time). A no-op where the C library has no `mallopt`."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        pass


def _prepared_tiles(job: _Job, items: list[tuple[TileRef, int, int, int]],
                    workers: int) -> Iterator[_Prepared | DataError]:
    """`_prepare` of every tile, in order: in this process (workers ≤ 1) or in a process pool, at most
    PREPARE_AHEAD tiles per worker ahead of the one being written (memory stays flat)."""
    global _JOB
    if workers <= 1 or len(items) <= 1:
        _JOB = job
        yield from map(_prepare, items)
        return
    context = multiprocessing.get_context(START_METHOD)
    with ProcessPoolExecutor(workers, context, initializer=_start_worker, initargs=(job,)) as pool:
        try:
            pending: deque[Future] = deque()
            for item in items:
                pending.append(pool.submit(_prepare, item))
                if len(pending) > PREPARE_AHEAD * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(cancel_futures=True)


def _prepare(item: tuple[TileRef, int, int, int]) -> _Prepared | DataError:
    """Read one tile, cut it into chips and write them (float16 images, masks) from row `first` of the
    arrays; return their labels, histograms, outlines and band sums, or a DataError for bad input."""
    ref, rows, cols, first = item
    job = _JOB
    size, factor = job.size, job.factor
    step = size * factor
    windows = [(0, 0, ref.height, ref.width)] + [(i * step, j * step, step, step)
                                                for i in range(rows) for j in range(cols)]
    try:
        tile = job.load(ref)
        outline, *chip_outlines = footprints(tile.crs, tile.transform, windows)
    except DataError as exc:
        return exc
    image, mask = tile.image, tile.mask
    bad = _nodata(image, tile.nodata)  # before any range check: nodata is not out of range
    nodata_pixels = int(np.count_nonzero(bad))
    if nodata_pixels:
        image[:, bad] = 0.0
        mask = mask.copy()
        mask[bad] = IGNORE_INDEX
    clipped = _clip_to_float16(image, tile.band_sources or [ref.source] * len(image))
    if factor > 1:
        image, mask, bad = _downsample(image, mask, bad, factor)
    features = image_features(image, mask, job.feature_classes) if job.feature_classes else None
    covered = np.ascontiguousarray(image[:, :rows * size, :cols * size])
    flat = covered.reshape(len(covered), -1)  # nodata pixels are 0: they add nothing to the sums
    chip_masks = _chips(mask[:rows * size, :cols * size], rows, cols, size)
    labels, hists, max_id = [], [], -1
    for chip_mask in chip_masks:
        hist = np.bincount(chip_mask.ravel(), minlength=256)[:IGNORE_INDEX]
        present = np.flatnonzero(hist)
        label = ref.label if ref.label >= 0 else (int(hist.argmax()) if present.size else -1)
        labels.append(label)
        hists.append(json.dumps({int(c): int(hist[c]) for c in present}))
        max_id = max(max_id, label, int(present[-1]) if present.size else -1)
    job.images.write(first, _chips_float16(covered, rows, cols, size))
    job.masks.write(first, chip_masks)
    return _Prepared(
        labels=labels, hists=hists,
        max_id=max_id, outline=outline, chip_outlines=chip_outlines,
        sums=flat.sum(axis=1).astype(np.float64),  # per tile: float32 pairwise sums, 3x faster
        squares=np.einsum("ij,ij->i", flat, flat).astype(np.float64),
        pixels=flat.shape[1] - int(np.count_nonzero(bad[:rows * size, :cols * size])),
        nodata_pixels=nodata_pixels, features=features, clipped=clipped, unknown_labels=tile.unknown_labels,
        mask_source=tile.mask_source or ref.source)


def _nodata(image: np.ndarray, declared: np.ndarray | None) -> np.ndarray:
    """(H, W) pixels without data: a non-finite value or GDAL's float nodata in any band, or marked
    nodata by the reader (`declared`)."""
    bad = ~np.isfinite(image).all(axis=0)
    if np.fmin.reduce(image, axis=None) <= FLOAT32_LOWEST:  # fmin skips NaN; -inf may hide the value
        bad |= (image == FLOAT32_LOWEST).any(axis=0)
    if declared is not None:
        bad |= declared
    return bad


def _clip_to_float16(image: np.ndarray, sources: list[str]) -> dict[str, int]:
    """Clip (in place) the values beyond the float16 range of a finite image to its ends; return the
    number clipped per file of `sources` (the file of each band)."""
    if max(np.fmax.reduce(image, axis=None), -np.fmin.reduce(image, axis=None)) <= FLOAT16_MAX:
        return {}
    per_band = np.count_nonzero(np.abs(image) > FLOAT16_MAX, axis=(1, 2))
    np.clip(image, -FLOAT16_MAX, FLOAT16_MAX, out=image)
    clipped: Counter = Counter()
    for source, n in zip(sources, per_band):
        clipped[source] += int(n)
    return {source: n for source, n in clipped.items() if n}


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


class _NpyBlocks:
    """A .npy array sized up front whose row blocks are written in place by any process (`write`:
    positioned writes), then hashed in row order by the main process (`written`: read back from the
    page cache), so memory stays flat at any size. `finish()` drops the rows of skipped tiles and
    returns the file's sha256."""

    def __init__(self, path: Path, dtype: type, shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.shape = path, np.dtype(dtype), shape
        header = _create_npy(path, self.dtype, shape)
        self.offset = len(header)
        self.row_bytes = int(np.prod(shape[1:])) * self.dtype.itemsize
        self.digest = hashlib.sha256(header)
        self.blocks: list[tuple[int, int]] = []  # (first row, rows) of the tiles kept, in order
        self.hashed = 0  # rows hashed so far, from row 0 without a gap
        self._fd: tuple[int, int] | None = None  # (process id, descriptor)

    def __enter__(self) -> _NpyBlocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        if self._fd is not None and self._fd[0] == os.getpid():
            os.close(self._fd[1])
        self._fd = None

    def __getstate__(self) -> dict:  # what a spawned worker needs: where to write
        return {k: v for k, v in self.__dict__.items() if k not in ("digest", "_fd")} | {"_fd": None}

    def _descriptor(self) -> int:
        if self._fd is None or self._fd[0] != os.getpid():
            self._fd = (os.getpid(), os.open(self.path, os.O_RDWR))
        return self._fd[1]

    def write(self, first: int, block: np.ndarray) -> None:
        """Write `block` (rows of this array's dtype and row shape) from row `first`."""
        data = memoryview(np.ascontiguousarray(block, dtype=self.dtype)).cast("B")
        position, fd = self.offset + first * self.row_bytes, self._descriptor()
        while data:
            done = os.pwrite(fd, data, position)
            data, position = data[done:], position + done

    def written(self, first: int, rows: int) -> None:
        """Record that rows first .. first+rows-1 hold a kept tile; hash them if no gap precedes them."""
        self.blocks.append((first, rows))
        if first == self.hashed:
            self.digest.update(os.pread(self._descriptor(), rows * self.row_bytes, self.offset + first * self.row_bytes))
            self.hashed += rows

    def finish(self) -> str:
        """Close the file, leaving only the kept rows, in order; return its sha256."""
        kept = sum(rows for _, rows in self.blocks)
        if self.hashed == kept == self.shape[0]:
            self._close()
            return self.digest.hexdigest()
        tmp = self.path.with_name(f".{self.path.name}.compact")
        offset = len(_create_npy(tmp, self.dtype, (kept, *self.shape[1:])))
        fd = self._descriptor()
        with open(tmp, "r+b") as out:
            out.seek(offset)
            for first, rows in self.blocks:
                position, left = self.offset + first * self.row_bytes, rows * self.row_bytes
                while left:
                    chunk = os.pread(fd, min(left, COPY_BYTES), position)
                    out.write(chunk)
                    position, left = position + len(chunk), left - len(chunk)
        self._close()
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
