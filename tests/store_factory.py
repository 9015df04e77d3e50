"""Write a small, valid chip store in the documented format (docs/architecture.md), for tests and benchmarks.

Content is seeded random but structured like SEN12MS chips: each region holds 256² "patches" cut into
four quadrant chips that share a `parent`; a patch has a main class and its quadrants mostly carry it;
each class has its own spectral signature; val/test regions are radiometrically shifted so that
train-only statistics differ from statistics over all chips.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import box

from landmeta.io import atomic_write_json

BANDS = ["VV", "VH", "B02", "B03", "B04", "B08"]
CLASS_NAMES = ["Forest", "Shrubland", "Grassland", "Cropland", "Urban/Built-up", "Water"]
CLASS_COLORS = [(0, 153, 0), (198, 176, 68), (182, 255, 5), (194, 79, 68), (165, 165, 165), (28, 13, 255)]
SPLIT_PLAN = ("train",) * 6 + ("val",) * 2 + ("test",) * 2


def make_store(path: Path, *, seed: int = 0, chip_size: int = 32, parents_per_region: int = 20,
               splits: tuple[str, ...] = SPLIT_PLAN, classes_per_region: int = 5,
               kinds: tuple[str, ...] = ("classification", "segmentation"), bands: list[str] = BANDS) -> Path:
    """Write a store with one region per entry of `splits`; returns `path`."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    k, c, s = len(CLASS_NAMES), len(bands), chip_size
    signature = rng.uniform(0.02, 0.4, size=(k, c))  # per-class spectral means
    signature[:, :2] = rng.uniform(-25.0, -5.0, size=(k, 2))  # the first two bands: S1 backscatter in dB
    images, masks, chip_rows, region_rows, tile_rows = [], [], [], [], []
    chip = 0
    for r, split in enumerate(splits):
        region = f"ROIs{1158 + r}_spring_{r + 1}"
        present = rng.choice(k, size=min(classes_per_region, k), replace=False)
        weights = rng.dirichlet(np.full(len(present), 3.0))
        shift = 0.0 if split == "train" else 0.05  # a radiometric domain shift outside meta-train
        counts = np.zeros(k, dtype=int)
        for p in range(parents_per_region):
            parent = f"{region}_p{p}"
            main = int(rng.choice(present, p=weights))
            for q, quadrant in enumerate(("tl", "tr", "bl", "br")):
                label = main if rng.random() < 0.75 else int(rng.choice(present))
                other = int(rng.choice(present))
                mask = np.full((s, s), label, dtype=np.uint8)
                cut = int(rng.integers(s // 2 + 1, s))  # the label keeps the majority of pixels
                mask[:, cut:] = other
                mask[rng.random((s, s)) < 0.02] = 255
                img = signature[mask.clip(max=k - 1)].transpose(2, 0, 1) + shift
                img = img + rng.normal(0.0, 0.02, size=img.shape) * np.abs(signature[label])[:, None, None]
                images.append(img.astype(np.float16))
                masks.append(mask)
                tile = f"{parent}_{quadrant}"
                chip_rows.append({"chip": chip, "tile": tile, "region": region, "parent": parent,
                                  "label": label, "source": f"s2_{r + 1}/{parent}.tif"})
                hist = np.bincount(mask[mask != 255], minlength=k)
                tile_rows.append({"tile": tile, "region": region, "label": label,
                                  "class_hist": json.dumps(hist.tolist()), "source": f"s2_{r + 1}/{parent}.tif",
                                  "geometry": None})
                counts[label] += 1
                chip += 1
        lon, lat = -120.0 + 7.0 * r, -30.0 + 5.0 * r
        region_rows.append({"region": region, "split": split, "season": "spring", "cluster": -1,
                            "n_chips": 4 * parents_per_region,
                            "class_counts": json.dumps({CLASS_NAMES[i]: int(n) for i, n in enumerate(counts) if n}),
                            "geometry": None if r == len(splits) - 1 else box(lon, lat, lon + 0.1, lat + 0.1)})
    image_arr, mask_arr = np.stack(images), np.stack(masks)
    np.save(path / "images.npy", image_arr)
    np.save(path / "masks.npy", mask_arr)
    chips = pd.DataFrame(chip_rows)
    chips.to_csv(path / "chips.csv", index=False)
    gpkg = path / "regions.gpkg"
    gpd.GeoDataFrame(region_rows, geometry="geometry", crs="EPSG:4326").to_file(gpkg, layer="regions", engine="pyogrio")
    gpd.GeoDataFrame(tile_rows, geometry="geometry", crs="EPSG:4326").to_file(gpkg, layer="tiles", engine="pyogrio")
    train_regions = [row["region"] for row in region_rows if row["split"] == "train"]
    train = image_arr[chips["region"].isin(train_regions).to_numpy()].astype(np.float64)
    atomic_write_json(path / "stats.json", {"bands": bands, "regions": train_regions,
                                            "mean": train.mean(axis=(0, 2, 3)).tolist(),
                                            "std": train.std(axis=(0, 2, 3)).tolist()})
    atomic_write_json(path / "manifest.json", {
        "source": "folder", "kinds": list(kinds), "bands": bands, "class_names": CLASS_NAMES,
        "class_colors": [list(col) for col in CLASS_COLORS], "ignore_index": 255, "chip_size": s,
        "num_chips": chip, "options": {"factory_seed": seed}, "counts": {"regions": len(splits), "chips": chip},
        "skipped": [], "checksums": {}, "provenance": {"made_by": "tests/store_factory.py"}})
    return path
