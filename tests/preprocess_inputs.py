"""Tiny raw inputs in the real layouts (SEN12MS GeoTIFF triplets, DeepGlobe jpg/png, own folders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from landmeta.classes import DEEPGLOBE_COLORS

IGBP_VALUES = [1, 6, 8, 10, 11, 12, 13, 16, 17]


def write_tif(path: Path, arr: np.ndarray, crs: str | None = "EPSG:32633", transform=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    count, h, w = arr.shape
    kwargs = {"crs": crs, "transform": transform or from_origin(500000, 5000000, 10, 10)} if crs else {}
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=count, dtype=arr.dtype, **kwargs) as dst:
        dst.write(arr)
    return path


def sen12ms_patch(root: Path, season: str, scene: int, patch: int, rng: np.random.Generator, size: int = 64,
                  s2_count: int = 13, kinds: tuple[str, ...] = ("s1", "s2", "lc")) -> dict[str, Path]:
    """One s1/s2/lc triplet; the transform places scenes 20 km apart in UTM 33N."""
    transform = from_origin(400000 + scene * 20000 + patch * size * 10, 5000000, 10, 10)
    arrays = {
        "s1": rng.normal(-15, 3, (2, size, size)).astype(np.float32),
        "s2": rng.integers(1, 6000, (s2_count, size, size)).astype(np.uint16),
        "lc": np.repeat(rng.choice(IGBP_VALUES, (1, size // 8, size // 8)).repeat(8, 1).repeat(8, 2), 4, 0)
        .astype(np.uint16),
    }
    out = {}
    for kind in kinds:
        path = root / season / f"{kind}_{scene}" / f"{season}_{kind}_{scene}_p{patch}.tif"
        out[kind] = write_tif(path, arrays[kind], transform=transform)
    return out


def sen12ms_dataset(root: Path, seasons=("ROIs1158_spring", "ROIs1868_summer"), scenes=(1, 2),
                    patches=(1, 2), size: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for season in seasons:
        for scene in scenes:
            for patch in patches:
                sen12ms_patch(root, season, scene, patch, rng, size)
    return root


def deepglobe_image(root: Path, image_id: str, rng: np.random.Generator, size: int = 64,
                    mask: bool = True) -> tuple[Path, Path]:
    """An RGB jpg and a mask png of blocks of the six class colours plus some Unknown."""
    root.mkdir(parents=True, exist_ok=True)
    colours = np.array(DEEPGLOBE_COLORS + [(0, 0, 0)], dtype=np.uint8)
    ids = rng.integers(0, 7, (size // 8, size // 8)).repeat(8, 0).repeat(8, 1)
    rgb = (colours[ids] * 0.5 + rng.integers(0, 100, (size, size, 3))).astype(np.uint8)
    sat = root / f"{image_id}_sat.jpg"
    Image.fromarray(rgb).save(sat, quality=95)
    mask_path = root / f"{image_id}_mask.png"
    if mask:
        Image.fromarray(colours[ids]).save(mask_path)
    return sat, mask_path


def deepglobe_dataset(root: Path, n: int = 8, size: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n):
        deepglobe_image(root, f"{100 + i}", rng, size)
    return root
