"""Colours of the maps: the class legend, and the true-colour rendering of a scene (which bands are
red, green and blue, and their contrast stretch), shared by the quick-look PNG and the viewer page."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from landmeta.inference.scene import canonical_band


@dataclass(frozen=True)
class Legend:
    """Class names and display colours (RGB), by class id."""

    names: list[str]
    colors: list[tuple[int, int, int]]


def default_colors(n: int) -> list[tuple[int, int, int]]:
    """A qualitative palette (matplotlib tab20) for checkpoints that carry no class colours."""
    import matplotlib
    cmap = matplotlib.colormaps["tab20"]
    rgba = [cmap(i % 20) for i in range(n)]
    return [(int(round(r * 255)), int(round(g * 255)), int(round(b * 255))) for r, g, b, _ in rgba]


def natural_colour_bands(bands: list[str]) -> list[int]:
    """Positions of red, green, blue (S2 B4/B3/B2 or named RGB), else the first three bands (or one)."""
    names = [canonical_band(b) for b in bands]
    for rgb in (("B4", "B3", "B2"), ("RED", "GREEN", "BLUE"), ("R", "G", "B")):
        if all(n in names for n in rgb):
            return [names.index(n) for n in rgb]
    return [0, 1, 2] if len(bands) >= 3 else [0, 0, 0]


def stretch(image: np.ndarray) -> np.ndarray:
    """(3, H, W) -> (H, W, 3) in 0..1 with a 2-98 % percentile stretch (one copy, in the input's dtype)."""
    finite = image[np.isfinite(image)]
    lo, hi = (0.0, 1.0) if not finite.size else \
        (float(v) for v in np.percentile(finite, (2, 98), overwrite_input=True))
    del finite
    scaled = image - lo  # a Python float keeps float32 arrays float32 (a numpy float64 would widen them)
    scaled /= max(hi - lo, 1e-6)
    np.clip(scaled, 0, 1, out=scaled)
    return np.nan_to_num(scaled, copy=False).transpose(1, 2, 0)
