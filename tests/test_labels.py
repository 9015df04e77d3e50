"""Vector support sets (`landmeta adapt --scene --labels`): real GeoPackages/GeoJSON over real GeoTIFFs."""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from inference_factory import CLASSES, TRANSFORM, UTM, class_field, make_checkpoint, reflectance, write_geotiff
from rasterio.features import rasterize
from shapely.geometry import LineString, Point, box

from landmeta.cli import main
from landmeta.data.chips import around_features
from landmeta.errors import LandmetaWarning
from landmeta.inference.labels import LabelSource, read_label_support
from landmeta.meta.checkpoint import Checkpoint

BIGEARTHNET = Path("/work/shared/data/bigearthnet-s2/S2_patches")
EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "examples" / "bigearthnet-labels.gpkg"
EXAMPLE_PATCH = BIGEARTHNET / "S2B_MSIL2A_20180421T114349_41_4"
STEPS = 20
S2_12 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]


def _run(capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _pixel_box(r0: int, c0: int, r1: int, c1: int):
    """A rectangle on pixel edges of the test grid (rows r0..r1, cols c0..c1, end exclusive), UTM."""
    x0, y0 = TRANSFORM * (c0, r1)
    x1, y1 = TRANSFORM * (c1, r0)
    return box(x0, y0, x1, y1)


def _pixel_point(row: float, col: float) -> Point:
    return Point(*(TRANSFORM * (col, row)))


def _labels(path: Path, geoms: list, classes: list[str], crs: str = "EPSG:4326", field: str = "class") -> Path:
    """Features given in the scene's UTM, written in `crs` (reprojected by geopandas)."""
    frame = gpd.GeoDataFrame({field: classes}, geometry=geoms, crs=UTM).to_crs(crs)
    frame.to_file(path, driver="GPKG" if path.suffix == ".gpkg" else "GeoJSON")
    return path


def _scene(tmp_path: Path, size: tuple[int, int] = (200, 200), seed: int = 0) -> tuple[Path, np.ndarray]:
    truth = class_field(*size, seed=seed)
    return write_geotiff(tmp_path / "scene.tif", reflectance(truth, 4, seed=seed)), truth


def _mosaic(data, shape: tuple[int, int]) -> np.ndarray:
    """The support windows' masks put back on the scene grid (255 elsewhere); windows must not overlap."""
    full = np.full(shape, 255, dtype=np.int64)
    seen = np.zeros(shape, dtype=int)
    for (r, c, h, w), y in zip(data.windows, data.support.y):
        inside = y.numpy()[:shape[0] - r, :shape[1] - c]  # a window may run past the edge (unlabelled there)
        assert (y.numpy()[inside.shape[0]:] == 255).all() and (y.numpy()[:, inside.shape[1]:] == 255).all()
        full[r:r + h, c:c + w] = inside
        seen[r:r + h, c:c + w] += 1
    assert seen.max() <= 1
    return full


def test_polygons_and_points_in_another_crs_land_on_the_right_pixels(tmp_path):
    """Polygons and points written in EPSG:4326 over a UTM scene rasterise to the pixels they were drawn on."""
    scene, _ = _scene(tmp_path)
    ckpt = Checkpoint.load(make_checkpoint(tmp_path / "base.pt", chip_size=64, store_chip_size=64))
    geoms = [_pixel_box(10, 20, 30, 50), _pixel_box(100, 100, 110, 140), _pixel_point(150.5, 60.5),
             _pixel_point(170.2, 170.7)]
    labels = _labels(tmp_path / "labels.gpkg", geoms, ["Forest", "water", "Cropland", "Water"])
    data = read_label_support(LabelSource(scene, labels), ckpt)
    expected = np.full((200, 200), 255)
    expected[10:30, 20:50] = 0
    expected[100:110, 100:140] = 2
    for r, c in [(150, 60), (149, 60), (151, 60), (150, 59), (150, 61)]:  # radius 1: the pixel and 4 neighbours
        expected[r, c] = 1
    for r, c in [(170, 170), (170, 171), (169, 170)]:  # radius 1 around (170.2, 170.7): centres within 1 px
        expected[r, c] = 2
    assert (_mosaic(data, (200, 200)) == expected).all()
    assert data.features == 4 and data.outside == 0 and data.overlap_pixels == 0
    assert data.support.x.shape[1:] == (4, 64, 64) and torch.isfinite(data.support.x).all()

    wide = read_label_support(LabelSource(scene, labels, point_radius=0), ckpt)
    single = _mosaic(wide, (200, 200))
    assert single[150, 60] == 1 and single[149, 60] == 255  # radius 0: just the point's pixel


def test_default_point_radius_is_one_model_pixel(tmp_path):
    scene, _ = _scene(tmp_path)
    ckpt = Checkpoint.load(make_checkpoint(tmp_path / "base.pt", chip_size=32, store_chip_size=64))
    labels = _labels(tmp_path / "p.geojson", [_pixel_point(100.5, 100.5)], ["Forest"], crs="EPSG:3857")
    data = read_label_support(LabelSource(scene, labels), ckpt)
    assert data.point_radius == 2.0  # 64-px store chips resized to 32: a model pixel is 2 scene pixels
    assert len(data.windows) == 1
    r, c, h, w = data.windows[0]
    assert (h, w) == (64, 64) and r < 100 < r + 64 and c < 100 < c + 64  # the window holds the disc
    assert (data.support.y == 0).sum() >= 4  # 13 scene pixels of the disc, seen at half resolution


def test_windows_do_not_overlap_and_hold_every_label(tmp_path):
    """Many small polygons, some touching or close: non-overlapping windows covering all labelled pixels."""
    rng = np.random.default_rng(1)
    scene, _ = _scene(tmp_path, size=(500, 500))
    ckpt = Checkpoint.load(make_checkpoint(tmp_path / "base.pt", chip_size=64, store_chip_size=64))
    geoms, classes = [], []
    for _ in range(80):
        r, c = rng.integers(0, 490, size=2)
        h, w = rng.integers(2, 25, size=2)
        geoms.append(_pixel_box(r, c, min(r + h, 500), min(c + w, 500)))
        classes.append(CLASSES[len(geoms) % 3])
    labels = _labels(tmp_path / "many.gpkg", geoms, classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LandmetaWarning)  # random squares overlap
        data = read_label_support(LabelSource(scene, labels), ckpt)
    per_class = [rasterize([g for g, k in zip(geoms, classes) if k == name], out_shape=(500, 500),
                           transform=TRANSFORM, dtype=np.uint8).astype(bool) for name in CLASSES]
    count = np.sum(per_class, axis=0)
    expected = np.where(count == 1, np.argmax(per_class, axis=0), 255)
    assert (_mosaic(data, (500, 500)) == expected).all()  # every labelled pixel, once, with its class
    assert data.overlap_pixels == int((count > 1).sum())
    assert len(data.windows) < 80  # close features share windows


def test_window_plan_bounds_large_features_and_edges():
    """A large polygon gets at most 4 windows; windows fit the scene where they can; no overlaps."""
    windows = around_features(np.array([[0, 0, 1000, 1000]]), 2000, 2000, 128)
    assert len(windows) == 4
    rng = np.random.default_rng(0)
    starts = rng.integers(0, 1000, size=(300, 2))
    boxes = np.concatenate([starts, starts + rng.integers(1, 60, size=(300, 2))], axis=1).clip(0, 1000)
    windows = around_features(boxes, 1000, 1000, 128, per_feature=10 ** 6)
    cover = np.zeros((1100, 1100), dtype=int)
    for r, c, h, w in windows:  # a cluster wider than 7 windows runs past the edge (by less than a window)
        assert 0 <= r and 0 <= c and r + h < 1000 + 128 and c + w < 1000 + 128 and (h, w) == (128, 128)
        cover[r:r + h, c:c + w] += 1
    assert cover.max() == 1
    for r0, c0, r1, c1 in boxes:
        assert (cover[r0:r1, c0:c1] == 1).all()
    assert around_features(np.array([[5, 5, 10, 10]]), 40, 300, 128) == [(0, 0, 40, 128)]  # short side: one window
    inside = around_features(boxes // 2, 1000, 1000, 128, per_feature=10 ** 6)  # a cluster that fits: inside
    assert all(r + h <= 1000 and c + w <= 1000 for r, c, h, w in inside)


def test_overlapping_classes_are_unlabelled_and_warned(tmp_path, capsys):
    scene, _ = _scene(tmp_path)
    base = make_checkpoint(tmp_path / "base.pt", chip_size=64, store_chip_size=64)
    labels = _labels(tmp_path / "o.gpkg", [_pixel_box(10, 10, 30, 30), _pixel_box(20, 20, 40, 40),
                                           _pixel_box(35, 35, 45, 45)], ["Forest", "Water", "Water"])
    with pytest.warns(LandmetaWarning, match="100 pixels where features of different classes overlap"):
        data = read_label_support(LabelSource(scene, labels), Checkpoint.load(base))
    mask = _mosaic(data, (200, 200))
    assert (mask[20:30, 20:30] == 255).all() and (mask[10:20, 10:20] == 0).all()
    assert (mask[36:40, 36:40] == 2).all()  # same class overlapping: labelled
    code, _, err = _run(capsys, "adapt", "--checkpoint", base, "--scene", scene, "--labels", labels,
                        "--out", tmp_path / "m.pt", "--steps", 1)
    assert code == 0, err
    assert "landmeta adapt: warning:" in err and "100 pixels" in err


def _accuracy(capsys, model: Path, scene: Path, truth: np.ndarray, out: Path) -> float:
    code, _, err = _run(capsys, "predict", "--model", model, "--input", scene, "--out", out, "--window", 128)
    assert code == 0, err
    return float((rasterio.open(out / f"{scene.stem}_classes.tif").read(1) == truth).mean())


def test_adapt_from_a_labels_file_maps_the_region_better(tmp_path, capsys):
    """A U-Net adapted on 40 polygons (in lon/lat) over one scene maps an unseen scene far better than before."""
    torch.manual_seed(0)
    truth_train = class_field(256, 256, seed=5)
    scene = write_geotiff(tmp_path / "region.tif", reflectance(truth_train, 4, seed=5))
    rng = np.random.default_rng(2)
    geoms, classes = [], []
    for i, j in rng.permutation([(i, j) for i in range(16) for j in range(16)])[:40]:
        geoms.append(_pixel_box(16 * i, 16 * j, 16 * i + 16, 16 * j + 16))  # one whole 16-px field
        classes.append(CLASSES[truth_train[16 * i + 8, 16 * j + 8]])
    labels = _labels(tmp_path / "fields.gpkg", geoms, classes)
    base = make_checkpoint(tmp_path / "base.pt", store_chip_size=64)
    out = tmp_path / "models" / "region.pt"
    code, stdout, err = _run(capsys, "adapt", "--checkpoint", base, "--scene", scene, "--labels", labels,
                             "--out", out, "--steps", STEPS, "--lr", 0.1)
    assert code == 0, err
    assert "40 labelled features" in stdout
    adapted = Checkpoint.load(out)
    info = adapted.adaptation
    assert info["support"] == str(labels.resolve()) and info["labels"]["scene"] == str(scene.resolve())
    assert info["labels"]["features"] == 40 and info["chips"] == len(info["labels"]["windows"]) == len(info["tiles"])
    truth = class_field(128, 192, seed=99)
    test_scene = write_geotiff(tmp_path / "scene.tif", reflectance(truth, 4, seed=99))
    before = _accuracy(capsys, base, test_scene, truth, tmp_path / "before")
    after = _accuracy(capsys, out, test_scene, truth, tmp_path / "after")
    assert after > 0.7 and after > before + 0.3, (before, after)  # 40 fields labelled of 256


def test_classifier_gets_each_windows_majority_class(tmp_path):
    scene, _ = _scene(tmp_path, size=(200, 200))
    ckpt = Checkpoint.load(make_checkpoint(tmp_path / "c.pt", kind="classification", chip_size=32,
                                           store_chip_size=32))
    labels = _labels(tmp_path / "c.gpkg", [_pixel_box(10, 10, 30, 30), _pixel_box(150, 150, 160, 170),
                                           _pixel_point(100, 40)], ["Water", "Forest", "Water"])
    data = read_label_support(LabelSource(scene, labels), ckpt)
    assert data.support.class_names == ["Forest", "Water"] and data.support.classes == [0, 2]
    assert sorted(data.support.y.tolist()) == [0, 1, 1]


def _bad_case(tmp_path: Path, case: str) -> tuple[Path, Path, list]:
    scene, _ = _scene(tmp_path)
    inside = [_pixel_box(10, 10, 30, 30), _pixel_point(50, 50)]
    extra: list = []
    if case == "outside":
        far = [box(g.bounds[0] + 1e5, g.bounds[1], g.bounds[2] + 1e5, g.bounds[3]) for g in inside[:1]]
        labels = _labels(tmp_path / "l.gpkg", far, ["Forest"])
    elif case == "empty":
        labels = tmp_path / "l.gpkg"
        gpd.GeoDataFrame({"class": []}, geometry=[], crs=UTM).to_file(labels, driver="GPKG")
    elif case == "lines":
        labels = _labels(tmp_path / "l.gpkg", inside + [LineString([(440000, 5399000), (440500, 5399500)])],
                         ["Forest", "Water", "Water"])
    elif case == "field":
        labels = _labels(tmp_path / "l.gpkg", inside, ["Forest", "Water"], field="landcover")
    elif case == "unknown":
        labels = _labels(tmp_path / "l.gpkg", inside, ["Forest", "Snow"])
    elif case == "no_crs":
        scene = write_geotiff(tmp_path / "plain.tif", reflectance(class_field(200, 200), 4), crs=None)
        labels = _labels(tmp_path / "l.gpkg", inside, ["Forest", "Water"])
    elif case == "layer":
        labels = _labels(tmp_path / "l.gpkg", inside, ["Forest", "Water"])
        extra = ["--layer", "nope"]
    elif case == "no_scene":
        labels = _labels(tmp_path / "l.gpkg", inside, ["Forest", "Water"])
        scene = None
    return scene, labels, extra


@pytest.mark.parametrize("case,message", [
    ("outside", "outside the scene's footprint"),
    ("empty", "the layer has no features"),
    ("lines", "1 features are LineString; labels must be polygons or points"),
    ("field", "no field 'class' (fields: landcover)"),
    ("unknown", "classes 'Snow' in field 'class' are not classes of the checkpoint (Forest, Cropland, Water"),
    ("no_crs", "the scene has no CRS"),
    ("layer", "no layer 'nope'"),
    ("no_scene", "--labels needs --scene"),
])
def test_bad_labels_are_one_line_and_write_nothing(tmp_path, capsys, case, message):
    base = make_checkpoint(tmp_path / "base.pt", chip_size=64, store_chip_size=64)
    scene, labels, extra = _bad_case(tmp_path, case)
    where = ["--scene", scene] if scene is not None else []
    code, _, err = _run(capsys, "adapt", "--checkpoint", base, *where, "--labels", labels,
                        "--out", tmp_path / "models" / "r.pt", *extra)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("landmeta adapt: error:") and message in last, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_support_and_labels_are_exclusive(tmp_path, capsys):
    base = make_checkpoint(tmp_path / "base.pt")
    with pytest.raises(SystemExit):
        main(["adapt", "--checkpoint", str(base), "--support", str(tmp_path), "--labels", str(tmp_path / "l.gpkg"),
              "--out", str(tmp_path / "m.pt")])
    code, _, err = _run(capsys, "adapt", "--checkpoint", base, "--support", tmp_path, "--scene", tmp_path,
                        "--out", tmp_path / "m.pt")
    assert code == 2 and "--scene goes with --labels" in err


@pytest.mark.skipif(not EXAMPLE_PATCH.is_dir(), reason="the BigEarthNet sample is not in /work/shared/data")
def test_example_labels_adapt_on_the_real_bigearthnet_patch(tmp_path, capsys):
    """data/examples/bigearthnet-labels.gpkg over its real 12-band patch (a per-band folder): adapt, then predict."""
    from landmeta.classes import SIMPLIFIED_CLASSES, SIMPLIFIED_COLORS

    frame = gpd.read_file(EXAMPLE)
    assert 10 <= (frame.geom_type == "Polygon").sum() <= 20 and (frame.geom_type == "Point").sum() >= 3
    base = make_checkpoint(tmp_path / "s2.pt", bands=tuple(S2_12), class_names=SIMPLIFIED_CLASSES,
                           colors=SIMPLIFIED_COLORS, chip_size=32, store_chip_size=32)
    data = read_label_support(LabelSource(EXAMPLE_PATCH, EXAMPLE), Checkpoint.load(base))
    assert data.outside == 0 and data.overlap_pixels == 0 and data.features == len(frame)
    assert set(data.support.y.unique().tolist()) - {255} == {SIMPLIFIED_CLASSES.index(c) for c in frame["class"]}
    code, out, err = _run(capsys, "adapt", "--checkpoint", base, "--scene", EXAMPLE_PATCH, "--labels", EXAMPLE,
                          "--out", tmp_path / "be.pt", "--steps", 5)
    assert code == 0, err
    code, _, err = _run(capsys, "predict", "--model", tmp_path / "be.pt", "--input", EXAMPLE_PATCH,
                        "--out", tmp_path / "maps", "--window", 64)
    assert code == 0, err
    with rasterio.open(tmp_path / "maps" / f"{EXAMPLE_PATCH.name}_classes.tif") as cls:
        assert cls.shape == (120, 120) and cls.crs is not None
