"""Map outputs: class-map and confidence rasters written strip by strip, a quick-look PNG, polygons.

Georeferenced scenes give GeoTIFFs with the input's CRS and transform; scenes without a CRS
(plain PNG/JPG) give PNGs. Every file is written aside and renamed only when the whole scene
has succeeded, so an interrupted or failed run leaves no half-written map.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from landmeta.errors import OutputExistsError
from landmeta.inference.colours import Legend, natural_colour_bands, stretch
from landmeta.inference.predict import NODATA, Strip
from landmeta.inference.safe import MaskedCount
from landmeta.inference.scene import Scene, decimation
from landmeta.inference.viewer import write_viewer
from landmeta.io import atomic_path, atomic_write_json, atomic_write_text

PREVIEW_SIDE = 1024  # quick-look: the scene decimated to at most this many pixels a side
POLYGON_ROWS = 4096  # polygons are traced in strips of this many rows (split at strip edges)
GDAL_CACHE_BYTES = 64 * 2**20  # bounds GDAL's block cache, so writing a large map keeps memory flat
# (in bytes: rasterio hands an integer GDAL_CACHEMAX to GDAL as bytes, not as megabytes)



@dataclass(frozen=True)
class MapFiles:
    """What was written for one scene."""

    classes: Path
    confidence: Path
    preview: Path
    legend: Path
    style: Path
    polygons: Path | None
    georeferenced: bool
    html: Path | None = None
    masked: MaskedCount | None = None  # pixels a Sentinel-2 product's SCL made nodata



def output_paths(out: Path, name: str, georeferenced: bool, polygons: bool, html: bool = False) -> dict[str, Path]:
    """The files written for one scene: GeoTIFFs (PNGs without a georeference), and the page with `html`."""
    ext = "tif" if georeferenced else "png"
    paths = {"classes": out / f"{name}_classes.{ext}", "confidence": out / f"{name}_confidence.{ext}",
             "preview": out / f"{name}_preview.png", "legend": out / f"{name}_legend.json",
             "style": out / f"{name}_classes.qml"}  # QGIS reads it beside a GeoTIFF or a PNG
    if georeferenced and polygons:
        paths["polygons"] = out / f"{name}_polygons.gpkg"
    if html:
        paths["html"] = out / f"{name}_map.html"
    return paths


def check_outputs(paths: Iterable[Path], overwrite: bool) -> None:
    """OutputExistsError naming the files that exist, unless `overwrite`."""
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{existing[0]}: exists (use --overwrite to replace the maps)")


def write_maps(scene: Scene, strips: Iterable[Strip], out: Path, legend: Legend, record: dict[str, Any],
               polygons: bool = False, overwrite: bool = False, html: bool = False) -> MapFiles:
    """Write every output of one scene from its stream of predicted strips."""
    paths = output_paths(out, scene.name, scene.georeferenced, polygons, html)
    check_outputs(paths.values(), overwrite)
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack, warnings.catch_warnings(), \
            rasterio.Env(GDAL_CACHEMAX=max(GDAL_CACHE_BYTES, scene.cache_bytes), GDAL_PAM_ENABLED=False):
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        tmp = {key: stack.enter_context(atomic_path(path)) for key, path in paths.items()}
        if scene.georeferenced:
            cls_tif, conf_tif = tmp["classes"], tmp["confidence"]
        else:  # PNG cannot be written block by block: stream into hidden GeoTIFFs, then copy
            cls_tif = out / f".{scene.name}_classes.scratch.tif"
            conf_tif = out / f".{scene.name}_confidence.scratch.tif"
            for scratch in (cls_tif, conf_tif):
                stack.callback(scratch.unlink, missing_ok=True)
        counts = _write_rasters(scene, strips, cls_tif, conf_tif, legend, record)
        if not scene.georeferenced:
            rasterio.shutil.copy(cls_tif, tmp["classes"], driver="PNG")
            rasterio.shutil.copy(conf_tif, tmp["confidence"], driver="PNG")
        write_preview(scene, cls_tif, legend, tmp["preview"])
        atomic_write_text(tmp["style"], qgis_style(legend))
        if "polygons" in tmp:
            write_polygons(cls_tif, legend, tmp["polygons"])
        if "html" in tmp:
            write_viewer(scene, cls_tif, legend, counts, tmp["html"], record)
        legend_record = {"classes": [{"id": i, "name": n, "color": list(c)}
                                     for i, (n, c) in enumerate(zip(legend.names, legend.colors))],
                         "nodata": NODATA, "confidence": "max class probability in percent (255 = nodata)",
                         "input": str(scene.path), "bands": scene.bands,
                         "crs": scene.crs.to_string() if scene.crs else None, **record}
        atomic_write_json(tmp["legend"], legend_record)
    return MapFiles(classes=paths["classes"], confidence=paths["confidence"], preview=paths["preview"],
                    legend=paths["legend"], style=paths["style"], polygons=paths.get("polygons"),
                    georeferenced=scene.georeferenced, html=paths.get("html"))


def _write_rasters(scene: Scene, strips: Iterable[Strip], cls_path: Path, conf_path: Path,
                   legend: Legend, record: dict[str, Any]) -> np.ndarray:
    """Write the class and confidence rasters strip by strip; return the pixel count of each value
    of the class map (256 counts, 255 = nodata), counted as the strips pass."""
    counts = np.zeros(256, dtype=np.int64)
    profile = {"driver": "GTiff", "dtype": "uint8", "count": 1, "height": scene.height, "width": scene.width,
               "crs": scene.crs, "transform": scene.transform, "nodata": NODATA, "tiled": True,
               "blockxsize": 256, "blockysize": 256, "compress": "deflate", "BIGTIFF": "IF_SAFER"}
    with rasterio.open(cls_path, "w", **profile) as cls_dst, rasterio.open(conf_path, "w", **profile) as conf_dst:
        cls_dst.write_colormap(1, {i: (*legend.colors[i], 255) if i < len(legend.colors) else (0, 0, 0, 0)
                                   for i in range(256)})
        cls_dst.set_band_description(1, "class")
        cls_dst.update_tags(classes=json.dumps(legend.names), model=str(record.get("model", "")))
        conf_dst.write_colormap(1, _confidence_colors())
        conf_dst.set_band_description(1, "confidence (%)")
        for strip in strips:
            window = Window(0, strip.row, scene.width, strip.classes.shape[0])
            cls_dst.write(strip.classes, 1, window=window)
            conf_dst.write(strip.confidence, 1, window=window)
            counts += np.bincount(strip.classes.ravel(), minlength=256)
    return counts


def _confidence_colors() -> dict[int, tuple[int, int, int, int]]:
    """Grey ramp over 0..100 %, transparent nodata."""
    table = {v: (int(v * 2.55), int(v * 2.55), int(v * 2.55), 255) for v in range(101)}
    table.update({v: (0, 0, 0, 0) for v in range(101, 256)})
    return table


def write_preview(scene: Scene, cls_path: Path, legend: Legend, out: Path) -> None:
    """Quick-look PNG: the input in natural colours beside the class map, with a legend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from landmeta.text import mpl_text

    with rasterio.open(cls_path) as src:
        classes = src.read(1, out_shape=decimation(src.height, src.width, PREVIEW_SIDE)[1])
    palette = np.zeros((256, 4), dtype=np.uint8)
    palette[:len(legend.colors), :3] = legend.colors
    palette[:len(legend.colors), 3] = 255
    fig, axes = plt.subplots(1, 2, figsize=(12, 6.4))
    axes[0].imshow(stretch(scene.overview(PREVIEW_SIDE, natural_colour_bands(scene.bands))))
    axes[0].set_title(f"{mpl_text(scene.name)} (input)")
    axes[1].imshow(palette[classes], interpolation="nearest")
    axes[1].set_title("predicted classes")
    for ax in axes:
        ax.set_axis_off()
    present = [int(c) for c in np.unique(classes) if c < len(legend.names)]
    handles = [Patch(facecolor=(legend.colors[c][0] / 255, legend.colors[c][1] / 255, legend.colors[c][2] / 255),
                     edgecolor="black", label=mpl_text(legend.names[c]))
               for c in present]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)



def qgis_style(legend: Legend) -> str:
    """A QGIS layer style (loaded automatically beside the class map): paletted colours and class names."""
    entries = "\n".join(
        f'        <paletteEntry value="{i}" color="#{r:02x}{g:02x}{b:02x}" alpha="255" label={quoteattr(name)}/>'
        for i, (name, (r, g, b)) in enumerate(zip(legend.names, legend.colors)))
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            '<qgis version="3.28" styleCategories="Symbology">\n  <pipe>\n'
            '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">\n'
            "      <rasterTransparency/>\n      <colorPalette>\n"
            f"{entries}\n      </colorPalette>\n    </rasterrenderer>\n  </pipe>\n</qgis>\n")


def write_polygons(cls_path: Path, legend: Legend, out: Path) -> None:
    """Class polygons in a GeoPackage (layer `landcover`: class_id, class_name, area in CRS units²)."""
    import geopandas as gpd
    from rasterio.features import shapes
    from shapely.geometry import shape

    rows: list[tuple[int, Any]] = []
    with rasterio.open(cls_path) as src:
        crs = src.crs
        for row in range(0, src.height, POLYGON_ROWS):
            window = Window(0, row, src.width, min(POLYGON_ROWS, src.height - row))
            block = src.read(1, window=window)
            for geom, value in shapes(block, mask=block != NODATA, transform=src.window_transform(window)):
                rows.append((int(value), shape(geom)))
    ids = [r[0] for r in rows]
    frame = gpd.GeoDataFrame(
        {"class_id": np.array(ids, dtype=np.int32),
         "class_name": [legend.names[i] if i < len(legend.names) else str(i) for i in ids]},
        geometry=gpd.GeoSeries([r[1] for r in rows], crs=crs), crs=crs)
    frame["area"] = frame.geometry.area
    frame.to_file(out, layer="landcover", driver="GPKG")
