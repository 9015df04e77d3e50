"""A self-contained HTML viewer of one predicted scene (`landmeta predict --html`: `NAME_map.html`).

Leaflet (package `xstatic-leaflet`) is inlined with its licence header and both images are PNG
data URIs, so the page opens from file:// with no network. It shows the class map over the scene's
true-colour quick-look on the scene's own pixel grid (`L.CRS.Simple`: there is no basemap), with a
layer switch, an opacity slider, the legend with every class's pixel count, share and area, and
the pointer's pixel, class and coordinates (scene CRS, lon/lat). Both images are the scene decimated
to at most `VIEWER_SIDE` pixels a side (the class map by nearest pixel, never interpolated), read in
strips or blocks, so memory does not grow with the scene; the counts are the full-resolution map's.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import html
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import rasterio
from PIL import Image
from rasterio.enums import Resampling
from rasterio.errors import CRSError
from rasterio.windows import Window
from xstatic.pkg import leaflet

from landmeta.errors import DataError
from landmeta.inference.colours import Legend, natural_colour_bands, stretch
from landmeta.inference.predict import NODATA
from landmeta.inference.scene import Scene, decimation
from landmeta.io import atomic_write_text

VIEWER_SIDE = 2048  # both images: the scene decimated to at most this many pixels a side
LONLAT_NODES = 33  # lon/lat shown by the page: bilinear in a grid of this many nodes a side
M2_PER_HA = 10_000


def write_viewer(scene: Scene, cls_path: Path, legend: Legend, counts: np.ndarray, out: Path,
                 record: dict[str, Any], max_side: int = VIEWER_SIDE) -> None:
    """Write the viewer page of `scene` whose class map is `cls_path`; `counts` holds the map's pixels
    per value (256 counts, 255 = nodata)."""
    atomic_write_text(out, viewer_page(scene, cls_path, legend, counts, record, max_side))


def viewer_page(scene: Scene, cls_path: Path, legend: Legend, counts: np.ndarray, record: dict[str, Any],
                max_side: int = VIEWER_SIDE) -> str:
    """The page's HTML: Leaflet, both images and the scene's description and counts, in one string."""
    factor, shape = decimation(scene.height, scene.width, max_side)
    rows, cols = min(shape[0] * factor, scene.height), min(shape[1] * factor, scene.width)
    with rasterio.open(cls_path) as src:  # GDAL's nearest picks each cell's middle pixel, as the quick-look
        classes = src.read(1, window=Window(0, 0, cols, rows), out_shape=shape, resampling=Resampling.nearest)
    rgb = stretch(scene.overview(max_side, natural_colour_bands(scene.bands)))
    rgb *= 255  # in place: at the side cap each float copy is 48 MB
    rgb += 0.5
    rgb = rgb.astype(np.uint8)
    geo = georeference(scene)
    data = {"rows": scene.height, "cols": scene.width, "image_rows": rows, "image_cols": cols,
            "names": legend.names, "colors": [list(c) for c in legend.colors],
            "quicklook": png_uri(Image.fromarray(rgb)), "classes": png_uri(class_image(classes, legend)), **geo}
    fields = {"TITLE": html.escape(f"{scene.name}: land-cover map"), "NAME": html.escape(scene.name),
              "INFO": "\n".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                                for k, v in _about(scene, geo, record, factor)),
              "TABLE": class_table(legend, counts, geo["pixel_m2"]), "DATA": script_json(data),
              "LEAFLET_CSS": leaflet_css(), "LEAFLET_JS": leaflet_js(), "CSS": _asset("viewer.css"), "JS": _asset("viewer.js")}
    return re.sub(r"@@([A-Z_]+)@@", lambda m: fields[m.group(1)], _asset("viewer.html"))  # one pass: inserted text is not rescanned


def _about(scene: Scene, geo: dict[str, Any], record: dict[str, Any], factor: int) -> list[tuple[str, str]]:
    """The page's description of the map: input, model, CRS, size, sampling, provenance."""
    size = f"{scene.width} × {scene.height} pixels"
    if geo["crs"]:
        size += f", pixel {geo['pixel_size'][0]:.6g} × {geo['pixel_size'][1]:.6g} {geo['units']}"
    about = [("input", str(scene.path))] + ([("model", str(record["model"]))] if record.get("model") else [])
    about += [("CRS", geo["crs"] or "none (pixel coordinates)"), ("size", size),
              ("images", "full resolution" if factor == 1 else
               f"one pixel in {factor} × {factor} shown; counts and areas from the full-resolution map")]
    provenance = record.get("provenance") or {}
    if provenance:
        about.append(("written", f"{provenance.get('created', '?')} by landmeta "
                                 f"{provenance.get('landmeta_version', '?')}"))
    return about


def georeference(scene: Scene) -> dict[str, Any]:
    """What the page needs to show coordinates: CRS label, affine transform, pixel size and area,
    and a grid of lon/lat over the scene (None where the CRS cannot be transformed)."""
    if scene.crs is None:
        return {"crs": None, "units": "", "transform": None, "pixel_size": None, "pixel_m2": None,
                "projected": False, "lonlat": None}
    t = scene.transform
    crs = pyproj.CRS.from_user_input(scene.crs)
    epsg = scene.crs.to_epsg()
    projected = bool(scene.crs.is_projected)
    units, metres = scene.crs.linear_units or "", None
    if projected:
        with contextlib.suppress(CRSError):  # a unit GDAL cannot convert to metres: no areas
            units, metres = scene.crs.linear_units_factor
    elif crs.is_geographic:
        units = "degree"
    return {"crs": f"{crs.name} (EPSG:{epsg})" if epsg else crs.name, "units": units,
            "transform": [t.a, t.b, t.c, t.d, t.e, t.f], "projected": projected,
            "pixel_size": [abs(t.a), abs(t.e)],
            "pixel_m2": abs(t.a * t.e - t.b * t.d) * metres ** 2 if metres else None,
            "lonlat": lonlat_grid(crs, t, scene.height, scene.width)}


def lonlat_grid(crs: pyproj.CRS, transform: Any, height: int, width: int,
                nodes: int = LONLAT_NODES) -> dict[str, Any] | None:
    """Lon/lat at `nodes` × `nodes` points spread evenly over the scene, corners included (row-major,
    rows from the top); longitudes kept continuous across the antimeridian."""
    cols, rows = np.meshgrid(np.linspace(0, width, nodes), np.linspace(0, height, nodes))
    xs, ys = transform @ (cols, rows)
    to_lonlat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon, lat = (np.asarray(v, dtype=np.float64) for v in to_lonlat.transform(xs, ys))
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        return None
    middle = lon[nodes // 2, nodes // 2]
    lon = (lon - middle + 180) % 360 - 180 + middle
    return {"nodes": nodes, "lon": np.round(lon, 8).ravel().tolist(), "lat": np.round(lat, 8).ravel().tolist()}


def class_image(classes: np.ndarray, legend: Legend) -> Image.Image:
    """Class ids as a paletted image in the legend's colours, nodata (and unknown ids) transparent."""
    height, width = classes.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(classes, dtype=np.uint8).tobytes())
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:len(legend.colors)] = legend.colors
    image.putpalette(palette.ravel().tolist())
    alpha = bytes(255 if i < len(legend.colors) and i != NODATA else 0 for i in range(256))
    image.info["transparency"] = alpha
    return image


def png_uri(image: Image.Image) -> str:
    """`image` as a `data:image/png;base64,...` URI."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # a paletted image's info["transparency"] becomes its tRNS chunk
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def class_table(legend: Legend, counts: np.ndarray, pixel_m2: float | None) -> str:
    """The legend as an HTML table: colour, name, pixels, % of the valid pixels, area in ha (projected
    CRS only), then the total; nodata pixels are named below it."""
    valid = int(counts[:NODATA].sum())
    area = pixel_m2 is not None

    def row(cells: list[str], attrs: str = "") -> str:
        return f"<tr{attrs}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"

    def numbers(pixels: int) -> list[str]:
        share = f"{100 * pixels / valid:.1f}" if valid else "–"
        return [f"{pixels:,}", share] + ([f"{pixels * pixel_m2 / M2_PER_HA:,.2f}"] if pixel_m2 is not None else [])

    head = ["", "class", "pixels", "%"] + (["area (ha)"] if area else [])
    lines = ['<table id="classes">', "<thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>",
             "<tbody>"]
    for i, (name, (r, g, b)) in enumerate(zip(legend.names, legend.colors)):
        swatch = f'<span class="swatch" style="background: rgb({int(r)}, {int(g)}, {int(b)})"></span>'
        pixels = int(counts[i])
        lines.append(row([swatch, html.escape(name), *numbers(pixels)],
                         f' class="class" data-class="{i}" data-pixels="{pixels}"'))
    lines += ["</tbody>", "<tfoot>", row(["", "all classes", *numbers(valid)], f' class="total" data-pixels="{valid}"'),
              "</tfoot>", "</table>"]
    nodata = int(counts[NODATA])
    note = f"{nodata:,} nodata pixels are not counted." if nodata else "No nodata pixels."
    if not area:
        note += " No areas: the map has no projected CRS."
    return "\n".join(lines) + f'\n<p class="note" data-nodata="{nodata}">{note}</p>'


def script_json(value: Any) -> str:
    """JSON safe inside a <script> element: no `<`, `>` or `&` (so no `</script>`), no line separators."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


@functools.lru_cache(maxsize=1)
def leaflet_js() -> str:
    """leaflet.js as shipped (licence header kept), without its source-map comment."""
    text = (Path(leaflet.BASE_DIR) / "leaflet.js").read_text(encoding="utf-8")
    return _inlinable(re.sub(r"\n//# sourceMappingURL=\S+\s*$", "\n", text), "script")


@functools.lru_cache(maxsize=1)
def leaflet_css() -> str:
    """leaflet.css with its control icons inlined as data URIs."""
    base = Path(leaflet.BASE_DIR)
    text = (base / "leaflet.css").read_text(encoding="utf-8")
    text = re.sub(r"url\((images/[\w.-]+\.png)\)", lambda m: "url(data:image/png;base64,"
                  + base64.b64encode((base / m.group(1)).read_bytes()).decode("ascii") + ")", text)
    return _inlinable(text, "style")


def _inlinable(text: str, tag: str) -> str:
    if f"</{tag}" in text.lower():
        raise DataError(f"{leaflet.BASE_DIR}: this Leaflet build holds </{tag}> and cannot be inlined in a page")
    return text


@functools.lru_cache(maxsize=3)
def _asset(name: str) -> str:
    """The page's own HTML template, CSS or script, shipped in `landmeta/inference/assets/`."""
    return (Path(__file__).parent / "assets" / name).read_text(encoding="utf-8")
