"""Reading a chip store (`data/NAME/`, format in docs/architecture.md): validated on open, arrays memory-mapped."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from landmeta.errors import StoreError
from landmeta.vocab import KINDS, SPLITS

MANIFEST_KEYS = ("source", "kinds", "bands", "class_names", "class_colors", "ignore_index", "chip_size",
                 "num_chips")
CHIP_COLUMNS = ("chip", "tile", "region", "parent", "label", "source")


class ChipStore:
    """A chip store opened for reading: manifest, chip and region tables, stats, memory-mapped arrays."""

    def __init__(self, path: Path, manifest: dict[str, Any], images: np.ndarray, masks: np.ndarray | None,
                 chips: pd.DataFrame, regions: pd.DataFrame, mean: np.ndarray, std: np.ndarray) -> None:
        self.path = path
        self.manifest = manifest
        self.bands: list[str] = list(manifest["bands"])
        self.class_names: list[str] = list(manifest["class_names"])
        self.class_colors: list[tuple[int, int, int]] = [(int(r), int(g), int(b)) for r, g, b in manifest["class_colors"]]
        self.kinds: list[str] = list(manifest["kinds"])
        self.chip_size = int(manifest["chip_size"])
        self.num_classes = len(self.class_names)
        self.ignore_index = int(manifest["ignore_index"])
        self.chips = chips
        self.regions = regions
        self.mean = mean
        self.std = std
        self._images = images
        self._masks = masks
        self._labels = chips["label"].to_numpy(dtype=np.int64)
        self.derived: dict[tuple, Any] = {}  # tables computed once from this store (task pools by split, ...)

    @classmethod
    def open(cls, path: str | Path) -> ChipStore:
        """Open and validate a store; StoreError naming the file and the problem if anything is off."""
        path = Path(path)
        if not path.is_dir():
            raise StoreError(f"{path}: no chip store here (not a folder; run `landmeta preprocess` first)")
        manifest = _read_manifest(path / "manifest.json")
        n, bands, size = int(manifest["num_chips"]), list(manifest["bands"]), int(manifest["chip_size"])
        images = _load_array(path / "images.npy")
        if images.ndim != 4 or images.shape != (n, len(bands), size, size) or images.dtype.kind != "f":
            raise StoreError(f"{path / 'images.npy'}: expected float array of shape {(n, len(bands), size, size)} "
                             f"(num_chips, bands, chip_size, chip_size), got {images.dtype} {images.shape}")
        masks = None
        if (path / "masks.npy").exists() or "segmentation" in manifest["kinds"]:
            masks = _load_array(path / "masks.npy")
            if masks.shape != (n, size, size) or masks.dtype != np.uint8:
                raise StoreError(f"{path / 'masks.npy'}: expected uint8 array of shape {(n, size, size)}, "
                                 f"got {masks.dtype} {masks.shape}")
        chips = _read_chips(path / "chips.csv", n)
        regions = _read_regions(path / "regions.gpkg")
        missing = sorted(set(chips["region"]) - set(regions["region"]))
        if missing:
            raise StoreError(f"{path / 'regions.gpkg'}: regions {missing[:5]} of chips.csv are not in layer 'regions'")
        mean, std = _read_stats(path / "stats.json", bands)
        return cls(path, manifest, images, masks, chips, regions, mean, std)

    def regions_in(self, split: str) -> list[str]:
        """Sorted ids of the regions of one split (train, val or test)."""
        if split not in SPLITS:
            raise StoreError(f"{self.path}: unknown split {split!r} (expected one of {list(SPLITS)})")
        return sorted(self.regions.loc[self.regions["split"] == split, "region"])

    def images(self, idx: np.ndarray) -> np.ndarray:
        """Chips `idx` as (n, C, H, W) float32 in physical units."""
        import torch  # converts float16 several times faster than numpy
        raw = np.ascontiguousarray(self._images[self._check_idx(idx)])
        return torch.from_numpy(raw).float().numpy() if raw.dtype == np.float16 else raw.astype(np.float32)

    def masks(self, idx: np.ndarray) -> np.ndarray:
        """Masks of chips `idx` as (n, H, W) uint8 class ids, `ignore_index` where unknown."""
        if self._masks is None:
            raise StoreError(f"{self.path}: no masks.npy (store kinds: {self.kinds})")
        return np.asarray(self._masks[self._check_idx(idx)])

    def labels(self, idx: np.ndarray) -> np.ndarray:
        """Majority class of chips `idx` as (n,) int64; -1 where a chip has no labelled pixel."""
        return self._labels[self._check_idx(idx)]

    def _check_idx(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        if idx.ndim != 1:
            raise StoreError(f"{self.path}: chip indices must be a 1-D array, got shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= len(self._labels)):
            raise StoreError(f"{self.path}: chip index out of range 0..{len(self._labels) - 1}")
        return idx

    def __len__(self) -> int:
        return len(self._labels)

    def __repr__(self) -> str:
        return (f"ChipStore({str(self.path)!r}, chips={len(self)}, bands={len(self.bands)}, "
                f"classes={self.num_classes}, chip_size={self.chip_size}, kinds={self.kinds})")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise StoreError(f"{path}: missing (an incomplete chip store; rerun `landmeta preprocess`)")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: not readable JSON ({exc})") from exc


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest = _read_json(path)
    if not isinstance(manifest, dict):
        raise StoreError(f"{path}: expected a JSON object")
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise StoreError(f"{path}: missing keys {missing}")
    unknown = [k for k in manifest["kinds"] if k not in KINDS]
    if not manifest["kinds"] or unknown:
        raise StoreError(f"{path}: 'kinds' must list some of {list(KINDS)}, got {manifest['kinds']}")
    if len(manifest["class_colors"]) != len(manifest["class_names"]):
        raise StoreError(f"{path}: {len(manifest['class_colors'])} class_colors for "
                         f"{len(manifest['class_names'])} class_names")
    return manifest


def _load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise StoreError(f"{path}: missing (an incomplete chip store; rerun `landmeta preprocess`)")
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: not a readable .npy array ({exc})") from exc


def _read_chips(path: Path, n: int) -> pd.DataFrame:
    if not path.is_file():
        raise StoreError(f"{path}: missing (an incomplete chip store; rerun `landmeta preprocess`)")
    try:
        chips = pd.read_csv(path, dtype={"tile": str, "region": str, "parent": str, "source": str},
                            keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise StoreError(f"{path}: not a readable CSV ({exc})") from exc
    missing = [c for c in CHIP_COLUMNS if c not in chips.columns]
    if missing:
        raise StoreError(f"{path}: missing columns {missing}")
    if len(chips) != n or not np.array_equal(chips["chip"].to_numpy(), np.arange(n)):
        raise StoreError(f"{path}: expected {n} rows with chip = 0..{n - 1} in order, got {len(chips)} rows")
    if not pd.api.types.is_integer_dtype(chips["label"]):
        raise StoreError(f"{path}: column 'label' must hold integers (-1 for none)")
    return chips


def _read_regions(path: Path) -> pd.DataFrame:
    """The `regions` layer's attributes, plus lon/lat of each footprint's centroid (NaN without one)."""
    import geopandas as gpd
    if not path.is_file():
        raise StoreError(f"{path}: missing (an incomplete chip store; rerun `landmeta preprocess`)")
    try:
        gdf = gpd.read_file(path, layer="regions", engine="pyogrio")
    except Exception as exc:  # pyogrio raises several unrelated types for unreadable files or layers
        raise StoreError(f"{path}: cannot read layer 'regions' ({exc})") from exc
    for column in ("region", "split"):
        if column not in gdf.columns:
            raise StoreError(f"{path}: layer 'regions' has no column {column!r}")
    bad = sorted(set(gdf["split"]) - set(SPLITS))
    if bad:
        raise StoreError(f"{path}: layer 'regions' has unknown splits {bad} (expected {list(SPLITS)})")
    regions = pd.DataFrame(gdf.drop(columns=gdf.geometry.name))
    regions["region"] = regions["region"].astype(str)
    lon = np.full(len(gdf), np.nan)
    lat = np.full(len(gdf), np.nan)
    has = ~(gdf.geometry.isna() | gdf.geometry.is_empty).to_numpy()
    if has.any():
        with warnings.catch_warnings():  # a centroid in degrees is fine for a location marker
            warnings.simplefilter("ignore", UserWarning)
            centroids = gdf.geometry[has].centroid
        lon[has], lat[has] = centroids.x.to_numpy(), centroids.y.to_numpy()
    regions["lon"], regions["lat"] = lon, lat
    return regions.reset_index(drop=True)


def _read_stats(path: Path, bands: list[str]) -> tuple[np.ndarray, np.ndarray]:
    stats = _read_json(path)
    if not isinstance(stats, dict) or "mean" not in stats or "std" not in stats:
        raise StoreError(f"{path}: expected an object with 'mean' and 'std' per band")
    if "bands" in stats and list(stats["bands"]) != bands:
        raise StoreError(f"{path}: bands {stats['bands']} differ from the manifest's {bands}")
    mean = np.asarray(stats["mean"], dtype=np.float32)
    std = np.asarray(stats["std"], dtype=np.float32)
    if mean.shape != (len(bands),) or std.shape != (len(bands),):
        raise StoreError(f"{path}: expected {len(bands)} means and stds (one per band), "
                         f"got {mean.shape[0] if mean.ndim else 1} and {std.shape[0] if std.ndim else 1}")
    if not (np.isfinite(mean).all() and np.isfinite(std).all()) or (std < 0).any():
        raise StoreError(f"{path}: mean and std must be finite and std non-negative")
    return mean, std
