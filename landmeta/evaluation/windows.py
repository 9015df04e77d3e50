"""The labelled windows of a user's region (`landmeta evaluate --scene --labels`) as a chip store held
in memory, so that the region's tasks index them as chips and every method is scored by the same
code as on a store's held-out regions.

Saved as `windows.npz` in the results folder (worker processes open it from there): `images`
(n, C, S, S) float32 in physical units at the checkpoint's chip size, `labels` (n,) majority class,
`masks` (n, S, S) uint8 class ids, `ignore_index` where unlabelled (segmentation only), `windows`
(n, 4) row, col, height, width in scene pixels, `blocks` (n,) spatial block (-1: left out), and
`info` (JSON: kind, region (the scene's name), scene, labels, bands, class_names, class_colors,
ignore_index, mean, std: the checkpoint's normalisation, task_classes: the classes of the labels).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from landmeta.data.store import ChipStore
from landmeta.errors import DataError
from landmeta.io import atomic_path

WINDOWS_FILE = "windows.npz"


@dataclass
class LabelWindows:
    """Window arrays of one scene's labels, and what they are (see the module docstring)."""

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None
    windows: np.ndarray
    blocks: np.ndarray
    info: dict[str, Any]

    def store(self, path: Path) -> ChipStore:
        """The windows as a chip store (one region, one chip per window, each its own parent)."""
        info, n = self.info, len(self.labels)
        manifest = {"source": "labels", "kinds": [info["kind"]], "bands": info["bands"],
                    "class_names": info["class_names"], "class_colors": info["class_colors"],
                    "ignore_index": info["ignore_index"], "chip_size": int(self.images.shape[-1]), "num_chips": n}
        tiles = [f"r{r}c{c}" for r, c, _, _ in self.windows.tolist()]
        chips = pd.DataFrame({"chip": np.arange(n), "tile": tiles, "region": info["region"], "parent": tiles,
                              "label": self.labels.astype(np.int64), "source": info["scene"]})
        regions = pd.DataFrame({"region": [info["region"]], "split": ["test"], "lon": [np.nan], "lat": [np.nan]})
        return ChipStore(Path(path), manifest, self.images, self.masks, chips, regions,
                         np.asarray(info["mean"], dtype=np.float32), np.asarray(info["std"], dtype=np.float32))


def write_windows(path: Path, windows: LabelWindows) -> None:
    """Save the windows as one npz, atomically."""
    arrays = {"images": windows.images, "labels": windows.labels, "windows": windows.windows,
              "blocks": windows.blocks, "info": np.array(json.dumps(windows.info))}
    if windows.masks is not None:
        arrays["masks"] = windows.masks
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub misreads **kwargs


def read_windows(path: Path) -> LabelWindows:
    """The windows saved by `write_windows`; DataError naming the file if it is not such a file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            masks = data["masks"] if "masks" in data.files else None
            return LabelWindows(data["images"], data["labels"], masks, data["windows"], data["blocks"],
                                json.loads(str(data["info"])))
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable windows file ({exc})") from exc


def open_windows(path: str | Path) -> ChipStore:
    """The chip store of a saved windows file."""
    return read_windows(Path(path)).store(Path(path))
