"""Sliding-window prediction over rasters of any size, with memory that does not grow with the raster.

Windows of `window` input pixels step by `window - overlap` over the scene. The last two rows
and columns of windows share what is left of the scene (`landmeta.data.chips.sliding_windows`: rounded up to a size the
model accepts; the few pixels past the edge are mirrored in and dropped), so almost no work is
wasted at the edges and no thin window runs the model inefficiently. In every overlap the class
probabilities of neighbouring windows are cross-faded with linear weights that sum to one, so
there is no hard seam and no renormalisation is needed. The scene is processed as strips of one
row of windows; within a strip, windows go left to right in batches, and each block of columns is
finished as soon as no later window touches it. Only the `overlap` rows shared with the next
strip are carried over, so memory is a few windows plus `overlap` rows of probabilities, not the
scene.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from landmeta.data.chips import sliding_windows
from landmeta.data.transforms import normalise
from landmeta.errors import ModelError
from landmeta.inference.scene import Scene

NODATA = 255
MODEL_MULTIPLE = 32  # model inputs are multiples of this (a U-Net's total downsampling)


@dataclass(frozen=True)
class WindowModel:
    """A model and how it sees pixels: normalisation, scale, and which outputs are classes."""

    model: nn.Module
    mean: np.ndarray
    std: np.ndarray
    num_classes: int  # outputs used (the first `num_classes` logits)
    scale: float = 1.0  # model pixels per input pixel
    fixed_size: int | None = None  # a classifier's input side: every window is resampled to it
    device: str = "cpu"

    @property
    def edge_multiple(self) -> int:
        """Input sizes that map to whole multiples of MODEL_MULTIPLE model pixels."""
        return max(1, int(np.ceil(MODEL_MULTIPLE / self.scale)))

    def model_size(self, length: int) -> int:
        """Side in model pixels of an input side of `length` pixels."""
        if self.fixed_size is not None:
            return self.fixed_size
        return max(MODEL_MULTIPLE, int(round(length * self.scale / MODEL_MULTIPLE)) * MODEL_MULTIPLE)


@dataclass(frozen=True)
class Strip:
    """Finished output rows: class ids (255 = nodata) and confidence in percent (255 = nodata)."""

    row: int
    classes: np.ndarray  # (h, width) uint8
    confidence: np.ndarray  # (h, width) uint8


def crossfade(length: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    """1-D window weights: linear ramps over the overlaps (flat at the scene's edges); neighbours sum to 1."""
    weight = np.ones(length, dtype=np.float32)
    if overlap:
        ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        if not first:
            weight[:overlap] = ramp
        if not last:
            weight[length - overlap:] = ramp[::-1]
    return weight


def check_window(window: int, overlap: int) -> None:
    """ModelError unless the window is at least 8 pixels and the overlap at most half of it."""
    if window < 8:
        raise ModelError(f"--window {window}: must be at least 8 pixels")
    if not 0 <= overlap <= window // 2:
        raise ModelError(f"--overlap {overlap}: must be between 0 and half the window ({window // 2})")


def predict_strips(scene: Scene, wm: WindowModel, window: int, overlap: int, batch: int,
                   progress: bool = False) -> Iterator[Strip]:
    """Predict `scene` and yield finished strips of rows, top to bottom."""
    check_window(window, overlap)
    fixed = wm.fixed_size is not None
    ys = sliding_windows(scene.height, window, overlap, wm.edge_multiple, fixed)
    xs = sliding_windows(scene.width, window, overlap, wm.edge_multiple, fixed)
    width = xs[-1][0] + xs[-1][1]
    k = wm.num_classes
    carry = np.zeros((k, overlap, width), dtype=np.float32)  # rows shared with the next strip
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(ys) * len(xs), desc=scene.name, unit="win")
    try:
        for j, (y, h) in enumerate(ys):
            last_row = j == len(ys) - 1
            wy = crossfade(h, overlap, j == 0, last_row)
            out_rows = h if last_row else h - overlap  # the next strip starts there
            classes = np.full((out_rows, width), NODATA, dtype=np.uint8)
            confidence = np.full((out_rows, width), NODATA, dtype=np.uint8)
            pending = np.zeros((k, h, overlap), dtype=np.float32)  # columns shared with the next batch
            for idx in _batches(xs, batch):
                x0 = xs[idx[0]][0]
                span = xs[idx[-1]][0] + xs[idx[-1]][1] - x0
                image, valid = scene.read(y, x0, h, span)
                probs = _forward(wm, image, valid, [(xs[i][0] - x0, xs[i][1]) for i in idx])
                for n, i in enumerate(idx):  # weight each window's probabilities in place
                    wx = crossfade(xs[i][1], overlap, i == 0, i == len(xs) - 1)
                    probs[n] *= wy[:, None] * wx[None, :]
                if len(idx) == 1:  # one window spans the batch: accumulate into its own array
                    acc = probs[0]
                    acc[:, :, :overlap] += pending
                else:
                    acc = np.zeros((k, h, span), dtype=np.float32)
                    acc[:, :, :overlap] = pending
                    for n, i in enumerate(idx):
                        c = xs[i][0] - x0
                        acc[:, :, c:c + xs[i][1]] += probs[n]
                done = span if idx[-1] == len(xs) - 1 else span - overlap
                block = acc[:, :, :done]
                if overlap:
                    block[:, :overlap] += carry[:, :, x0:x0 + done]
                    if not last_row:
                        carry[:, :, x0:x0 + done] = block[:, out_rows:]
                pending = acc[:, :, done:]
                top = torch.from_numpy(block[:, :out_rows]).max(dim=0)  # one pass for both
                conf, best = top.values.numpy(), top.indices.numpy()
                ok = valid[:out_rows, :done]
                classes[:, x0:x0 + done] = np.where(ok, best, NODATA)
                confidence[:, x0:x0 + done] = np.where(ok, np.rint(np.clip(conf, 0, 1) * 100), NODATA)
                if bar is not None:
                    bar.update(len(idx))
            rows = min(out_rows, scene.height - y)
            yield Strip(y, classes[:rows, :scene.width], confidence[:rows, :scene.width])
    finally:
        if bar is not None:
            bar.close()


def _batches(xs: list[tuple[int, int]], batch: int) -> Iterator[list[int]]:
    """Consecutive windows of one size, at most `batch` at a time."""
    group: list[int] = []
    for i, (_, length) in enumerate(xs):
        if group and (len(group) == batch or xs[group[0]][1] != length):
            yield group
            group = []
        group.append(i)
    yield group


def _forward(wm: WindowModel, image: np.ndarray, valid: np.ndarray, windows: list[tuple[int, int]]) -> np.ndarray:
    """Class probabilities (n, K, h, w) of same-sized windows (offset, width) of an image strip
    (physical units, NaN at nodata; normalised in place)."""
    h, w = image.shape[1], windows[0][1]
    scale, shift = normalise_affine(wm.mean, wm.std)
    x = torch.from_numpy(image).mul_(torch.from_numpy(scale)).add_(torch.from_numpy(shift))
    if not valid.all():
        x.nan_to_num_(0.0)  # nodata -> the band mean
    tiles = x[None] if windows == [(0, image.shape[2])] else torch.stack([x[:, :, c:c + w] for c, _ in windows])
    size = (wm.model_size(h), wm.model_size(w))
    if size != (h, w):  # as training chips were resized: area to shrink, bilinear to grow
        tiles = F.interpolate(tiles, size=size, mode="area") if size[0] < h and size[1] < w else \
            F.interpolate(tiles, size=size, mode="bilinear", align_corners=False)
    with torch.inference_mode():
        try:
            logits = wm.model(tiles.to(wm.device))
        except RuntimeError as exc:
            raise ModelError(f"model cannot run on {size[0]}x{size[1]} windows "
                             f"({str(exc).splitlines()[0]}); try another --window") from exc
    probs = torch.softmax(logits[:, :wm.num_classes].float(), dim=1).cpu()
    if probs.ndim == 2:  # classifier: one label per window
        return np.broadcast_to(probs.numpy()[:, :, None, None], (*probs.shape, h, w)).copy()
    if probs.shape[-2:] != (h, w):
        probs = F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)
    return probs.numpy()


def normalise_affine(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`normalise` as x * scale + shift per band ((C, 1, 1) float32 each), for one in-place pass."""
    bands = len(mean)
    shift = normalise(np.zeros((bands, 1, 1), np.float32), mean, std)
    scale = normalise(np.ones((bands, 1, 1), np.float32), mean, std) - shift
    return scale, shift
