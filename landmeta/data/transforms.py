"""From chip indices to model-ready tensors: band selection, normalisation, resizing, augmentation."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import Tensor

from landmeta.data.store import ChipStore
from landmeta.data.tasks import Task
from landmeta.errors import StoreError, TaskError


def normalise(images: np.ndarray, mean: ArrayLike, std: ArrayLike) -> np.ndarray:
    """(…, C, H, W) physical values -> (x - mean) / std per band, float32; a band with std 0 is only centred.

    The one normalisation of the project: BatchMaker applies it with the store's train-region statistics,
    prediction with the statistics a checkpoint carries.
    """
    centre = np.asarray(mean, dtype=np.float32)[:, None, None]
    spread = np.asarray(std, dtype=np.float32)
    spread = np.where(spread > 0, spread, 1.0).astype(np.float32)[:, None, None]
    out = np.asarray(images, dtype=np.float32) - centre
    out /= spread
    return out


def denormalise(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The inverse of `normalise`: normalised (…, C, H, W) back to physical values, float32."""
    mean = np.asarray(mean, dtype=np.float32)[:, None, None]
    std = np.asarray(std, dtype=np.float32)
    std = np.where(std > 0, std, 1.0).astype(np.float32)[:, None, None]
    return np.asarray(images, dtype=np.float32) * std + mean


SYMMETRIES = ("e", "r90", "r180", "r270", "v", "hvt", "h", "t")  # the 8 symmetries of the square (D4)
CACHE_MB = 256.0  # default budget of a BatchMaker's prepared chips


@dataclass
class TaskTensors:
    """A task's support and query as tensors: x float32 (n, C, S, S); y long, (n,) or (n, S, S)."""

    x_support: Tensor
    y_support: Tensor
    x_query: Tensor
    y_query: Tensor


class BatchMaker:
    """Turns tasks or chip indices of a store into normalised, resized (and optionally augmented) tensors.

    Chips once prepared (bands selected, resized, normalised: everything before augmentation) are
    kept, up to `cache_mb` MiB, so meta-training reads and converts each chip once; 0 keeps none.
    """

    def __init__(self, store: ChipStore, bands: list[str] | None = None, chip_size: int | None = None,
                 augment: bool = False, cache_mb: float = CACHE_MB, photometric: float = 0.0,
                 crop_scale: float = 1.0) -> None:
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
        self.photometric = photometric
        self.crop_scale = crop_scale
        self._d4 = A.D4(p=1.0)
        self._perms: dict[tuple[int, int], Tensor] = {}
        self._cache: dict[int, Tensor] = {}
        self._cache_left = int(cache_mb * 2**20)

    def task_tensors(self, task: Task, rng: np.random.Generator | None = None) -> TaskTensors:
        """Tensors of a task; classification targets are local labels (positions in `task.classes`).

        With `augment` on, `rng` seeds the augmentation; without an rng nothing is augmented (evaluation).
        """
        x, y = self._load(np.concatenate([task.support, task.query]), task.kind, rng)  # one pass for both
        if task.kind == "classification":
            lut = np.full(self.store.num_classes, -1, dtype=np.int64)
            lut[list(task.classes)] = np.arange(len(task.classes))
            y = torch.from_numpy(lut[y.numpy()])
            if (y < 0).any():
                raise TaskError(f"{self.store.path}: task in {task.region} has chips outside its classes "
                                f"{task.classes}")
        k = len(task.support)
        return TaskTensors(x[:k], y[:k], x[k:], y[k:])

    def chip_tensors(self, idx: np.ndarray, kind: str, rng: np.random.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Tensors of any chips (pooled pretraining batches): x and global labels or masks."""
        if kind not in self.store.kinds:
            raise StoreError(f"{self.store.path}: store has no {kind!r} data (kinds: {self.store.kinds})")
        return self._load(np.asarray(idx, dtype=np.int64), kind, rng)

    def _load(self, idx: np.ndarray, kind: str, rng: np.random.Generator | None) -> tuple[Tensor, Tensor]:
        xt = self._images(idx)
        if kind == "classification":
            labels = self.store.labels(idx)
            if (labels < 0).any():
                raise StoreError(f"{self.store.path}: chips {idx[labels < 0][:5].tolist()} have no label (-1)")
            y = torch.from_numpy(labels)
        else:
            y = resize_chips(torch.from_numpy(self.store.masks(idx))[:, None], self.chip_size, mask=True)[:, 0]
        if self.augment and rng is not None:
            xt, masks = self._augment(xt, y if kind == "segmentation" else None, rng)
            y = y if masks is None else masks
        return xt.contiguous(), y.long()

    def _images(self, idx: np.ndarray) -> Tensor:
        """Prepared chips `idx` (n, C, S, S): from the cache, the others prepared (and cached while there is room)."""
        keys = idx.tolist()
        missing = [i for i in dict.fromkeys(keys) if i not in self._cache]
        if not keys or (len(missing) == len(keys) and self._cache_left <= 0):
            return self._prepare(idx)
        fresh = dict(zip(missing, self._prepare(np.asarray(missing, dtype=np.int64)))) if missing else {}
        for i, chip in fresh.items():
            if chip.nbytes <= self._cache_left:
                self._cache[i] = chip.clone()  # a row of its own, not a view keeping the whole batch
                self._cache_left -= chip.nbytes
        return torch.stack([self._cache[i] if i in self._cache else fresh[i] for i in keys])

    def _prepare(self, idx: np.ndarray) -> Tensor:
        """Chips read from the store: bands selected, resized, then normalised (per band, so the order
        does not matter to the values, and the resized chips are fewer pixels to normalise)."""
        x = self.store.images(idx)
        if not np.array_equal(self.band_idx, np.arange(len(self.store.bands))):
            x = x[:, self.band_idx]
        resized = resize_chips(torch.from_numpy(x), self.chip_size, mask=False)
        return torch.from_numpy(normalise(resized.numpy(), self.mean, self.std))

    def _augment(self, x: Tensor, masks: Tensor | None,
                 rng: np.random.Generator) -> tuple[Tensor, Tensor | None]:
        """Each chip (and its mask) through one of the 8 symmetries of the square, drawn from `rng`,
        then, when asked for, a random crop resized back and photometric jitter.

        A symmetry is a permutation of a chip's pixels: albumentations' D4 applied once to a grid of
        pixel numbers gives the 8 permutations, and one gather moves every chip's pixels (any band count).
        """
        n, c, h, w = x.shape
        perms = self._symmetry_perms(h, w)[torch.from_numpy(rng.integers(len(SYMMETRIES), size=n))]
        x_out = x.reshape(n, c, h * w).gather(2, perms[:, None, :].expand(n, c, h * w)).view(n, c, h, w)
        m_out = None if masks is None else masks.reshape(n, h * w).gather(1, perms).view(n, h, w)
        if self.crop_scale < 1.0:
            x_out, m_out = random_crops(x_out, m_out, self.crop_scale, rng)
        if self.photometric > 0.0:
            x_out = photometric_jitter(x_out, self.photometric, rng)
        return x_out, m_out

    def _symmetry_perms(self, h: int, w: int) -> Tensor:
        """(8, h*w) int64: for each symmetry, the source pixel of each output pixel."""
        if (h, w) not in self._perms:
            if h != w:
                raise StoreError(f"{self.store.path}: augmentation needs square chips, got {h}x{w}")
            grid = np.arange(h * w).reshape(h, w)
            self._perms[h, w] = torch.from_numpy(np.stack(
                [self._d4.apply_to_mask(grid, group_element=g).ravel() for g in SYMMETRIES]))
        return self._perms[h, w]


def random_crops(x: Tensor, masks: Tensor | None, scale: float,
                 rng: np.random.Generator) -> tuple[Tensor, Tensor | None]:
    """Each chip cropped to a random square of `scale` to 1 times its side, resized back (masks: nearest)."""
    n, _, h, w = x.shape
    sides = np.maximum(1, np.round(rng.uniform(scale, 1.0, size=n) * min(h, w))).astype(int)
    tops, lefts = rng.integers(0, h - sides + 1), rng.integers(0, w - sides + 1)
    x_out = torch.empty_like(x)
    m_out = None if masks is None else torch.empty_like(masks)
    for i, (s, t, left) in enumerate(zip(sides, tops, lefts)):
        crop = x[i:i + 1, :, t:t + s, left:left + s]
        x_out[i] = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0]
        if masks is not None and m_out is not None:
            cut = masks[i:i + 1, None, t:t + s, left:left + s].float()
            m_out[i] = F.interpolate(cut, size=(h, w), mode="nearest-exact")[0, 0].to(masks.dtype)
    return x_out, m_out


def photometric_jitter(x: Tensor, strength: float, rng: np.random.Generator) -> Tensor:
    """Normalised chips with random contrast (x (1 ± s) about each band's chip mean), brightness
    (± s, the same for every band) and colour (± s/2 per band) shifts, in units of the band's std."""
    n, c = x.shape[:2]
    contrast = torch.from_numpy(rng.uniform(1 - strength, 1 + strength, size=(n, 1, 1, 1))).to(x.dtype)
    shift = rng.uniform(-strength, strength, size=(n, 1)) + rng.uniform(-strength / 2, strength / 2, size=(n, c))
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * contrast + mean + torch.from_numpy(shift).to(x.dtype)[:, :, None, None]


def resize_chips(t: Tensor, size: int, mask: bool) -> Tensor:
    """(n, C, H, W) to (n, C, size, size): nearest for masks, area to shrink and bilinear to grow images."""
    if t.shape[-1] == size and t.shape[-2] == size:
        return t
    if mask:
        return F.interpolate(t, size=(size, size), mode="nearest-exact")
    h, w = t.shape[-2:]
    if h % size == 0 and w % size == 0 and h == w:  # area mean of f x f blocks: strided sums, ~5x faster
        f = h // size
        out = t[..., ::f, ::f].clone()
        for i, j in itertools.product(range(f), range(f)):
            if i or j:
                out += t[..., i::f, j::f]
        return out.div_(f * f)
    if size < t.shape[-1]:
        return F.interpolate(t, size=(size, size), mode="area")
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
