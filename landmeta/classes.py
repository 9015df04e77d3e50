"""Class schemes: IGBP → the 10 simplified (DFC2020) classes of SEN12MS, and DeepGlobe's colours."""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255

# The 10 simplified classes (0-based ids) and their display colours (RGB).
SIMPLIFIED_CLASSES: list[str] = [
    "Forest", "Shrubland", "Savanna", "Grassland", "Wetlands",
    "Cropland", "Urban/Built-up", "Snow/Ice", "Barren", "Water",
]
SIMPLIFIED_COLORS: list[tuple[int, int, int]] = [
    (0, 153, 0), (198, 176, 68), (251, 255, 19), (182, 255, 5), (39, 255, 135),
    (194, 79, 68), (165, 165, 165), (105, 255, 248), (249, 255, 164), (28, 13, 255),
]

# IGBP value (1..17) -> simplified class id (0..9).
IGBP_TO_SIMPLIFIED: dict[int, int] = {
    1: 0, 2: 0, 3: 0, 4: 0, 5: 0,  # forests
    6: 1, 7: 1,  # closed / open shrublands
    8: 2, 9: 2,  # woody savannas / savannas
    10: 3,  # grasslands
    11: 4,  # permanent wetlands
    12: 5, 14: 5,  # croplands, cropland/natural mosaic
    13: 6,  # urban and built-up
    15: 7,  # snow and ice
    16: 8,  # barren
    17: 9,  # water bodies
}

IGBP_NAMES: dict[int, str] = {
    1: "Evergreen Needleleaf Forest", 2: "Evergreen Broadleaf Forest",
    3: "Deciduous Needleleaf Forest", 4: "Deciduous Broadleaf Forest", 5: "Mixed Forest",
    6: "Closed Shrublands", 7: "Open Shrublands", 8: "Woody Savannas", 9: "Savannas",
    10: "Grasslands", 11: "Permanent Wetlands", 12: "Croplands", 13: "Urban and Built-Up",
    14: "Cropland/Natural Vegetation Mosaic", 15: "Snow and Ice", 16: "Barren", 17: "Water Bodies",
}


def igbp_lookup() -> np.ndarray:
    """A 256-entry table mapping IGBP values to simplified ids; everything else -> IGNORE_INDEX."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for igbp, simple in IGBP_TO_SIMPLIFIED.items():
        table[igbp] = simple
    return table


# DeepGlobe Land Cover: class names, exact mask colours, and which class is ignored.
DEEPGLOBE_CLASSES: list[str] = ["Urban", "Agriculture", "Rangeland", "Forest", "Water", "Barren"]
DEEPGLOBE_COLORS: list[tuple[int, int, int]] = [
    (0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255),
]
DEEPGLOBE_UNKNOWN_COLOR: tuple[int, int, int] = (0, 0, 0)


def decode_deepglobe_mask(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 mask -> (class ids with Unknown = IGNORE_INDEX, boolean map of unknown colours).

    Each channel is thresholded at 128 (DeepGlobe masks are not pure 0/255). The second array
    marks pixels whose thresholded colour is none of the seven, which callers treat as bad input.
    """
    bits = (rgb[..., :3] >= 128).astype(np.uint8)
    code = bits[..., 0] * 4 + bits[..., 1] * 2 + bits[..., 2]
    table = np.full(8, IGNORE_INDEX, dtype=np.uint8)
    known = np.zeros(8, dtype=bool)
    for cid, (r, g, b) in enumerate(DEEPGLOBE_COLORS):
        idx = (r >= 128) * 4 + (g >= 128) * 2 + (b >= 128)
        table[idx] = cid
        known[idx] = True
    known[0] = True  # Unknown (0, 0, 0) -> ignore
    return table[code], ~known[code]


def encode_deepglobe_mask(ids: np.ndarray) -> np.ndarray:
    """Class ids (IGNORE_INDEX = Unknown) -> (H, W, 3) uint8 mask in DeepGlobe's colours."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for cid, color in enumerate(DEEPGLOBE_COLORS):
        palette[cid] = color
    return palette[ids]
