"""Sliding-window prediction over rasters of any size, with memory that does not grow with the raster.

Windows of `window` input pixels step by `window - overlap` over the scene (the last row and column
of windows reach past the edge; those pixels are mirrored in and dropped). In every overlap the
class probabilities of neighbouring windows are cross-faded with linear weights that sum to one,
so seams vanish and no renormalisation is needed. The scene is processed as strips of one row of
windows; within a strip, windows go left to right in batches, and each block of columns is finished
as soon as no later window touches it. Only the `overlap` rows shared with the next strip are
carried over, so memory is a few windows plus `overlap` rows of probabilities, not the scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from landmeta.data.transforms import _resize as resize_chips
from landmeta.data.transforms import normalise
from landmeta.errors import ModelError
from landmeta.inference.scene import Scene

NODATA = 255


@dataclass(frozen=True)
class WindowModel:
    """A model and how it sees pixels: normalisation, scale, and which outputs are classes."""

    model: nn.Module
    mean: np.ndarray
    std: np.ndarray
    kind: str  # segmentation: per-pixel logits; classification: one label per window
    num_classes: int  # outputs used (the first `num_classes` logits)
    model_window: int  # side, in model pixels, of what the model sees for one window
    device: str = "cpu"


@dataclass(frozen=True)
class Strip:
    """Finished output rows: class ids (255 = nodata) and confidence in percent (255 = nodata)."""

    row: int
    classes: np.ndarray  # (h, width) uint8
    confidence: np.ndarray  # (h, width) uint8


def crossfade(window: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    """1-D window weights: linear ramps over the overlaps (flat at the scene's edges); neighbours sum to 1."""
    weight = np.ones(window, dtype=np.float32)
    if overlap:
        ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        if not first:
            weight[:overlap] = ramp
        if not last:
            weight[window - overlap:] = ramp[::-1]
    return weight


def window_starts(size: int, window: int, overlap: int) -> list[int]:
    """Start offsets covering `size` pixels; the last window may reach past the end."""
    stride = window - overlap
    count = max(1, int(np.ceil((size - overlap) / stride)))
    return [i * stride for i in range(count)]


def check_window(window: int, overlap: int) -> None:
    if window < 8:
        raise ModelError(f"--window {window}: must be at least 8 pixels")
    if not 0 <= overlap <= window // 2:
        raise ModelError(f"--overlap {overlap}: must be between 0 and half the window ({window // 2})")


def predict_strips(scene: Scene, wm: WindowModel, window: int, overlap: int, batch: int,
                   progress: bool = False) -> Iterator[Strip]:
    """Predict `scene` and yield finished strips of rows, top to bottom."""
    check_window(window, overlap)
    stride = window - overlap
    ys = window_starts(scene.height, window, overlap)
    xs = window_starts(scene.width, window, overlap)
    padded_width = xs[-1] + window
    k = wm.num_classes
    carry = np.zeros((k, overlap, padded_width), dtype=np.float32)  # rows shared with the next strip
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(ys) * len(xs), desc=scene.name, unit="win")
    try:
        for j, y in enumerate(ys):
            last_row = j == len(ys) - 1
            wy = crossfade(window, overlap, j == 0, last_row)
            out_rows = window if last_row else stride
            classes = np.full((out_rows, padded_width), NODATA, dtype=np.uint8)
            confidence = np.full((out_rows, padded_width), NODATA, dtype=np.uint8)
            pending = np.zeros((k, window, overlap), dtype=np.float32)  # columns shared with the next batch
            for b in range(0, len(xs), batch):
                idx = range(b, min(b + batch, len(xs)))
                x0 = xs[idx[0]]
                span = len(idx) * stride + overlap
                image, valid = scene.read(y, x0, window, span)
                probs = _forward(wm, image, [xs[i] - x0 for i in idx], window)
                acc = np.zeros((k, window, span), dtype=np.float32)
                acc[:, :, :overlap] = pending
                for n, i in enumerate(idx):
                    wx = crossfade(window, overlap, i == 0, i == len(xs) - 1)
                    c = xs[i] - x0
                    acc[:, :, c:c + window] += probs[n] * (wy[:, None] * wx[None, :])
                done = span if idx[-1] == len(xs) - 1 else span - overlap
                block = acc[:, :, :done]
                if overlap:
                    block[:, :overlap] += carry[:, :, x0:x0 + done]
                    carry[:, :, x0:x0 + done] = block[:, stride:]
                pending = acc[:, :, done:]
                final = block[:, :out_rows]
                best = final.argmax(axis=0)
                conf = np.take_along_axis(final, best[None], axis=0)[0]
                ok = valid[:out_rows, :done]
                classes[:, x0:x0 + done] = np.where(ok, best, NODATA)
                confidence[:, x0:x0 + done] = np.where(ok, np.rint(np.clip(conf, 0, 1) * 100), NODATA)
                if bar is not None:
                    bar.update(len(idx))
            rows = min(out_rows, scene.height - y)
            if rows > 0:
                yield Strip(y, classes[:rows, :scene.width], confidence[:rows, :scene.width])
    finally:
        if bar is not None:
            bar.close()


def _forward(wm: WindowModel, image: np.ndarray, offsets: list[int], window: int) -> np.ndarray:
    """Class probabilities (n, K, window, window) for the windows at `offsets` of an image strip."""
    x = normalise(image, wm.mean, wm.std)
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)  # nodata -> the band mean
    tiles = torch.from_numpy(np.stack([x[:, :, c:c + window] for c in offsets]))
    tiles = resize_chips(tiles, wm.model_window, mask=False).to(wm.device)
    with torch.inference_mode():
        try:
            logits = wm.model(tiles)
        except RuntimeError as exc:
            raise ModelError(f"model cannot run on {wm.model_window}-pixel windows "
                             f"({str(exc).splitlines()[0]}); try another --window") from exc
    probs = torch.softmax(logits[:, :wm.num_classes].float(), dim=1).cpu()
    if probs.ndim == 2:  # classifier: one label per window
        return probs.numpy()[:, :, None, None]
    if probs.shape[-1] != window:
        probs = F.interpolate(probs, size=(window, window), mode="bilinear", align_corners=False)
    return probs.numpy()
