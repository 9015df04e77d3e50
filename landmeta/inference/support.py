"""A user's labelled tiles of a new region (the support set), as tensors a checkpoint can adapt on.

Layouts (tiles are GeoTIFF, PNG or JPG files, or folders of one GeoTIFF per band):
- segmentation: `DIR/images/<tile>` with `DIR/masks/<tile stem>.{png,tif}`; masks hold the
  checkpoint's class ids (255 = unlabelled), or ids/colours named by a class map (`name,id` or
  `name,id,R,G,B` lines, as for `landmeta preprocess`) whose names are checkpoint classes (or
  `ignore`); RGB masks without a class map are read with the checkpoint's class colours.
- classification: `DIR/<class name>/<tile>`; the folder names become the adapted model's classes.
Images are read like prediction inputs (`landmeta.inference.scene`: same band matching and scaling).
Tiles are cut into windows of the store's chip size (a smaller tile is one window) and each window
is resized to the checkpoint's chip size, as the training chips were.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.errors import NotGeoreferencedWarning
from torch import Tensor

from landmeta.classes import IGNORE_INDEX
from landmeta.data.chips import covering_windows
from landmeta.data.folder import IMAGE_SUFFIXES, read_class_map, read_mask
from landmeta.data.geo import band_files, read_header
from landmeta.data.transforms import normalise, resize_chips
from landmeta.errors import DataError
from landmeta.inference.scene import open_scene
from landmeta.meta.checkpoint import Checkpoint

IGNORE_NAMES = ("ignore", "unknown", "unlabelled", "unlabeled")


@dataclass(frozen=True)
class MaskLookup:
    """Mask value -> checkpoint class id (`table`), which values are allowed, RGB colours of ids."""

    table: np.ndarray
    known: np.ndarray
    colours: dict[tuple[int, int, int], int]
    source: Path | None


def _key(name: str) -> str:
    return name.strip().lower()


@dataclass
class SupportSet:
    """Support tensors: x (n, C, S, S) normalised; y (n,) local labels or (n, S, S) class ids."""

    x: Tensor
    y: Tensor
    tiles: list[str]
    class_names: list[str]  # classes of the adapted model, in output order
    classes: list[int] | None  # classification: the checkpoint's ids of those classes, when it has them all


def read_support(folder: Path, ckpt: Checkpoint, class_map: Path | None = None,
                 progress: bool = False) -> SupportSet:
    """Read and chip the support folder for `ckpt`; DataError naming the file on anything wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: support folder not found")
    segmentation = (folder / "images").is_dir()
    kind = ckpt.kind
    if segmentation != (kind == "segmentation"):
        expected = "images/ and masks/" if kind == "segmentation" else "one folder per class"
        raise DataError(f"{folder}: the checkpoint is a {kind} model; its support folder needs {expected}")
    pairs: Sequence[tuple[Path, Path | int]]  # (image, mask) or (image, class)
    if segmentation:
        pairs = _segmentation_tiles(folder)
        lut = _mask_lookup(ckpt, class_map)
        names, classes = list(ckpt.class_names), None
    else:
        if class_map is not None:
            raise DataError(f"{class_map}: a class map applies to masks; class folders name the classes")
        pairs, names = _class_tiles(folder)
        known = {_key(n): i for i, n in enumerate(ckpt.class_names)}
        classes = [known[_key(n)] for n in names] if all(_key(n) in known for n in names) else None
        lut = None
    xs, ys, tiles = [], [], []
    iterator = pairs
    if progress:
        from tqdm import tqdm
        iterator = tqdm(pairs, desc="support tiles", unit="tile")
    for image_path, target in iterator:
        x, y = _chips(image_path, target, lut, ckpt)
        if len(x):
            xs.append(x)
            ys.append(y)
            tiles.append(str(image_path.relative_to(folder)))
    if not xs:
        raise DataError(f"{folder}: no labelled pixels in its {len(pairs)} tiles (masks all unlabelled or nodata)")
    return SupportSet(x=torch.cat(xs), y=torch.cat(ys), tiles=tiles, class_names=names, classes=classes)


def _tile_inputs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and (
        (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) or (p.is_dir() and band_files(p))))


def _segmentation_tiles(folder: Path) -> list[tuple[Path, Path]]:
    images = _tile_inputs(folder / "images")
    if not images:
        raise DataError(f"{folder / 'images'}: no image tiles (GeoTIFF, PNG, JPG or per-band folders)")
    pairs = []
    for image in images:
        stem = image.name if image.is_dir() else image.stem
        masks = [folder / "masks" / f"{stem}{s}" for s in (".png", ".tif", ".tiff")]
        mask = next((m for m in masks if m.is_file()), None)
        if mask is None:
            raise DataError(f"{image}: no mask {folder / 'masks' / stem}.png or .tif")
        pairs.append((image, mask))
    return pairs


def _class_tiles(folder: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    names: list[str] = []
    pairs: list[tuple[Path, int]] = []
    for cdir in class_dirs:
        inputs = _tile_inputs(cdir)
        if inputs:
            pairs += [(p, len(names)) for p in inputs]
            names.append(cdir.name)
    if not pairs:
        raise DataError(f"{folder}: no labelled tiles (expected <class name>/<tile> folders)")
    if len(names) < 2:
        raise DataError(f"{folder}: tiles of {len(names)} class; a classifier needs at least 2 classes")
    return pairs, names


def _mask_lookup(ckpt: Checkpoint, class_map: Path | None) -> MaskLookup:
    """How mask values become checkpoint class ids: from the class map, or the ids as they are."""
    ckpt_names = list(ckpt.class_names)
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    known = np.zeros(256, dtype=bool)
    known[IGNORE_INDEX] = True
    if class_map is None:
        table[:len(ckpt_names)] = np.arange(len(ckpt_names))
        known[:len(ckpt_names)] = True
        colours = {c: i for i, c in enumerate(ckpt.class_colors or ())}
        if colours:
            colours.setdefault((0, 0, 0), IGNORE_INDEX)
        return MaskLookup(table, known, colours, None)
    names, colours = read_class_map(class_map)
    lookup = {_key(n): i for i, n in enumerate(ckpt_names)}
    for mask_id, name in enumerate(names):
        known[mask_id] = True
        if _key(name) in IGNORE_NAMES:
            continue
        if _key(name) not in lookup:
            raise DataError(f"{class_map}: class {name!r} is not a class of the checkpoint "
                            f"({', '.join(ckpt_names)}; or 'ignore')")
        table[mask_id] = lookup[_key(name)]
    return MaskLookup(table, known, colours, class_map)


def _read_target_mask(path: Path, lut: MaskLookup, ckpt: Checkpoint) -> np.ndarray:
    """Checkpoint class ids (H, W) of a mask; DataError naming values the checkpoint does not know."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        rgb = read_header(path)["count"] >= 3 and bool(lut.colours)
    ids = read_mask(path, 0, lut.colours if rgb else {})
    unknown = np.unique(ids[~lut.known[ids]])
    if unknown.size:
        names = ", ".join(f"{i} {n}" for i, n in enumerate(ckpt.class_names))
        source = f"the class map {lut.source}" if lut.source else f"the checkpoint's classes ({names})"
        raise DataError(f"{path}: mask values {unknown[:10].tolist()} are not in {source}; "
                        f"pass --class-map FILE (lines name,id) to map them, 255 = unlabelled")
    return lut.table[ids]


def _chips(image_path: Path, target: Path | int, lut: Any, ckpt: Checkpoint) -> tuple[Tensor, Tensor]:
    """Normalised chips (n, C, S, S) of one tile, and their masks (n, S, S) or labels (n,)."""
    with open_scene(image_path, list(ckpt.bands)) as scene:
        image, valid = scene.read(0, 0, scene.height, scene.width)
    if isinstance(target, Path):
        mask = _read_target_mask(target, lut, ckpt)
        if mask.shape != valid.shape:
            raise DataError(f"{target}: mask is {mask.shape[1]}x{mask.shape[0]}, "
                            f"image {image_path.name} is {valid.shape[1]}x{valid.shape[0]}")
        mask = np.where(valid, mask, IGNORE_INDEX).astype(np.uint8)
    else:
        mask = np.where(valid, 0, IGNORE_INDEX).astype(np.uint8)  # only to drop windows without data
    size = ckpt.store_chip_size
    rows, cols = covering_windows(image.shape[1], size), covering_windows(image.shape[2], size)
    xs, ms = [], []
    for r0, r1 in rows:
        for c0, c1 in cols:
            if (mask[r0:r1, c0:c1] != IGNORE_INDEX).any():
                xs.append(image[:, r0:r1, c0:c1])
                ms.append(mask[r0:r1, c0:c1])
    chip = ckpt.chip_size
    if not xs:
        empty = torch.zeros((0, image.shape[0], chip, chip))
        return empty, torch.zeros((0, chip, chip) if isinstance(target, Path) else (0,), dtype=torch.long)
    normalised = [torch.from_numpy(np.nan_to_num(normalise(c, ckpt.norm_mean, ckpt.norm_std)))[None] for c in xs]
    x = torch.cat([resize_chips(t, chip, mask=False) for t in normalised])
    if isinstance(target, Path):
        y = torch.cat([resize_chips(torch.from_numpy(m)[None, None], chip, mask=True)[0] for m in ms])
        return x, y.long()
    return x, torch.full((len(xs),), target, dtype=torch.long)
