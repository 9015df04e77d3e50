"""Raw tiles -> chip store (format in docs/architecture.md, section "Chip store").

The store is sized from the readers' headers first. Worker processes then read the tiles, cut them
into chips and write each tile's chips at its place in the .npy files, while this process records
the tiles in order (chips.csv, the tiles layer, per-region sums for the normalisation statistics)
and hashes the arrays' rows as they are finished; memory does not grow with the dataset. The
store is built aside and renamed at the end.

This module holds the entry point and the order of the steps; the rest lives beside it: `options`
(`PreprocessOptions`), `fill` (record the tiles in order), `pool` (worker processes), `cut` (per-tile
work), `npy` (the arrays' writer), `layers` (regions.gpkg), `summary` (findings, split, small
regions, band statistics).
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from pathlib import Path

from landmeta.classes import IGNORE_INDEX
from landmeta.data import Scan, Skips, TileRef, deepglobe, folder, sen12ms
from landmeta.data.chips import grid_shape
from landmeta.data.preprocess.fill import fill
from landmeta.data.preprocess.layers import write_regions
from landmeta.data.preprocess.npy import sha256
from landmeta.data.preprocess.options import PreprocessOptions
from landmeta.data.preprocess.summary import band_stats, skip_summary, small_regions, split_regions
from landmeta.errors import ConfigError, DataError
from landmeta.io import atomic_dir, atomic_write_json, check_output_dir, provenance

SOURCES = {"sen12ms": sen12ms.scan, "deepglobe": deepglobe.scan, "folder": folder.scan}


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
        raise DataError(f"{root}: no usable tiles ({skip_summary(skips)})")
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
        rows, cols = grid_shape(ref.height // factor, ref.width // factor, size)
        if size < 1 or rows * cols == 0:
            skips.add(ref.source, f"tile {ref.width}x{ref.height} (downsample {factor}) is smaller "
                                  f"than one {size}-px chip")
            continue
        out.append((ref, rows, cols))
    return out


def _write_store(tmp: Path, source: str, scan: Scan, layout: list[tuple[TileRef, int, int]],
                 options: PreprocessOptions, skips: Skips, progress: bool, workers: int) -> None:
    """Fill the arrays, chips.csv and the tiles layer; then split, statistics, regions and manifest."""
    regions, counts, max_id, checksums, findings = fill(tmp, source, scan, layout, options, skips, progress,
                                                        workers)
    class_names, class_colors = scan.class_names, scan.class_colors
    if not class_names:  # a folder of id masks without a class map
        class_names = [f"class_{i}" for i in range(max_id + 1)]
        class_colors = [folder._palette(i) for i in range(max_id + 1)]
    names = sorted(regions)
    split, clusters, warnings = split_regions(tmp, source, names, regions, options)
    small = small_regions(names, regions, scan.kinds)
    warnings += [f"region {r}: too few samples for any task ({why})" for r, why in small.items()]
    warnings += findings.warnings(source)

    train = [r for r in names if split[r] == "train"]
    mean, std, pixels = band_stats([regions[r] for r in train])
    n_train = sum(regions[r].n_chips for r in train)
    atomic_write_json(tmp / "stats.json", {"bands": scan.bands, "mean": mean.tolist(), "std": std.tolist(),
                                           "regions": train, "num_chips": n_train, "pixels": pixels})
    write_regions(tmp / "regions.gpkg", names, regions, split, clusters, class_names)

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
        "checksums": {**checksums, "chips.csv": sha256(tmp / "chips.csv")},
        "provenance": provenance(),
    }
    atomic_write_json(tmp / "manifest.json", manifest)
