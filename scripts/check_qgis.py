"""Open landmeta maps in QGIS (headless) and check that they show the right place, colours and legend.

Run with the Python that has QGIS (Debian: `apt-get install python3-qgis qgis-providers`), not
landmeta's virtual environment; it needs only QGIS and numpy:

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 scripts/check_qgis.py \\
        --map maps/SCENE_classes.tif --input SCENE.tif [--store STORE_DIR] [--render out.png]

For the class map (`NAME_classes.tif` or `.png`), beside which `landmeta predict` wrote
`NAME_confidence.*`, `NAME_legend.json`, `NAME_classes.qml` and maybe `NAME_polygons.gpkg`, it checks:
every layer is valid; CRS and extent equal those of the input raster opened in QGIS; the class
map's renderer is paletted with exactly the legend's class values, colours and names; the
polygons (when present) are in the same CRS, inside the extent, with class ids and names of the
legend; a chip store's `regions.gpkg` layers `regions` and `tiles` are valid with features. Then it
renders the class map (QgsMapRendererSequentialJob) and checks pixel by pixel that the image shows
the colour of each pixel's class. Prints one line per check; exit status 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["GDAL_PAM_ENABLED"] = "NO"  # a check only reads: no .aux.xml sidecars beside the user's files

from qgis.core import (QgsApplication, QgsMapRendererSequentialJob, QgsMapSettings,  # noqa: E402
                       QgsPalettedRasterRenderer, QgsRasterLayer, QgsRectangle, QgsVectorLayer)
from qgis.PyQt.QtCore import QSize  # noqa: E402
from qgis.PyQt.QtGui import QColor, QImage  # noqa: E402

BACKGROUND = (255, 0, 255)  # drawn where the map is transparent (nodata); never a class colour here
RENDER_SIDE = 1024  # the rendered image's longer side at most


class Checks:
    def __init__(self) -> None:
        self.failed = 0

    def __call__(self, ok: bool, what: str) -> bool:
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
        self.failed += not ok
        return ok


def same_extent(a: QgsRectangle, b: QgsRectangle, tolerance: float) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(
        (a.xMinimum(), a.yMinimum(), a.xMaximum(), a.yMaximum()),
        (b.xMinimum(), b.yMinimum(), b.xMaximum(), b.yMaximum())))


def crs_text(layer) -> str:
    crs = layer.crs()
    return crs.authid() or crs.description() if crs.isValid() else "no CRS"


def check_place(check: Checks, layer, reference: QgsRasterLayer, what: str) -> None:
    """Same CRS (or both without one) and same extent as the input raster."""
    check(layer.crs() == reference.crs(), f"{what}: CRS {crs_text(layer)} = input's {crs_text(reference)}")
    pixel = reference.rasterUnitsPerPixelX()
    check(same_extent(layer.extent(), reference.extent(), pixel * 1e-3),
          f"{what}: extent {layer.extent().toString(2)} = input's {reference.extent().toString(2)}")


def raster_layer(check: Checks, path: Path, name: str) -> QgsRasterLayer | None:
    layer = QgsRasterLayer(str(path), name)
    return layer if check(layer.isValid(), f"{name}: {path} opens as a valid raster layer") else None


def check_palette(check: Checks, layer: QgsRasterLayer, legend: list[dict]) -> dict[int, tuple[int, int, int]]:
    """The renderer QGIS chose (from the .qml style beside the map, or the embedded colour table)."""
    renderer = layer.renderer()
    check(isinstance(renderer, QgsPalettedRasterRenderer),
          f"class map: renderer is paletted ({renderer.type() if renderer else None})")
    if not isinstance(renderer, QgsPalettedRasterRenderer):
        return {}
    shown = sorted((c.value, c.color.getRgb()[:3], c.label) for c in renderer.classes())
    expected = sorted((c["id"], tuple(c["color"]), c["name"]) for c in legend)
    check(shown == expected, f"class map: palette has exactly the {len(expected)} legend classes "
                             f"(value, colour, name){'' if shown == expected else f': got {shown}'}")
    return {int(v): color for v, color, _ in shown}


def check_render(check: Checks, layer: QgsRasterLayer, colors: dict[int, tuple[int, int, int]],
                 out: Path) -> None:
    """Render the class map at its own grid (scaled to RENDER_SIDE at most) and compare every pixel
    with the colour of its class; nodata must show the background."""
    cols, rows = layer.width(), layer.height()
    scale = min(1.0, RENDER_SIDE / max(cols, rows))
    size = QSize(max(1, round(cols * scale)), max(1, round(rows * scale)))
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(layer.extent())
    settings.setOutputSize(size)
    settings.setBackgroundColor(QColor(*BACKGROUND))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage().convertToFormat(QImage.Format_RGB32)
    check(image.save(str(out), "PNG"), f"render: {size.width()}x{size.height()} image saved to {out}")
    width, height = image.width(), image.height()
    pixels = np.frombuffer(image.constBits().asstring(image.sizeInBytes()), dtype=np.uint8)
    pixels = pixels.reshape(height, image.bytesPerLine() // 4, 4)[:, :width, 2::-1]  # BGRA -> RGB
    block = layer.dataProvider().block(1, layer.extent(), width, height)
    values = np.frombuffer(block.data(), dtype=np.uint8).reshape(height, width)
    palette = np.tile(np.array(BACKGROUND, dtype=np.uint8), (256, 1))
    for value, color in colors.items():
        palette[value] = color
    nodata = layer.dataProvider().sourceNoDataValue(1) if layer.dataProvider().sourceHasNoDataValue(1) else None
    expected = palette[values]
    if nodata is not None:
        expected[values == int(nodata)] = BACKGROUND
    agree = (pixels == expected).all(axis=2).mean()
    # a scaled rendering may resample a pixel on a class edge differently from the block read
    check(agree >= (1.0 if scale == 1.0 else 0.98),
          f"render: {agree:.2%} of pixels show their class's colour (or the background at nodata)")
    present = {int(v) for v in np.unique(values) if int(v) in colors}
    drawn = {tuple(p) for p in np.unique(pixels.reshape(-1, 3), axis=0)}
    check(all(colors[v] in drawn for v in present),
          f"render: the {len(present)} classes in the map all appear in their colours")


def check_vector(check: Checks, path: Path, layer_name: str, reference: QgsRasterLayer | None = None,
                 legend: list[dict] | None = None) -> None:
    layer = QgsVectorLayer(f"{path}|layername={layer_name}", layer_name, "ogr")
    if not check(layer.isValid(), f"{layer_name}: {path} layer '{layer_name}' is valid"):
        return
    check(layer.featureCount() > 0, f"{layer_name}: {layer.featureCount()} features, CRS {crs_text(layer)}")
    if reference is None:
        return
    check(layer.crs() == reference.crs(), f"{layer_name}: CRS {crs_text(layer)} = input's {crs_text(reference)}")
    tolerance = reference.rasterUnitsPerPixelX() * 1e-3
    outer = reference.extent().buffered(tolerance)
    check(outer.contains(layer.extent()), f"{layer_name}: extent {layer.extent().toString(2)} within the map's")
    if legend is not None:
        names = {c["id"]: c["name"] for c in legend}
        pairs = {(f["class_id"], f["class_name"]) for f in layer.getFeatures()}
        check(all(names.get(i) == n for i, n in pairs),
              f"{layer_name}: class ids and names of {len(pairs)} classes match the legend")


def run_checks(check: Checks, args: argparse.Namespace) -> None:
    name = args.map.name.rsplit("_classes.", 1)[0]
    folder, ext = args.map.parent, args.map.suffix
    legend = json.loads((folder / f"{name}_legend.json").read_text())["classes"]
    reference = raster_layer(check, args.input, "input")
    classes = raster_layer(check, args.map, "class map")
    if reference is None or classes is None:
        return
    check_place(check, classes, reference, "class map")
    colors = check_palette(check, classes, legend)
    confidence = raster_layer(check, folder / f"{name}_confidence{ext}", "confidence")
    if confidence is not None:
        check_place(check, confidence, reference, "confidence")
    polygons = folder / f"{name}_polygons.gpkg"
    if polygons.exists():
        check_vector(check, polygons, "landcover", reference, legend)
    if args.store is not None:
        for layer_name in ("regions", "tiles"):
            check_vector(check, args.store / "regions.gpkg", layer_name)
    if colors:
        check_render(check, classes, colors, args.render or folder / f"{name}_qgis.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--map", required=True, type=Path, help="NAME_classes.tif or NAME_classes.png")
    parser.add_argument("--input", required=True, type=Path, help="the raster the map was predicted from")
    parser.add_argument("--store", type=Path, help="a chip store folder (checks its regions.gpkg)")
    parser.add_argument("--render", type=Path, help="PNG to render the class map to (default: beside the map)")
    args = parser.parse_args()
    app = QgsApplication([], False)
    app.setPrefixPath("/usr", True)
    app.initQgis()
    check = Checks()
    try:
        run_checks(check, args)  # its layers are freed on return, before QGIS exits
    finally:
        app.exitQgis()
    print(f"{check.failed} checks failed" if check.failed else "all checks passed")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
