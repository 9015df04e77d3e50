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
              "LEAFLET_CSS": leaflet_css(), "LEAFLET_JS": leaflet_js(), "CSS": PAGE_CSS, "JS": PAGE_JS}
    return re.sub(r"@@([A-Z_]+)@@", lambda m: fields[m.group(1)], PAGE)  # one pass: inserted text is not rescanned


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
        return [f"{pixels:,}", share] + ([f"{pixels * pixel_m2 / M2_PER_HA:,.2f}"] if area else [])

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


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@@TITLE@@</title>
<!-- Leaflet 1.9.3, https://leafletjs.com, (c) 2010-2022 Vladimir Agafonkin, (c) 2010-2011 CloudMade,
     BSD 2-Clause licence; inlined from the xstatic-leaflet package so the page needs no network -->
<style>
@@LEAFLET_CSS@@
</style>
<style>
@@CSS@@
</style>
</head>
<body data-status="loading" data-layers-loaded="0">
<div id="map"></div>
<aside id="panel">
<h1>@@NAME@@</h1>
<dl class="info">
@@INFO@@
</dl>
<h2>Pointer</h2>
<div id="pointer">
<div id="pointer-where"></div>
<div id="pointer-pixel"></div>
<div id="pointer-class"></div>
<div id="pointer-xy"></div>
<div id="pointer-lonlat"></div>
</div>
<h2>Class map</h2>
<label for="opacity">opacity</label>
<input id="opacity" type="range" min="0" max="100" step="1" value="70">
<output id="opacity-value" for="opacity">70 %</output>
<h2>Legend and area</h2>
@@TABLE@@
</aside>
<script id="viewer-data" type="application/json">@@DATA@@</script>
<script>
@@LEAFLET_JS@@
</script>
<script>
@@JS@@
</script>
</body>
</html>
"""

PAGE_CSS = """html, body { height: 100%; margin: 0; }
body { display: flex; font: 14px/1.4 system-ui, sans-serif; color: #222; }
#map { flex: 1 1 auto; height: 100%; background: #d8d8d8; }
#panel { flex: 0 0 360px; overflow-y: auto; box-sizing: border-box; padding: 12px 16px;
         border-left: 1px solid #bbb; background: #fafafa; }
h1 { font-size: 17px; margin: 0 0 8px; overflow-wrap: anywhere; }
h2 { font-size: 14px; margin: 16px 0 6px; }
dl.info { display: grid; grid-template-columns: auto 1fr; gap: 2px 8px; margin: 0; font-size: 12px; }
dl.info dt { color: #666; }
dl.info dd { margin: 0; overflow-wrap: anywhere; }
#pointer { font-size: 12px; min-height: 5em; font-variant-numeric: tabular-nums; }
#pointer-where { color: #666; }
#opacity { width: 200px; vertical-align: middle; }
table { border-collapse: collapse; width: 100%; font-size: 12px; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 4px; border-bottom: 1px solid #e2e2e2; text-align: right; white-space: nowrap; }
th:nth-child(2), td:nth-child(2) { text-align: left; white-space: normal; overflow-wrap: break-word; }
tr.total td { font-weight: 600; border-bottom: none; }
.swatch { display: inline-block; width: 14px; height: 14px; border: 1px solid #333; vertical-align: middle; }
.note { font-size: 12px; color: #666; }
.viewer-image { image-rendering: pixelated; }"""

PAGE_JS = """"use strict";
(function () {
  const data = JSON.parse(document.getElementById("viewer-data").textContent);
  const body = document.body;
  // CRS.Simple: lng = column, lat = -row (north up), one unit per scene pixel
  const bounds = L.latLngBounds([-data.image_rows, 0], [0, data.image_cols]);
  const map = L.map("map", {crs: L.CRS.Simple, minZoom: -12, maxZoom: 8, zoomSnap: 0.25, zoomDelta: 0.5});
  map.fitBounds(bounds);
  const slider = document.getElementById("opacity");
  const quicklook = L.imageOverlay(data.quicklook, bounds, {className: "viewer-image"});
  const classes = L.imageOverlay(data.classes, bounds, {className: "viewer-image", opacity: slider.value / 100});
  let loaded = 0;
  let pixels = null;  // RGBA of the class image, read back to name the class under the pointer
  const centre = L.latLng(-data.rows / 2, data.cols / 2);

  function layerLoaded() {
    loaded += 1;
    body.dataset.layersLoaded = String(loaded);
    if (loaded === 2 && body.dataset.status !== "error") {
      show(centre, "centre of the scene");
      body.dataset.status = "ready";
    }
  }
  function layerFailed() { body.dataset.status = "error"; }
  function readClasses(image) {
    try {
      const canvas = document.createElement("canvas");
      canvas.width = image.naturalWidth;
      canvas.height = image.naturalHeight;
      const context = canvas.getContext("2d");
      context.drawImage(image, 0, 0);
      pixels = {width: canvas.width, height: canvas.height,
                rgba: context.getImageData(0, 0, canvas.width, canvas.height).data};
    } catch (err) {
      pixels = null;  // the class under the pointer is then not shown
    }
  }
  quicklook.on("load", layerLoaded).on("error", layerFailed).addTo(map);
  classes.on("load", function (e) { readClasses(e.target.getElement()); layerLoaded(); })
    .on("error", layerFailed).addTo(map);
  L.control.layers(null, {"true colour": quicklook, "class map": classes}, {collapsed: false}).addTo(map);

  slider.addEventListener("input", function () {
    classes.setOpacity(slider.value / 100);
    document.getElementById("opacity-value").textContent = slider.value + " %";
  });

  function classAt(row, col) {
    if (!pixels || row >= data.image_rows || col >= data.image_cols) return null;
    const r = Math.floor(row / data.image_rows * pixels.height);
    const c = Math.floor(col / data.image_cols * pixels.width);
    const k = 4 * (r * pixels.width + c);
    if (pixels.rgba[k + 3] === 0) return -1;
    let best = -1, distance = Infinity;
    data.colors.forEach(function (rgb, i) {
      const d = (rgb[0] - pixels.rgba[k]) ** 2 + (rgb[1] - pixels.rgba[k + 1]) ** 2
        + (rgb[2] - pixels.rgba[k + 2]) ** 2;
      if (d < distance) { best = i; distance = d; }
    });
    return best;
  }
  function lonLat(row, col) {
    const grid = data.lonlat, n = grid.nodes;
    const u = Math.min(Math.max(col / data.cols, 0), 1) * (n - 1);
    const v = Math.min(Math.max(row / data.rows, 0), 1) * (n - 1);
    const j = Math.min(Math.floor(u), n - 2), i = Math.min(Math.floor(v), n - 2);
    const fu = u - j, fv = v - i, k = i * n + j;
    function at(a) {
      return (1 - fv) * ((1 - fu) * a[k] + fu * a[k + 1]) + fv * ((1 - fu) * a[k + n] + fu * a[k + n + 1]);
    }
    return [((at(grid.lon) + 180) % 360 + 360) % 360 - 180, at(grid.lat)];
  }
  function put(id, text, values) {
    const element = document.getElementById(id);
    element.textContent = text;
    for (const key of Object.keys(element.dataset)) delete element.dataset[key];
    Object.assign(element.dataset, values || {});
  }
  function show(latlng, where) {
    const col = latlng.lng, row = -latlng.lat;
    put("pointer-where", where);
    if (!(row >= 0 && col >= 0 && row < data.rows && col < data.cols)) {
      put("pointer-pixel", "outside the scene");
      ["pointer-class", "pointer-xy", "pointer-lonlat"].forEach(function (id) { put(id, ""); });
      return;
    }
    const r = Math.floor(row), c = Math.floor(col);
    put("pointer-pixel", "pixel row " + r + ", column " + c, {row: r, col: c});
    const id = classAt(row, col);
    put("pointer-class", id === null ? "" : "class: " + (id < 0 ? "nodata" : data.names[id]),
        id === null ? {} : {classId: id});
    if (data.transform) {
      const t = data.transform;
      const x = t[0] * col + t[1] * row + t[2], y = t[3] * col + t[4] * row + t[5];
      const digits = data.projected ? 1 : 6;
      put("pointer-xy", "x " + x.toFixed(digits) + ", y " + y.toFixed(digits) + " (" + data.units + ")",
          {x: x.toFixed(6), y: y.toFixed(6)});
    } else {
      put("pointer-xy", "");
    }
    if (data.lonlat) {
      const ll = lonLat(row, col);
      put("pointer-lonlat", "lon " + ll[0].toFixed(5) + "°, lat " + ll[1].toFixed(5) + "°",
          {lon: ll[0].toFixed(8), lat: ll[1].toFixed(8)});
    } else {
      put("pointer-lonlat", "");
    }
  }
  map.on("mousemove", function (e) { show(e.latlng, "pointer"); });
  map.on("mouseout", function () { show(centre, "centre of the scene"); });
})();"""
