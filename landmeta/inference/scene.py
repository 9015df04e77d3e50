"""Input scenes for prediction: one raster file, a folder of one GeoTIFF per band, or a Sentinel-2
`.SAFE` product (`landmeta.inference.safe`), read window by window.

Pixels come back in physical units by the data readers' dtype convention
(`landmeta.data.geo.to_physical`: uint16 = Sentinel-2 DN / 10000, uint8 = RGB / 255, float kept).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window, from_bounds

from landmeta.data.geo import band_files, to_physical
from landmeta.errors import DataError
from landmeta.inference.safe import NODATA_DN, MaskedCount, Product, find_product, is_safe, scl_invalid

RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
OVERVIEW_ROWS = 256  # rows read at a time for a quick-look (memory flat in the scene size)
COUNT_ROWS = 1024  # rows of the SCL read at a time to count its masked pixels


def canonical_band(name: str) -> str:
    """Band names compared loosely: case-insensitive, leading zeros dropped (`B01` == `b1`)."""
    return re.sub(r"(?<=[A-Z])0+(?=\d)", "", name.strip().upper())


def decimation(height: int, width: int, max_side: int) -> tuple[int, tuple[int, int]]:
    """How a quick-look samples a raster: one pixel per cell of `factor`² pixels, giving `shape`
    (at most `max_side` a side; a last partial row or column of cells is left out)."""
    factor = max(1, int(np.ceil(max(height, width) / max_side)))
    return factor, (max(1, height // factor), max(1, width // factor))


@dataclass
class Scene:
    """An open input raster (or band stack) on one pixel grid; `read` returns any window of it."""

    path: Path
    height: int
    width: int
    crs: rasterio.crs.CRS | None
    transform: Affine
    bands: list[str]
    # (open dataset, band index) per model band, in the model's band order
    sources: list[tuple[rasterio.DatasetReader, int]] = field(repr=False)
    alpha: tuple[rasterio.DatasetReader, int] | None = field(default=None, repr=False)
    scl: rasterio.DatasetReader | None = field(default=None, repr=False)  # a product's scene classification
    offset: float = 0.0  # added to every band in physical units (Sentinel-2 baseline 04.00 on: -0.1)
    nodata: float | None = None  # nodata of files that declare none (a product's JP2s: 0)
    cache_bytes: int = 0  # GDAL block cache its window-by-window reads need (0: the default cap)

    @property
    def name(self) -> str:
        return self.path.stem if self.path.is_file() or is_safe(self.path) else self.path.name

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None

    def read(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Window (row, col, height, width) as ((bands, h, w) float32 physical, (h, w) valid mask).

        Parts outside the raster are filled by mirroring the pixels inside and marked invalid.
        """
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + height, self.height), min(col + width, self.width)
        inner = Window(c0, r0, c1 - c0, r1 - r0)
        valid = np.ones((r1 - r0, c1 - c0), dtype=bool)
        groups: dict[int, list[int]] = {}  # one read per file, all its bands at once
        for i, (src, _) in enumerate(self.sources):
            groups.setdefault(id(src), []).append(i)
        parts = []
        for positions in groups.values():
            src = self.sources[positions[0]][0]
            raw = self._read_bands(src, [self.sources[i][1] for i in positions], inner)
            nodata = src.nodata if src.nodata is not None else self.nodata
            if nodata is not None:
                valid &= (raw != nodata).all(axis=0)  # a pixel is nodata where any band is
            if raw.dtype.kind == "f":
                valid &= np.isfinite(raw).all(axis=0)
            parts.append((positions, to_physical(raw)))
        if len(parts) == 1 and parts[0][0] == list(range(len(self.sources))):
            image = parts[0][1]  # one file, bands in the model's order: no copy
        else:
            image = np.empty((len(self.sources), r1 - r0, c1 - c0), dtype=np.float32)
            for positions, values in parts:
                image[positions] = values
        if self.offset:
            image += self.offset
        if self.alpha is not None:
            valid &= self._read_bands(self.alpha[0], [self.alpha[1]], inner)[0] > 0
        if self.scl is not None:
            valid &= ~scl_invalid(self._read_bands(self.scl, [1], inner, resampling=Resampling.nearest)[0])
        if not valid.all():
            image[:, ~valid] = np.nan
        pad = ((r0 - row, row + height - r1), (c0 - col, col + width - c1))
        if any(p for pair in pad for p in pair):
            image = np.pad(image, ((0, 0), *pad), mode="symmetric")
            valid = np.pad(valid, pad, mode="constant", constant_values=False)
        return image, valid

    def _read_bands(self, src: rasterio.DatasetReader, bands: list[int], window: Window,
                    out_shape: tuple[int, int] | None = None,
                    resampling: Resampling = Resampling.bilinear) -> np.ndarray:
        """(len(bands), h, w) raw values of `window` (scene pixels) from one file, on the scene's grid
        (or on `out_shape` pixels covering the window, for a quick-look)."""
        shape = (len(bands), *(out_shape or (int(window.height), int(window.width))))
        try:
            if src.transform == self.transform and (src.height, src.width) == (self.height, self.width):
                return src.read(bands, window=window, out_shape=shape, resampling=resampling)
            # a coarser band of a per-band stack: read the same ground area onto the scene's grid
            bounds = rasterio.windows.bounds(window, self.transform)
            return src.read(bands, window=from_bounds(*bounds, transform=src.transform), out_shape=shape,
                            resampling=resampling)
        except (RasterioError, OSError) as exc:
            raise DataError(f"{src.name}: cannot read pixels ({_first_line(exc)})") from exc

    def overview(self, max_side: int, positions: list[int]) -> np.ndarray:
        """Bands `positions` of the whole scene decimated to at most `max_side` pixels a side, physical
        units (for quick-looks). A file with overviews (a COG, a JP2's resolution levels) is read from
        the overview GDAL picks, in one read. Others are read in strips of rows, one read per file and
        strip, and decimated here: GDAL's own decimated read of a few bands of a pixel-interleaved file
        without overviews is much slower."""
        factor, shape = decimation(self.height, self.width, max_side)
        image = np.empty((len(positions), *shape), dtype=np.float32)
        # the middle pixel of each cell (the last row or column where a side is shorter than a cell)
        rows = np.minimum(np.arange(shape[0]) * factor + factor // 2, self.height - 1)
        cols = np.minimum(np.arange(shape[1]) * factor + factor // 2, self.width - 1)
        cells = max(1, OVERVIEW_ROWS // factor)  # rows of cells per read
        groups: dict[int, list[int]] = {}
        for k, i in enumerate(positions):
            groups.setdefault(id(self.sources[i][0]), []).append(k)
        for ks in groups.values():
            src = self.sources[positions[ks[0]]][0]
            bands = [self.sources[positions[k]][1] for k in ks]
            if src.overviews(bands[0]):
                raw = self._read_bands(src, bands, Window(0, 0, shape[1] * factor, shape[0] * factor),
                                       out_shape=shape, resampling=Resampling.nearest)
                image[ks] = to_physical(raw)
                continue
            for first in range(0, shape[0], cells):
                picked = rows[first:first + cells]
                raw = self._read_bands(src, bands, Window(0, picked[0], cols[-1] + 1, picked[-1] + 1 - picked[0]))
                image[ks, first:first + len(picked)] = to_physical(raw[:, picked - picked[0]][:, :, cols])
        return image + self.offset if self.offset else image

    def masked_count(self) -> MaskedCount | None:
        """Pixels that the product's SCL makes invalid, counted on the scene's grid (None without an SCL)."""
        if self.scl is None:
            return None
        masked = 0
        for row in range(0, self.height, COUNT_ROWS):
            window = Window(0, row, self.width, min(COUNT_ROWS, self.height - row))
            masked += int(scl_invalid(self._read_bands(self.scl, [1], window, resampling=Resampling.nearest)).sum())
        return MaskedCount(masked=masked, pixels=self.height * self.width)

    def close(self) -> None:
        for src in {id(s): s for s, _ in self.sources}.values():
            src.close()
        if self.alpha is not None:
            self.alpha[0].close()
        if self.scl is not None:
            self.scl.close()

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scene_inputs(path: Path) -> list[Path]:
    """The scenes an `--input` names: a raster file, a per-band folder, a `.SAFE` product, or a folder of these."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    if is_safe(path) or band_files(path):
        return [path]
    found = sorted(p for p in path.iterdir()
                   if (p.is_file() and p.suffix.lower() in RASTER_SUFFIXES and not p.name.startswith("."))
                   or (p.is_dir() and (is_safe(p) or band_files(p))))
    if not found:
        raise DataError(f"{path}: no rasters (GeoTIFF, PNG, JPG), per-band GeoTIFF folders or Sentinel-2 "
                        f".SAFE products in this folder")
    return found


def open_scene(path: Path, bands: list[str], warn: bool = True) -> Scene:
    """Open a scene and match its bands to the model's `bands`; DataError naming the file otherwise.
    `warn=False` leaves out the warnings about a scene (an L1C product) already given when it was opened before."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        if is_safe(path):
            return _open_product(find_product(path, warn), bands)
        if path.suffix.lower() == ".zip":
            raise DataError(f"{path}: a zip archive; unzip it (a Sentinel-2 product: give its .SAFE folder)")
        if path.is_dir():
            return _open_band_folder(path, bands)
        return _open_file(path, bands)


def _open_file(path: Path, bands: list[str]) -> Scene:
    try:
        src = rasterio.open(path)
    except (RasterioError, OSError) as exc:
        raise DataError(f"{path}: cannot open as a raster ({_first_line(exc)})") from exc
    try:
        indexes = list(range(1, src.count + 1))
        alpha = None
        if src.count > 1 and src.colorinterp[-1] == ColorInterp.alpha:
            alpha = (src, indexes.pop())
        order = _band_order(path, [src.descriptions[i - 1] for i in indexes], bands)
        return Scene(path=path, height=src.height, width=src.width, crs=src.crs, transform=src.transform,
                     bands=list(bands), sources=[(src, indexes[i]) for i in order], alpha=alpha)
    except BaseException:
        src.close()
        raise


def _band_order(path: Path, names: list[str | None], bands: list[str]) -> list[int]:
    """Positions of the model's bands among the file's bands (by name when the file names them)."""
    expected = ", ".join(bands)
    if names and all(names):
        lookup = {canonical_band(str(n)): i for i, n in enumerate(names)}
        missing = [b for b in bands if canonical_band(b) not in lookup]
        if not missing:
            return [lookup[canonical_band(b)] for b in bands]
        raise DataError(f"{path}: bands {', '.join(n or '?' for n in names)} do not include "
                        f"{', '.join(missing)}; the model expects {len(bands)} bands: {expected}")
    if len(names) != len(bands):
        raise DataError(f"{path}: has {len(names)} bands, the model expects {len(bands)} bands "
                        f"in this order: {expected}")
    return list(range(len(bands)))


def _open_band_folder(path: Path, bands: list[str]) -> Scene:
    files = {canonical_band(b): f for b, f in band_files(path).items()}
    missing = [b for b in bands if canonical_band(b) not in files]
    if missing:
        raise DataError(f"{path}: no per-band file for {', '.join(missing)} (files end in _B01.tif ...); "
                        f"the model expects {len(bands)} bands: {', '.join(bands)}")
    return _open_band_files(path, [files[canonical_band(b)] for b in bands], bands)


def _open_product(product: Product, bands: list[str]) -> Scene:
    """A `.SAFE` product's band JP2s on the grid of the finest, its SCL as a mask; DN 0 is nodata.

    Its block cache holds two rows of every file's JPEG 2000 tiles: a strip of windows spans two
    rows of tiles and shares one with the next strip, so each tile is decoded once, not about four
    times (decoding is most of the cost of reading a product; docs/benchmarks.md)."""
    files = {canonical_band(b): f for b, f in product.bands.items()}
    missing = [b for b in bands if canonical_band(b) not in files]
    if missing:
        hint = " (L2A products have no B10)" if product.level == "L2A" and "B10" in map(canonical_band, missing) else ""
        raise DataError(f"{product.path}: no image of {', '.join(missing)} in this {product.level} product{hint}; "
                        f"the model expects {len(bands)} bands: {', '.join(bands)}")
    scene = _open_band_files(product.path, [files[canonical_band(b)] for b in bands], bands, scl=product.scl,
                             offset=product.offset / 10000.0, nodata=NODATA_DN)
    sources = [src for src, _ in scene.sources] + [scene.scl] * (scene.scl is not None)
    scene.cache_bytes = sum(2 * src.block_shapes[0][0] * src.width * np.dtype(src.dtypes[0]).itemsize
                            for src in sources)
    return scene


def _open_band_files(path: Path, files: list[Path], bands: list[str], scl: Path | None = None,
                     offset: float = 0.0, nodata: float | None = None) -> Scene:
    """One single-band file per model band (and an SCL mask), on the grid of the finest band."""
    opened: list[rasterio.DatasetReader] = []
    try:
        for file in [*files, scl] if scl is not None else files:
            try:
                opened.append(rasterio.open(file))
            except (RasterioError, OSError) as exc:
                raise DataError(f"{file}: cannot open as a raster ({_first_line(exc)})") from exc
        ref = min(opened[:len(files)], key=lambda s: abs(s.transform.a))
        for src in opened:
            if src.crs != ref.crs or np.abs(np.subtract(src.bounds, ref.bounds)).max() > abs(src.transform.a) / 2:
                raise DataError(f"{src.name}: grid (CRS or extent) differs from {Path(ref.name).name}")
        return Scene(path=path, height=ref.height, width=ref.width, crs=ref.crs, transform=ref.transform,
                     bands=list(bands), sources=[(src, 1) for src in opened[:len(files)]],
                     scl=opened[len(files)] if scl is not None else None, offset=offset, nodata=nodata)
    except BaseException:
        for src in opened:
            src.close()
        raise


def _first_line(exc: BaseException) -> str:
    """The gist of a rasterio error (its cause when it only points to one)."""
    if "previous exception" in str(exc) and exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else exc.__class__.__name__

