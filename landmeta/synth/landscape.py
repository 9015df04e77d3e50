"""Spatially coherent label maps: warped Voronoi patches of natural cover, field and block
tessellations inside farmland and towns, and meandering rivers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree


@dataclass
class Landscape:
    """A label map with the parcel (cell) each pixel belongs to."""

    classes: np.ndarray  # (H, W) int16 class ids in the caller's scheme
    parcels: np.ndarray  # (H, W) int32 parcel ids 0..n-1
    parcel_class: np.ndarray  # (n,) class of each parcel


def smooth_noise(size: int, scale_px: float, rng: np.random.Generator) -> np.ndarray:
    """A (size, size) Gaussian random field with unit std and correlation length ~scale_px.

    White noise on a lattice of spacing scale_px, interpolated with a separable Gaussian kernel
    (two small matrix products, much faster than spline zooming).
    """
    scale_px = max(1.5, float(scale_px))
    n = int(np.ceil(size / scale_px)) + 4
    low = rng.standard_normal((n, n))
    weights = []
    for _ in range(2):
        pos = (np.arange(size) + rng.uniform(0, scale_px)) / scale_px + 1.5
        w = np.exp(-0.5 * ((pos[:, None] - np.arange(n)[None, :]) / 0.7) ** 2)
        weights.append(w / w.sum(1, keepdims=True))
    field = weights[0] @ low @ weights[1].T
    return (field - field.mean()) / (field.std() + 1e-9)


def _voronoi(size: int, n_seeds: int, warp_px: float, scale_px: float, rng: np.random.Generator) -> np.ndarray:
    """Nearest-seed cell ids on a grid whose coordinates are warped by smooth noise.

    Computed on a grid of half the resolution and repeated, which halves boundary detail but
    quarters the cost.
    """
    half = -(-size // 2)
    seeds = rng.uniform(-0.05 * size, 1.05 * size, size=(n_seeds, 2))
    yy, xx = (np.mgrid[0:half, 0:half] * 2.0 + 0.5)
    if warp_px > 0:
        yy = yy + warp_px * smooth_noise(half, scale_px / 2, rng)
        xx = xx + warp_px * smooth_noise(half, scale_px / 2, rng)
    _, ids = cKDTree(seeds).query(np.stack([yy.ravel(), xx.ravel()], axis=1))
    ids = ids.reshape(half, half).astype(np.int32)
    return ids.repeat(2, 0).repeat(2, 1)[:size, :size]


def _river(size: int, width: float, rng: np.random.Generator) -> np.ndarray:
    """A meandering river crossing the map, as a boolean mask."""
    side = rng.integers(4)
    start = np.array([0.0, rng.uniform(0.1, 0.9) * size])
    heading = 0.0
    pts = []
    pos = start.copy()
    step = 2.0
    for _ in range(int(3 * size / step)):
        heading += rng.normal(0, 0.12)
        heading = float(np.clip(heading, -1.2, 1.2))
        pos = pos + step * np.array([np.cos(heading), np.sin(heading)])
        pts.append(pos.copy())
        if pos[0] > size + 5:
            break
    yy, xx = np.mgrid[0:size, 0:size]
    dist, _ = cKDTree(np.array(pts)).query(np.stack([yy.ravel(), xx.ravel()], axis=1))
    mask = dist.reshape(size, size) < width / 2
    return np.rot90(mask, k=int(side))


def make_landscape(size: int, proportions: np.ndarray, rng: np.random.Generator, *, patch_px: float,
                   field_px: float, tessellated: tuple[int, ...], water: int | None = None,
                   river_prob: float = 0.0, river_width: float = 6.0) -> Landscape:
    """Draw a label map whose patch classes follow `proportions` (one entry per class).

    Natural cover forms irregular patches of ~patch_px; classes in `tessellated` (fields, town
    blocks) are cut into straight-edged parcels of ~field_px; with `river_prob` a river of class
    `water` crosses the map.
    """
    p = np.asarray(proportions, float)
    n_coarse = max(3, int(rng.poisson((size / patch_px) ** 2)) + 1)
    coarse = _voronoi(size, n_coarse, 0.35 * patch_px, patch_px, rng)
    coarse_class = rng.choice(len(p), size=n_coarse, p=p / p.sum())
    classes = coarse_class[coarse]
    parcels = coarse.copy()
    parcel_class = list(coarse_class)
    in_tess = np.isin(classes, tessellated)
    if in_tess.any():
        n_fine = max(4, int((size / field_px) ** 2))
        fine = _voronoi(size, n_fine, 0.04 * field_px, field_px, rng)
        # A parcel is a (coarse cell, fine cell) pair, so parcels never straddle two classes.
        key = coarse[in_tess].astype(np.int64) * n_fine + fine[in_tess]
        uniq, inv = np.unique(key, return_inverse=True)
        parcels[in_tess] = n_coarse + inv
        parcel_class += list(coarse_class[uniq // n_fine])
    if water is not None and rng.random() < river_prob:
        river = _river(size, river_width * rng.uniform(0.6, 1.6), rng)
        classes = np.where(river, water, classes)
        parcels = np.where(river, len(parcel_class), parcels)
        parcel_class.append(water)
    # Parcels are renumbered densely so that callers can index per-parcel tables.
    uniq, inv = np.unique(parcels, return_inverse=True)
    return Landscape(classes.astype(np.int16), inv.reshape(size, size).astype(np.int32),
                     np.asarray(parcel_class)[uniq])
