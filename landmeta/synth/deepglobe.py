"""Synthetic DeepGlobe Land Cover: RGB tiles with colour masks, in a few visual "styles"
(pseudo-regions: soil and vegetation colours, field and town patterns, haze, class mix)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from landmeta.classes import IGNORE_INDEX, encode_deepglobe_mask
from landmeta.synth.landscape import make_landscape, smooth_noise

URBAN, AGRICULTURE, RANGELAND, FOREST, WATER, BARREN = range(6)
CLASS_PRIOR = np.array([1.2, 3.0, 2.0, 2.0, 0.7, 1.0])
# Reference colours (RGB, 0-1) of each class; agriculture is drawn per field from CROP_COLORS.
BASE_COLORS = np.array([
    [0.55, 0.53, 0.50], [0.40, 0.45, 0.25], [0.52, 0.50, 0.36],
    [0.16, 0.25, 0.13], [0.12, 0.20, 0.26], [0.72, 0.65, 0.55],
])
CROP_COLORS = np.array([[0.30, 0.45, 0.18], [0.56, 0.46, 0.34], [0.72, 0.66, 0.42]])  # green, bare, ripe


@dataclass
class Style:
    """The look of one pseudo-region."""

    proportions: np.ndarray
    colors: np.ndarray  # (6, 3) class colours
    crop_mix: np.ndarray  # probabilities of green / bare / ripe fields
    brightness: float
    haze: float
    patch_frac: float  # natural patch size as a fraction of the tile
    field_frac: float  # field size as a fraction of the tile
    quality: int  # JPEG quality


def make_styles(n: int, rng: np.random.Generator) -> list[Style]:
    """`n` random regional styles (class proportions, colour casts, brightness, haze) of synthetic DeepGlobe tiles."""
    styles = []
    for _ in range(n):
        props = rng.dirichlet(CLASS_PRIOR * 1.5)
        props[props < 0.03] = 0.0
        cast = np.exp(rng.normal(0, 0.15, 3))
        colors = np.clip(BASE_COLORS * cast * np.exp(rng.normal(0, 0.12, (6, 3))), 0.02, 0.95)
        soil = np.exp(rng.normal(0, 0.15)) * np.array([1 + rng.uniform(-0.1, 0.25), 1.0, 1 - rng.uniform(0, 0.2)])
        colors[BARREN] = np.clip(colors[BARREN] * soil, 0.05, 0.95)
        styles.append(Style(
            proportions=props / props.sum(), colors=colors, crop_mix=rng.dirichlet([2.0, 1.5, 1.0]),
            brightness=float(rng.uniform(0.75, 1.25)), haze=float(rng.uniform(0.0, 0.35)),
            patch_frac=float(rng.uniform(0.25, 0.5)), field_frac=float(rng.uniform(0.06, 0.16)),
            quality=int(rng.integers(75, 95)),
        ))
    return styles


def render_tile(style: Style, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (size, size, 3) uint8 image and its (size, size) class ids (IGNORE_INDEX = unknown)."""
    props = rng.dirichlet(style.proportions * 10.0 + 1e-3)
    props = np.where(style.proportions > 0, props, 0.0)
    land = make_landscape(size, props, rng, patch_px=size * style.patch_frac, field_px=size * style.field_frac,
                          tessellated=(AGRICULTURE, URBAN), water=WATER if style.proportions[WATER] > 0 else None,
                          river_prob=0.3, river_width=size / 30)
    cls, parcels, pclass = land.classes, land.parcels, land.parcel_class
    pcol = style.colors[pclass] * np.exp(rng.normal(0, 0.07, (len(pclass), 3)))
    agri = pclass == AGRICULTURE
    if agri.any():
        pcol[agri] = CROP_COLORS[rng.choice(3, size=int(agri.sum()), p=style.crop_mix)] * np.exp(
            rng.normal(0, 0.1, (int(agri.sum()), 3)))
    img = pcol[parcels]
    px = size / 2448  # texture scale: a full-size tile is 2448 px at 50 cm
    tex = np.ones((size, size))
    tex = np.where(cls == FOREST, 0.7 + 0.3 * np.tanh(smooth_noise(size, max(1.5, 12 * px), rng)), tex)
    tex = np.where(cls == RANGELAND, 1 + 0.12 * smooth_noise(size, max(1.5, 40 * px), rng), tex)
    tex = np.where(cls == BARREN, 1 + 0.1 * smooth_noise(size, max(2.0, 120 * px), rng), tex)
    yy, xx = np.mgrid[0:size, 0:size]
    if agri.any():  # crop rows, one direction per field
        theta = rng.uniform(0, np.pi, len(pclass))[parcels]
        rows = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / max(2.5, 16 * px))
        tex = np.where(cls == AGRICULTURE, tex * (1 + 0.06 * rows), tex)
    if (cls == URBAN).any():  # streets and roofs on a rotated grid
        a = rng.uniform(0, np.pi)
        u, v = xx * np.cos(a) + yy * np.sin(a), -xx * np.sin(a) + yy * np.cos(a)
        block = max(4.0, 60 * px)
        street = ((u % block) < block * 0.2) | ((v % block) < block * 0.2)
        roofs = np.array([[0.75, 0.35, 0.28], [0.6, 0.6, 0.6], [0.85, 0.85, 0.82], [0.4, 0.38, 0.36]])
        cell = ((np.floor(u / block).astype(int) * 7919 + np.floor(v / block).astype(int) * 104729) % 9973)
        roof = roofs[rng.permutation(9973)[cell] % 4]
        urban = (cls == URBAN)[..., None]
        img = np.where(urban, np.where(street[..., None], img * 0.7, 0.5 * img + 0.5 * roof), img)
    img = img * tex[..., None] * style.brightness * (1 + 0.05 * smooth_noise(size, size / 3, rng))[..., None]
    img = (1 - style.haze) * img + style.haze * np.array([0.75, 0.78, 0.82])
    labels = cls.astype(np.uint8)
    if rng.random() < 0.15:  # a small cloud: unknown in the mask
        thick = np.clip(smooth_noise(size, size / 10, rng) - 2.0, 0, 1)
        img = img * (1 - thick[..., None]) + 0.9 * thick[..., None]
        labels = np.where(thick > 0.3, IGNORE_INDEX, labels).astype(np.uint8)
    img = img + rng.normal(0, 0.015, img.shape)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8), labels


def write_tile(root: Path, tile_id: str, image: np.ndarray, labels: np.ndarray, quality: int) -> None:
    """Write one synthetic tile as DeepGlobe does: `<id>_sat.jpg` and its colour mask `<id>_mask.png`."""
    root.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, "RGB").save(root / f"{tile_id}_sat.jpg", quality=quality)
    Image.fromarray(encode_deepglobe_mask(labels), "RGB").save(root / f"{tile_id}_mask.png")
