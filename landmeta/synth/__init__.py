"""The embedded default dataset: synthetic SEN12MS and DeepGlobe tiles in the real formats.

`generate(out, scale, seed)` writes `out/sen12ms/` (GeoTIFF triplets per patch),
`out/deepglobe/` (`<id>_sat.jpg`, `<id>_mask.png`) and `out/synth.json`. The generative model
is described in docs/synthetic-data.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from landmeta.errors import ConfigError
from landmeta.io import atomic_dir, atomic_write_json, provenance
from landmeta.synth import deepglobe as dg
from landmeta.synth import sen12ms as s12
from landmeta.workers import die_with_parent


@dataclass(frozen=True)
class Scale:
    """The size of a generated dataset: regions, patches and tiles."""

    regions: int  # SEN12MS (season, scene) regions
    patches: int  # 256x256 patches per region
    styles: int  # DeepGlobe pseudo-regions
    tiles_per_style: int
    tile_size: int  # DeepGlobe image side in pixels
    workers: int  # processes used to render


SCALES: dict[str, Scale] = {
    "tiny": Scale(regions=20, patches=3, styles=4, tiles_per_style=3, tile_size=128, workers=1),
    "default": Scale(regions=125, patches=20, styles=6, tiles_per_style=8, tile_size=512, workers=2),
    "large": Scale(regions=250, patches=32, styles=8, tiles_per_style=8, tile_size=2448, workers=4),
}


def _sen12ms_job(args: tuple[Path, s12.Region, int, int]) -> np.ndarray:
    root, region, index, seed = args
    rng = np.random.default_rng([seed, 1, region.season, region.scene, index])
    patch = s12.render_patch(region, rng)
    s12.write_patch(root, region, index, patch)
    return np.bincount(patch.classes.ravel(), minlength=s12.N_CLASSES)


def _deepglobe_job(args: tuple[Path, dg.Style, str, int, int]) -> None:
    root, style, tile_id, size, seed = args
    image, labels = dg.render_tile(style, size, np.random.default_rng([seed, 2, int(tile_id)]))
    dg.write_tile(root, tile_id, image, labels, style.quality)


def _start_worker() -> None:
    """End with the parent; one BLAS thread (small matrix products run fastest so on a busy machine)."""
    die_with_parent()
    threadpool_limits(limits=1)


def _run(fn: Callable[[Any], Any], jobs: list, workers: int, bar: tqdm) -> list:
    """Apply `fn` to every job, results in order, with `workers` processes; advances `bar`."""
    results = []
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers, initializer=_start_worker) as pool:
            for r in pool.map(fn, jobs, chunksize=4):
                results.append(r)
                bar.update(1)
    else:
        with threadpool_limits(limits=1):
            for r in map(fn, jobs):
                results.append(r)
                bar.update(1)
    return results


def generate(out: str | Path, scale: str = "tiny", seed: int = 0, overwrite: bool = False,
             progress: bool = False) -> Path:
    """Write the synthetic dataset of `scale` (tiny, default, large) to `out`; returns `out`.

    Deterministic for a seed. Built in a temporary folder renamed at the end; an existing
    non-empty `out` raises OutputExistsError unless `overwrite`.
    """
    if scale not in SCALES:
        raise ConfigError(f"synth scale {scale!r}: unknown (choose one of {', '.join(SCALES)})")
    sc = SCALES[scale]
    workers = max(1, min(sc.workers, os.cpu_count() or 1))
    out = Path(out)
    regions = s12.make_regions(sc.regions, sc.patches, np.random.default_rng([seed, 0]))
    styles = dg.make_styles(sc.styles, np.random.default_rng([seed, 3]))
    tile_ids = [str(i) for i in np.random.default_rng([seed, 4]).choice(
        np.arange(100000, 1000000), size=sc.styles * sc.tiles_per_style, replace=False)]
    tile_style = [i // sc.tiles_per_style for i in range(len(tile_ids))]
    with atomic_dir(out, overwrite=overwrite) as tmp, tqdm(
            total=sc.regions * sc.patches + len(tile_ids), desc="synth", unit="tile", disable=not progress) as bar:
        jobs = [(tmp / "sen12ms", r, i, seed) for r in regions for i in range(sc.patches)]
        hists = _run(_sen12ms_job, jobs, workers, bar)
        dg_jobs = [(tmp / "deepglobe", styles[s], t, sc.tile_size, seed) for t, s in zip(tile_ids, tile_style)]
        _run(_deepglobe_job, dg_jobs, workers, bar)
        region_rows = []
        for k, r in enumerate(regions):
            counts = np.sum(hists[k * sc.patches:(k + 1) * sc.patches], axis=0)
            region_rows.append({
                "region": r.name, "season": s12.SEASONS[r.season], "scene": r.scene,
                "lon": round(r.lon, 4), "lat": round(r.lat, 4), "epsg": r.epsg, "continent": r.continent,
                "landscape": r.biome, "patches": r.patches,
                "class_fractions": [round(float(c), 4) for c in counts / counts.sum()],
            })
        atomic_write_json(tmp / "synth.json", {
            "format": "landmeta-synth", "seed": seed, "scale": scale, "scale_parameters": asdict(sc),
            "counts": {"sen12ms_regions": len(regions), "sen12ms_patches": len(jobs),
                       "deepglobe_tiles": len(tile_ids), "deepglobe_styles": sc.styles},
            "sen12ms_regions": region_rows,
            "deepglobe_tiles": [{"tile": t, "style": s} for t, s in zip(tile_ids, tile_style)],
            "provenance": provenance(generator="landmeta.synth"),
        })
    return out
