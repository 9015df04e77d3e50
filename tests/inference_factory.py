"""Checkpoints built with the engine's API, and real GeoTIFF/PNG files, for the adapt and predict tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin

from landmeta.config import Config
from landmeta.meta.checkpoint import Checkpoint
from landmeta.models import build_model

UTM = "EPSG:32631"  # UTM zone 31N
TRANSFORM = from_origin(440000.0, 5400000.0, 10.0, 10.0)
CLASSES = ["Forest", "Cropland", "Water"]
COLORS = [(0, 153, 0), (194, 79, 68), (28, 13, 255)]
SYSTEM_PYTHON = "/usr/bin/python3"  # QGIS's Python bindings come with the system's Python
CHECK_QGIS = Path(__file__).resolve().parents[1] / "scripts" / "check_qgis.py"


def make_checkpoint(path: Path, kind: str = "segmentation", bands: tuple[str, ...] = ("B02", "B03", "B04", "B08"),
                    class_names: list[str] = CLASSES, colors: list | None = COLORS, chip_size: int = 32,
                    store_chip_size: int | None = None, method: str = "maml", seed: int = 0,
                    num_classes: int | None = None) -> Path:
    """A small real model (tiny U-Net or conv classifier) saved as a checkpoint in the documented format."""
    torch.manual_seed(seed)
    config = Config()
    config.meta.method = method
    config.meta.test_inner_steps = 3
    config.task.kind = kind
    if kind == "segmentation":
        config.model.name, config.model.encoder, config.model.encoder_depth = "unet", "resnet18", 3
        config.model.decoder_channels = [32, 16, 8]
    else:
        config.model.name, config.model.width, config.model.depth = "conv", 16, 3
    k = num_classes or len(class_names)
    model = build_model(config.model, len(bands), k, kind)
    Checkpoint(method=method, kind=kind, config=config, model_state=model.state_dict(), bands=tuple(bands),
               class_names=tuple(class_names), class_colors=None if colors is None else tuple(map(tuple, colors)),
               norm_mean=(0.1,) * len(bands), norm_std=(0.05,) * len(bands), chip_size=chip_size,
               store_chip_size=store_chip_size or chip_size, in_channels=len(bands), num_classes=k, step=0,
               provenance={"test": True}).save(path)
    return path


def class_field(height: int, width: int, seed: int = 0, k: int = 3) -> np.ndarray:
    """A blocky map of class ids 0..k-1 (fields of 16 px)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, k, size=(height // 16 + 1, width // 16 + 1))
    return np.kron(coarse, np.ones((16, 16), dtype=np.int64))[:height, :width].astype(np.uint8)


def reflectance(classes: np.ndarray, bands: int, seed: int = 0) -> np.ndarray:
    """uint16 Sentinel-2-like DN whose spectrum depends on the class (each class brighter in one band)."""
    rng = np.random.default_rng(seed)
    base = np.full((bands, *classes.shape), 800.0)
    for c in range(int(classes.max()) + 1):
        base[c % bands][classes == c] += 1500.0
    return (base + rng.normal(0, 60, size=base.shape)).clip(1, 10000).astype(np.uint16)


def write_geotiff(path: Path, data: np.ndarray, nodata: float | None = None, crs: str | None = UTM,
                  descriptions: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = data.shape
    with rasterio.open(path, "w", driver="GTiff", height=height, width=width, count=count, dtype=data.dtype,
                       crs=crs, transform=TRANSFORM, nodata=nodata) as dst:
        dst.write(data)
        for i, name in enumerate(descriptions or []):
            dst.set_band_description(i + 1, name)
    return path


def write_png(path: Path, array: np.ndarray) -> Path:
    """(H, W) or (H, W, 3) uint8 as PNG/JPG by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95) if path.suffix.lower() in (".jpg", ".jpeg") \
        else Image.fromarray(array).save(path)
    return path


def has_qgis() -> bool:
    """Whether the system Python imports QGIS (not part of the default setup)."""
    try:
        done = subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True, timeout=60)
        return done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def check_qgis(*args: Path | str) -> subprocess.CompletedProcess:
    """Run scripts/check_qgis.py headless with the system Python."""
    return subprocess.run([SYSTEM_PYTHON, str(CHECK_QGIS), *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin",
                                            "HOME": str(Path.home())})
