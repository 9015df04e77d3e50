"""`landmeta predict --html`: the map viewer page, opened in real headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
from inference_factory import class_field, make_checkpoint, reflectance, write_geotiff, write_png
from PIL import Image

from landmeta.cli import main
from landmeta.inference.colours import Legend
from landmeta.inference.scene import open_scene
from landmeta.inference.viewer import viewer_page

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian package `chromium`)")
PATCH = Path("/work/shared/data/bigearthnet-s2/S2_patches/S2B_MSIL2A_20180421T114349_41_4")
LABELS = Path(__file__).resolve().parents[1] / "data" / "examples" / "bigearthnet-labels.gpkg"
S2_12 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
EVIL = "</script><script>document.title='injected'</script><b>&amp;"


class Page(HTMLParser):
    """Tags with their attributes and the text of every <td>, from a page or a dumped DOM."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.cells: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def by_id(self, id_: str) -> dict[str, str | None]:
        return next(attrs for _, attrs in self.tags if attrs.get("id") == id_)


def open_in_chromium(page: Path) -> str:
    """The page's DOM after its scripts ran, with every host name unresolvable (no network)."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--virtual-time-budget=10000",
             "--host-resolver-rules=MAP * ~NOTFOUND"]
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, *flags, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                              capture_output=True, text=True, timeout=120).stdout


def page_data(text: str) -> dict:
    return json.loads(re.search(r'<script id="viewer-data" type="application/json">(.*?)</script>', text, re.S)[1])


def decode(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


@pytest.fixture(scope="module")
def bigearthnet_page(tmp_path_factory) -> tuple[Path, Path]:
    """The README walkthrough: example labels over the real patch -> adapt -> predict --html."""
    if not PATCH.is_dir():
        pytest.skip("the BigEarthNet sample is not in /work/shared/data")
    from landmeta.classes import SIMPLIFIED_CLASSES, SIMPLIFIED_COLORS

    root = tmp_path_factory.mktemp("viewer")
    base = make_checkpoint(root / "s2.pt", bands=tuple(S2_12), class_names=SIMPLIFIED_CLASSES,
                           colors=SIMPLIFIED_COLORS, chip_size=32, store_chip_size=32)
    assert main(["adapt", "--checkpoint", str(base), "--scene", str(PATCH), "--labels", str(LABELS),
                 "--out", str(root / "be.pt"), "--steps", "5"]) == 0
    assert main(["predict", "--model", str(root / "be.pt"), "--input", str(PATCH), "--out", str(root / "maps"),
                 "--window", "64", "--html"]) == 0
    return root / "maps" / f"{PATCH.name}_map.html", root / "maps" / f"{PATCH.name}_classes.tif"


@needs_chromium
def test_real_patch_page_loads_offline_with_legend_areas_and_coordinates(bigearthnet_page):
    from landmeta.classes import SIMPLIFIED_CLASSES

    page, tif = bigearthnet_page
    text = page.read_text()
    parsed = Page(text)
    assert not [t for t, a in parsed.tags if "src" in a or "href" in a or t == "link"]  # nothing to fetch
    with rasterio.open(tif) as src:
        classes, transform, crs = src.read(1), src.transform, src.crs
    data = page_data(text)
    image = decode(data["classes"])  # full resolution at 120 px: the class map itself, nodata transparent
    assert image.mode == "P" and np.array_equal(np.asarray(image), classes)
    assert decode(data["quicklook"]).size == (120, 120)

    dom = open_in_chromium(page)
    assert re.search(r'<body[^>]*data-status="ready"', dom) and 'data-layers-loaded="2"' in dom
    assert "leaflet-image-layer" in dom and "leaflet-control-layers" in dom  # Leaflet built the map

    rows = re.findall(r'<tr class="class" data-class="(\d+)" data-pixels="(\d+)">(.*?)</tr>', dom, re.S)
    assert [Page(r[2]).cells[1] for r in rows] == SIMPLIFIED_CLASSES  # the legend lists every class
    counts = np.bincount(classes.ravel(), minlength=256)
    assert [int(r[1]) for r in rows] == counts[:len(SIMPLIFIED_CLASSES)].tolist()
    valid = int((classes != 255).sum())
    assert sum(int(r[1]) for r in rows) == valid and f'class="total" data-pixels="{valid}"' in dom
    for _, pixels, cells in rows:  # 10 m pixels: 0.01 ha each
        assert Page(cells).cells[-1] == f"{int(pixels) * 0.01:,.2f}"

    pointer = Page(dom)  # before any mouse move, the pointer panel describes the scene's centre
    pixel, cls = pointer.by_id("pointer-pixel"), pointer.by_id("pointer-class")
    assert (pixel["data-row"], pixel["data-col"]) == ("60", "60")
    assert int(cls["data-class-id"]) == classes[60, 60]
    xy = pointer.by_id("pointer-xy")
    x, y = transform @ (60, 60)
    assert abs(float(xy["data-x"]) - x) < 1e-6 and abs(float(xy["data-y"]) - y) < 1e-6
    lon, lat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    lonlat = pointer.by_id("pointer-lonlat")
    assert abs(float(lonlat["data-lon"]) - lon) < 1e-7 and abs(float(lonlat["data-lat"]) - lat) < 1e-7
    assert "UTM zone 29N (EPSG:32629)" in dom


@needs_chromium
def test_class_names_are_escaped_and_plain_images_get_pixel_coordinates(tmp_path, capsys):
    """A class named like a script stays text, in the page and in the browser; a PNG scene (no CRS)
    gets a page with pixel coordinates and no areas."""
    names = [EVIL, 'A & B "quoted"', "Water"]
    ckpt = make_checkpoint(tmp_path / "rgb.pt", bands=("red", "green", "blue"), class_names=names)
    rgb = np.moveaxis(reflectance(class_field(96, 128), 3) // 12, 0, -1).clip(0, 255).astype(np.uint8)
    png = write_png(tmp_path / "tile.png", rgb)
    code = main(["predict", "--model", str(ckpt), "--input", str(png), "--out", str(tmp_path / "maps"),
                 "--window", "64", "--html"])
    out = capsys.readouterr().out
    page = tmp_path / "maps" / "tile_map.html"
    assert code == 0 and f"{page}  (map viewer" in out
    text = page.read_text()
    assert EVIL not in text and "<script>document" not in text
    assert page_data(text)["names"] == names  # the JSON round-trips the names exactly
    assert len(re.findall(r"<script", text)) == 3  # the data, Leaflet, the page's own

    dom = open_in_chromium(page)
    assert re.search(r'<body[^>]*data-status="ready"', dom) and "<title>tile: land-cover map</title>" in dom
    assert len(re.findall(r"<script", dom)) == 3  # nothing injected
    assert Page(dom).cells[1::4][:3] == names  # legend cells hold the names as text (4 cells a row: no area)
    assert "area (ha)" not in dom and "No areas" in dom
    pointer = Page(dom)
    assert pointer.by_id("pointer-pixel")["data-row"] == "48"
    assert "data-x" not in pointer.by_id("pointer-xy") and "data-lon" not in pointer.by_id("pointer-lonlat")


def test_large_scene_images_are_decimated_by_nearest_pixel(tmp_path):
    """Above the side cap both images are one pixel per cell (the cell's middle): class ids are
    picked, never interpolated; the counts stay those of the full map."""
    truth = class_field(300, 200, k=3)
    truth[:40, :40] = 255
    scene_path = write_geotiff(tmp_path / "scene.tif", reflectance(np.where(truth == 255, 0, truth), 4))
    cls_path = write_geotiff(tmp_path / "classes.tif", truth[None], nodata=255)
    legend = Legend(names=["a", "b", "c"], colors=[(10, 20, 30), (200, 0, 0), (0, 200, 0)])
    counts = np.bincount(truth.ravel(), minlength=256)
    with open_scene(scene_path, ["B02", "B03", "B04", "B08"]) as scene:
        text = viewer_page(scene, cls_path, legend, counts, {}, max_side=64)
    data = page_data(text)
    assert (data["image_rows"], data["image_cols"]) == (300, 200)  # factor 5: whole cells
    image = decode(data["classes"])
    assert np.array_equal(np.asarray(image), truth[2::5, 2::5])
    alpha = np.asarray(image.convert("RGBA"))[..., 3]
    assert np.array_equal(alpha == 0, truth[2::5, 2::5] == 255)
    assert decode(data["quicklook"]).size == (40, 60)
    assert f'class="total" data-pixels="{int((truth != 255).sum())}"' in text
    assert 'data-nodata="1600"' in text
    assert data["pixel_m2"] == 100.0 and data["lonlat"]["nodes"] == 33


def test_existing_page_is_kept_without_overwrite(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "seg.pt")
    scene = write_geotiff(tmp_path / "s.tif", reflectance(class_field(64, 64), 4))
    out = tmp_path / "maps"
    out.mkdir()
    (out / "s_map.html").write_text("mine")
    args = ["predict", "--model", str(ckpt), "--input", str(scene), "--out", str(out), "--window", "64", "--html"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "s_map.html: exists" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["s_map.html"] and (out / "s_map.html").read_text() == "mine"
    assert main([*args, "--overwrite"]) == 0
    assert (out / "s_map.html").read_text().startswith("<!DOCTYPE html>")
