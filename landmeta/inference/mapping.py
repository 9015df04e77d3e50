"""`landmeta predict` as a library call: a checkpoint and input scenes in, maps out.

Window size is in input pixels. A checkpoint trained on chips resized from the store's chip size
(`store_chip_size`) to `chip_size` saw the ground at that scale; each window is resampled by the
same factor before the model and its probabilities back after, so a model sees what it was trained
on (`Checkpoint.store_chip_size`). A classifier predicts one class per window (a coarse map): its window
defaults to the store's chip size and is always resampled to the model's `chip_size`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from landmeta.errors import CheckpointError
from landmeta.inference.colours import Legend, default_colors
from landmeta.inference.maps import MapFiles, check_outputs, output_paths, write_maps
from landmeta.inference.predict import WindowModel, check_window, predict_strips
from landmeta.inference.scene import open_scene, scene_inputs
from landmeta.io import output_lock, provenance
from landmeta.meta.checkpoint import Checkpoint

DEFAULT_WINDOW = 1024
DEFAULT_OVERLAP = 32


@dataclass(frozen=True)
class PredictOptions:
    """How `predict` slides its windows and what it writes."""

    window: int | None = None  # input pixels per window; None = 1024 (segmentation) or the chip size
    overlap: int | None = None  # None = 32 (segmentation) or 0 (classification)
    batch: int = 1
    polygons: bool = False
    html: bool = False  # also write NAME_map.html, a self-contained map viewer
    overwrite: bool = False
    device: str = "cpu"


def legend_of(ckpt: Checkpoint) -> Legend:
    """Class names and colours of the maps (a default palette when the checkpoint has none)."""
    names = list(ckpt.class_names)
    colors = list(ckpt.class_colors) if ckpt.class_colors else default_colors(len(names))
    return Legend(names=names, colors=colors)


def window_model(ckpt: Checkpoint, device: str = "cpu") -> WindowModel:
    """The checkpoint's model with what sliding-window prediction needs to feed it."""
    where = ckpt.where
    kind = ckpt.kind
    names = list(ckpt.class_names)
    if kind == "classification" and ckpt.adapted_from is None and \
            (ckpt.method != "pretrain" or ckpt.num_classes != len(names)):
        raise CheckpointError(f"{where}: a {ckpt.method} classifier predicts task-local labels; "
                              f"adapt it to your classes first (landmeta adapt)")
    if len(names) > ckpt.num_classes:
        raise CheckpointError(f"{where}: {len(names)} class names for {ckpt.num_classes} model outputs")
    classifier = kind == "classification"
    return WindowModel(model=ckpt.model().to(device), mean=np.asarray(ckpt.norm_mean, np.float32),
                       std=np.asarray(ckpt.norm_std, np.float32), num_classes=len(names),
                       scale=ckpt.chip_size / ckpt.store_chip_size,
                       fixed_size=ckpt.chip_size if classifier else None, device=device)


def resolve_window(ckpt: Checkpoint, options: PredictOptions) -> tuple[int, int]:
    """Window and overlap in input pixels: as given, or the defaults for the task kind."""
    classifier = ckpt.kind == "classification"
    window = options.window or (ckpt.store_chip_size if classifier else DEFAULT_WINDOW)
    overlap = options.overlap if options.overlap is not None else (0 if classifier else DEFAULT_OVERLAP)
    check_window(window, overlap)
    return window, overlap


def predict_maps(ckpt: Checkpoint, inputs: Path, out: Path, options: PredictOptions,
                 progress: bool = False) -> list[MapFiles]:
    """Predict every scene of `inputs` (a raster, a per-band folder, a `.SAFE` product, or a folder of
    them) into `out`.

    Every scene is opened and its bands checked, and every output name checked, before anything
    is written; the whole run holds `out`'s write lock. A product's pixels masked by its SCL are
    counted, recorded in the legend (`scl`) and returned (`MapFiles.masked`).
    """
    with output_lock(out):
        return _predict_maps(ckpt, inputs, Path(out), options, progress)


def _predict_maps(ckpt: Checkpoint, inputs: Path, out: Path, options: PredictOptions,
                  progress: bool) -> list[MapFiles]:
    window, overlap = resolve_window(ckpt, options)
    scenes = scene_inputs(Path(inputs))
    for path in scenes:
        with open_scene(path, list(ckpt.bands)) as scene:
            check_outputs(output_paths(Path(out), scene.name, scene.georeferenced, options.polygons,
                                       options.html).values(),
                          options.overwrite)
    wm = window_model(ckpt, options.device)
    legend = legend_of(ckpt)
    record = {"model": ckpt.where, "method": ckpt.method, "adapted_from": ckpt.adapted_from,
              "window": window, "overlap": overlap, "model_window": wm.model_size(window),
              "provenance": provenance(torch=torch.__version__)}
    written = []
    for path in scenes:
        with open_scene(path, list(ckpt.bands), warn=False) as scene:
            masked = scene.masked_count()
            scene_record = record if masked is None else {**record, "scl": masked.record()}
            strips = predict_strips(scene, wm, window, overlap, options.batch, progress)
            files = write_maps(scene, strips, Path(out), legend, scene_record, options.polygons, options.overwrite,
                               options.html)
            written.append(dataclasses.replace(files, masked=masked))
    return written
