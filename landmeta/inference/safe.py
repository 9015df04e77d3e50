"""Sentinel-2 products (`.SAFE` folders) as scenes: band files found by name, SCL classes masked.

A product holds one granule (tile): L2A as `GRANULE/<granule>/IMG_DATA/R10m|R20m|R60m/
<tile>_<date>_<band>_<res>.jp2`, L1C as `GRANULE/<granule>/IMG_DATA/<tile>_<date>_<band>.jp2`.
Each band is taken at the finest resolution present. The metadata XML is not needed: the level
comes from the layout, the processing baseline (which sets the DN offset) from the product's name.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from landmeta.errors import DataError, LandmetaWarning

L2A_FILE = re.compile(r"_(B\d\d|B8A|SCL)_(10|20|60)m\.jp2$", re.IGNORECASE)
L1C_FILE = re.compile(r"_(B\d\d|B8A)\.jp2$", re.IGNORECASE)
BASELINE = re.compile(r"_N(\d{2})(\d{2})_")  # compact product names: ..._N0400_R080_T29UPU_...
OFFSET_BASELINE = (4, 0)  # from processing baseline 04.00 (January 2022), DN carry an offset
DN_OFFSET = -1000  # reflectance = (DN + offset) / 10000 from that baseline on
NODATA_DN = 0  # "no data" in every band of a product

# Scene classification (SCL) values made invalid: no cloud-free surface reflectance is there.
SCL_MASKED = {0: "no data", 1: "saturated or defective", 3: "cloud shadow",
              8: "cloud, medium probability", 9: "cloud, high probability", 10: "thin cirrus"}


@dataclass(frozen=True)
class Product:
    """The files of one Sentinel-2 product that a scene reads."""

    path: Path
    level: str  # "L2A" or "L1C"
    bands: dict[str, Path]  # band name (B02, B8A, ...) -> JP2 at the finest resolution present
    scl: Path | None  # L2A scene classification (20 m), None for L1C
    offset: int  # added to every DN before scaling (processing baseline 04.00 and later: -1000)


@dataclass(frozen=True)
class MaskedCount:
    """Pixels of a scene that its SCL marks invalid (SCL_MASKED), out of all its pixels."""

    masked: int
    pixels: int

    @property
    def percent(self) -> float:
        return 100.0 * self.masked / max(self.pixels, 1)

    def record(self) -> dict:
        return {"classes": {str(k): v for k, v in SCL_MASKED.items()}, "masked_pixels": self.masked,
                "pixels": self.pixels, "masked_percent": round(self.percent, 3)}


def is_safe(path: Path) -> bool:
    """A folder named like a Sentinel-2 product (`*.SAFE`)."""
    return path.suffix.upper() == ".SAFE" and path.is_dir()


def scl_invalid(scl: np.ndarray) -> np.ndarray:
    """Where SCL values mark pixels invalid (no data, defective, cloud shadow, cloud, cirrus)."""
    return np.isin(scl, list(SCL_MASKED))


def find_product(path: Path, warn: bool = True) -> Product:
    """The band files of a `.SAFE` folder; DataError naming the folder when it is not a readable product.

    An L1C product (no SCL) is read without cloud masking, with a LandmetaWarning when `warn`.
    """
    granules = sorted(p for p in (path / "GRANULE").glob("*") if p.is_dir())
    if len(granules) != 1:
        found = "no GRANULE folder" if not granules else f"{len(granules)} granules"
        raise DataError(f"{path}: {found}; a Sentinel-2 product holds one granule "
                        f"(GRANULE/<granule>/IMG_DATA/...)")
    images = granules[0] / "IMG_DATA"
    bands, scl, resolution = {}, None, {}
    for file in sorted(images.glob("R[126]0m/*.jp2")):
        match = L2A_FILE.search(file.name)
        if not match:
            continue
        band, res = match.group(1).upper(), int(match.group(2))
        if band == "SCL":
            if scl is None or res < resolution["SCL"]:
                scl, resolution["SCL"] = file, res
        elif band not in bands or res < resolution[band]:
            bands[band], resolution[band] = file, res
    level = "L2A"
    if not bands:
        bands = {m.group(1).upper(): f for f in sorted(images.glob("*.jp2")) if (m := L1C_FILE.search(f.name))}
        level = "L1C"
    if not bands:
        raise DataError(f"{path}: no band images in {images.relative_to(path)} (L2A: R10m/*_B02_10m.jp2 ..., "
                        f"L1C: *_B02.jp2 ...); an incomplete download?")
    product = Product(path=path, level=level, bands=bands, scl=scl, offset=_offset(path))
    if warn and scl is None:
        what = "an L1C product (top of atmosphere)" if level == "L1C" else "an L2A product without an SCL file"
        warnings.warn(f"{path}: {what}: no scene classification, so clouds and their shadows are not "
                      f"masked", LandmetaWarning, stacklevel=3)
    return product


def _offset(path: Path) -> int:
    """DN offset from the processing baseline in the product's name."""
    match = BASELINE.search(path.name)
    if match is None:
        raise DataError(f"{path}: the name does not give the processing baseline (..._N0400_...), which "
                        f"decides the offset of the pixel values; keep the product's original name")
    return DN_OFFSET if (int(match.group(1)), int(match.group(2))) >= OFFSET_BASELINE else 0
