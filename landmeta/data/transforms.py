"""From chip indices to model-ready tensors: band selection, normalisation, resizing, augmentation."""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from landmeta.data.store import ChipStore
from landmeta.data.tasks import Task
from landmeta.errors import StoreError, TaskError


def normalise(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(…, C, H, W) physical values -> (x - mean) / std per band, float32; a band with std 0 is only centred.

    The one normalisation of the project: BatchMaker applies it with the store's train-region statistics,
    prediction with the statistics a checkpoint carries.
    """
    mean = np.asarray(mean, dtype=np.float32)[:, None, None]
    std = np.asarray(std, dtype=np.float32)
    std = np.where(std > 0, std, 1.0).astype(np.float32)[:, None, None]
    out = np.asarray(images, dtype=np.float32) - mean
    out /= std
    return out


def augmentation_pipeline() -> A.Compose:
    """Flips and 90° rotations (together the 8 symmetries of the square), the same on image and mask.

    Only geometric transforms: they are valid for any number of bands and keep the physical values
    that normalisation and the spectral signatures rely on.
    """
    return A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=1.0)])


def seed_pipeline(pipeline: A.Compose, rng: np.random.Generator) -> None:
    """Seed a pipeline and each of its transforms with its own seed drawn from `rng`.

    `Compose.set_random_seed` gives every transform the same seed, which makes their random draws
    identical (HorizontalFlip and VerticalFlip would always fire together, so only rotations occur).
    """
    seeds = rng.integers(2**31, size=len(pipeline.transforms) + 1)
    pipeline.set_random_seed(int(seeds[0]))
    for transform, seed in zip(pipeline.transforms, seeds[1:]):
        transform.set_random_seed(int(seed))


@dataclass
class TaskTensors:
    """A task's support and query as tensors: x float32 (n, C, S, S); y long, (n,) or (n, S, S)."""

    x_support: Tensor
    y_support: Tensor
    x_query: Tensor
    y_query: Tensor


class BatchMaker:
    """Turns tasks or chip indices of a store into normalised, resized (and optionally augmented) tensors."""

    def __init__(self, store: ChipStore, bands: list[str] | None = None, chip_size: int | None = None,
                 augment: bool = False) -> None:
        self.store = store
        self.bands = list(store.bands) if bands is None else list(bands)
        unknown = [b for b in self.bands if b not in store.bands]
        if unknown or not self.bands or len(set(self.bands)) != len(self.bands):
            problem = f"unknown bands {unknown}" if unknown else "bands must be a non-empty list without repeats"
            raise StoreError(f"{store.path}: {problem}; the store has {store.bands}")
        self.band_idx = np.array([store.bands.index(b) for b in self.bands], dtype=np.int64)
        self.in_channels = len(self.bands)
        self.chip_size = store.chip_size if chip_size is None else int(chip_size)
        if self.chip_size < 1:
            raise StoreError(f"{store.path}: chip_size must be positive, got {chip_size}")
        self.mean = store.mean[self.band_idx]
        self.std = store.std[self.band_idx]
        self.augment = augment
        self._pipeline = augmentation_pipeline()

    def task_tensors(self, task: Task, rng: np.random.Generator | None = None) -> TaskTensors:
        """Tensors of a task; classification targets are local labels (positions in `task.classes`).

        With `augment` on, `rng` seeds the augmentation; without an rng nothing is augmented (evaluation).
        """
        xs, ys = self._load(task.support, task.kind, rng)
        xq, yq = self._load(task.query, task.kind, rng)
        if task.kind == "classification":
            lut = np.full(self.store.num_classes, -1, dtype=np.int64)
            lut[list(task.classes)] = np.arange(len(task.classes))
            ys, yq = torch.from_numpy(lut[ys.numpy()]), torch.from_numpy(lut[yq.numpy()])
            if (ys < 0).any() or (yq < 0).any():
                raise TaskError(f"{self.store.path}: task in {task.region} has chips outside its classes "
                                f"{task.classes}")
        return TaskTensors(xs, ys, xq, yq)

    def chip_tensors(self, idx: np.ndarray, kind: str, rng: np.random.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Tensors of any chips (pooled pretraining batches): x and global labels or masks."""
        if kind not in self.store.kinds:
            raise StoreError(f"{self.store.path}: store has no {kind!r} data (kinds: {self.store.kinds})")
        return self._load(np.asarray(idx, dtype=np.int64), kind, rng)

    def _load(self, idx: np.ndarray, kind: str, rng: np.random.Generator | None) -> tuple[Tensor, Tensor]:
        x = self.store.images(idx)
        if not np.array_equal(self.band_idx, np.arange(len(self.store.bands))):
            x = x[:, self.band_idx]
        x = normalise(x, self.mean, self.std)
        if kind == "classification":
            labels = self.store.labels(idx)
            if (labels < 0).any():
                raise StoreError(f"{self.store.path}: chips {idx[labels < 0][:5].tolist()} have no label (-1)")
            y = torch.from_numpy(labels)
        else:
            y = torch.from_numpy(self.store.masks(idx))
        xt = resize_chips(torch.from_numpy(x), self.chip_size, mask=False)
        if kind == "segmentation":
            y = resize_chips(y[:, None], self.chip_size, mask=True)[:, 0]
        if self.augment and rng is not None:
            xt, masks = self._augment(xt, y if kind == "segmentation" else None, rng)
            y = y if masks is None else masks
        return xt.contiguous(), y.long()

    def _augment(self, x: Tensor, masks: Tensor | None,
                 rng: np.random.Generator) -> tuple[Tensor, Tensor | None]:
        """Each chip (and its mask) through the pipeline as HWC float32 with any band count, seeded from `rng`."""
        seed_pipeline(self._pipeline, rng)
        hwc = np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))
        x_out = torch.empty_like(x)
        m_out = None if masks is None else torch.empty_like(masks)
        for i in range(hwc.shape[0]):
            targets = {"image": hwc[i]} if masks is None else {"image": hwc[i], "mask": masks[i].numpy()}
            out = self._pipeline(**targets)
            x_out[i] = torch.from_numpy(out["image"]).permute(2, 0, 1)
            if m_out is not None:
                m_out[i] = torch.from_numpy(out["mask"])
        return x_out, m_out


def resize_chips(t: Tensor, size: int, mask: bool) -> Tensor:
    """(n, C, H, W) to (n, C, size, size): nearest for masks, area to shrink and bilinear to grow images."""
    if t.shape[-1] == size and t.shape[-2] == size:
        return t
    if mask:
        return F.interpolate(t, size=(size, size), mode="nearest-exact")
    if size < t.shape[-1]:
        return F.interpolate(t, size=(size, size), mode="area")
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
