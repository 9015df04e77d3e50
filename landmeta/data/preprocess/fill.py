"""Filling the store tile by tile: size the arrays from the layout, have the worker processes write
each tile's chips at its rows, and record the tiles in order as they come back (chips.csv, the
`tiles` layer, per-region sums and counts, the arrays' checksums); memory does not grow with the
dataset.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np

from landmeta.data import Scan, Skips, TileRef
from landmeta.data.preprocess.cut import TileJob
from landmeta.data.preprocess.layers import TileLayer
from landmeta.data.preprocess.npy import NpyBlocks
from landmeta.data.preprocess.options import PreprocessOptions
from landmeta.data.preprocess.pool import prepared_tiles
from landmeta.data.preprocess.summary import Findings, Region, skip_summary
from landmeta.errors import DataError


def fill(tmp: Path, source: str, scan: Scan, layout: list[tuple[TileRef, int, int]],
         options: PreprocessOptions, skips: Skips, progress: bool,
         workers: int) -> tuple[dict[str, Region], Counter, int, dict[str, str], Findings]:
    """Prepare the tiles (in `workers` processes, which write their chips straight into the arrays) and
    record them in order; returns per-region sums, counts, the largest class id, the arrays' checksums
    and the values that had to be changed (clipped floats, unknown label values)."""
    from tqdm import tqdm
    size = scan.chip_size
    starts = np.cumsum([0] + [rows * cols for _, rows, cols in layout])
    tiles_layer = TileLayer(tmp / "regions.gpkg")
    regions: dict[str, Region] = {}
    counts: Counter = Counter()
    findings = Findings()
    n = 0
    max_id = -1
    with (NpyBlocks(tmp / "images.npy", np.float16, (int(starts[-1]), len(scan.bands), size, size)) as images,
          NpyBlocks(tmp / "masks.npy", np.uint8, (int(starts[-1]), size, size)) as masks,
          open(tmp / "chips.csv", "w", newline="") as fh):
        job = TileJob(scan.load, size, options.downsample, len(scan.class_names) if source == "deepglobe" else 0,
                      images.writer, masks.writer)
        writer = csv.writer(fh)
        writer.writerow(["chip", "tile", "region", "parent", "label", "source"])
        items = [(ref, rows, cols, int(first)) for (ref, rows, cols), first in zip(layout, starts)]
        prepared = prepared_tiles(job, items, workers)
        for (ref, rows, cols, first), tile in tqdm(zip(items, prepared), total=len(items),
                                                   desc=f"preprocess {source}", unit="tile", disable=not progress):
            if isinstance(tile, DataError):
                skips.add_error(ref.source, tile)
                continue
            images.written(first, rows * cols)
            masks.written(first, rows * cols)
            info = regions.setdefault(ref.region, Region(season=ref.season))
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
            raise DataError(f"no chips written: every tile was skipped ({skip_summary(skips)})")
        checksums = {"images.npy": images.finish(), "masks.npy": masks.finish()}
    counts["chips"] = n
    return regions, counts, max_id, checksums, findings
