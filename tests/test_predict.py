"""`landmeta predict`: sliding-window maps from real GeoTIFF/PNG/JPG files and real (tiny) models."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from inference_factory import (
    CLASSES,
    COLORS,
    UTM,
    check_qgis,
    class_field,
    has_qgis,
    make_checkpoint,
    reflectance,
    write_geotiff,
    write_png,
)
from PIL import Image

from landmeta.cli import main
from landmeta.data.chips import MAX_STRETCH, sliding_windows
from landmeta.inference.predict import WindowModel, predict_strips
from landmeta.inference.scene import open_scene

BIGEARTHNET = Path("/work/shared/data/bigearthnet-s2/S2_patches")
S2_12 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]


@pytest.fixture(scope="module")
def seg_ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "seg.pt")


def _predict(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["predict", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("window,overlap,batch", [(64, 16, 3), (96, 0, 2), (64, 32, 1), (512, 8, 4)])
def test_blending_equals_a_per_pixel_model_everywhere(tmp_path, window, overlap, batch):
    """With a model that sees pixels one by one, every window agrees, so the cross-faded map must
    equal the model applied to the whole image (weights sum to one; no seams, no edge effects)."""
    torch.manual_seed(0)
    data = np.random.default_rng(1).integers(1, 5000, size=(4, 157, 233), dtype=np.uint16)
    data[:, :10, :20] = 0
    path = write_geotiff(tmp_path / "in.tif", data, nodata=0)
    model = torch.nn.Conv2d(4, 5, 1).eval()
    mean, std = np.full(4, 0.25, np.float32), np.full(4, 0.15, np.float32)
    wm = WindowModel(model, mean, std, num_classes=5)
    with open_scene(path, ["a", "b", "c", "d"]) as scene:
        strips = list(predict_strips(scene, wm, window, overlap, batch))
    classes = np.concatenate([s.classes for s in strips])
    conf = np.concatenate([s.confidence for s in strips])
    with torch.no_grad():
        probs = torch.softmax(model(torch.from_numpy(((data / 1e4 - 0.25) / 0.15).astype(np.float32))[None]), 1)[0]
    valid = (data != 0).all(axis=0)
    assert classes.shape == (157, 233)
    assert (classes[valid] == probs.argmax(0).numpy()[valid]).all()
    assert np.abs(conf[valid].astype(int) - np.rint(probs.max(0).values.numpy()[valid] * 100)).max() <= 1
    assert (classes[~valid] == 255).all() and (conf[~valid] == 255).all()


def test_window_layout_covers_the_scene_without_thin_windows():
    for size in range(1, 3000, 37):
        for window, overlap, multiple in [(1024, 32, 32), (64, 16, 32), (512, 0, 8), (96, 48, 32)]:
            layout = sliding_windows(size, window, overlap, multiple, fixed=False)
            assert layout[0][0] == 0
            assert all(a + la - overlap == b for (a, la), (b, _) in zip(layout, layout[1:]))  # exact overlaps
            end = layout[-1][0] + layout[-1][1]
            assert size <= end < size + multiple + (multiple if len(layout) > 1 else 0)
            assert all(length % multiple == 0 for _, length in layout[1:] + layout[-1:])
            assert max(length for _, length in layout) <= window * MAX_STRETCH + multiple
            if len(layout) > 1:  # no window below about half the window (a sliver runs the model badly)
                assert min(length for _, length in layout) >= (window * MAX_STRETCH + overlap) / 2
    assert sliding_windows(2048, 1024, 32, 32, False) == [(0, 1024), (992, 1056)]  # not 1024, 1024, 64
    assert sliding_windows(2448, 1024, 32, 32, False) == [(0, 1024), (992, 768), (1728, 736)]
    assert sliding_windows(100, 32, 0, 32, True) == [(0, 32), (32, 32), (64, 32), (96, 32)]  # classifier windows


def test_geotiff_maps_keep_crs_transform_colours_and_nodata(tmp_path, seg_ckpt, capsys):
    data = reflectance(class_field(150, 210), 4)
    data[:, 100:, :40] = 0
    scene = write_geotiff(tmp_path / "scene.tif", data, nodata=0)
    code, out, err = _predict(capsys, "--model", seg_ckpt, "--input", scene, "--out", tmp_path / "maps",
                              "--window", 64, "--overlap", 16, "--polygons")
    assert code == 0, err
    maps = tmp_path / "maps"
    with rasterio.open(scene) as src, rasterio.open(maps / "scene_classes.tif") as cls, \
            rasterio.open(maps / "scene_confidence.tif") as conf:
        assert cls.crs == src.crs == rasterio.crs.CRS.from_string(UTM)
        assert cls.transform == src.transform and conf.transform == src.transform
        assert (cls.width, cls.height) == (210, 150) and cls.dtypes[0] == "uint8"
        assert cls.nodata == 255
        assert [cls.colormap(1)[i][:3] for i in range(3)] == COLORS
        classes, confidence = cls.read(1), conf.read(1)
    assert (classes[100:, :40] == 255).all() and (confidence[100:, :40] == 255).all()
    assert set(np.unique(classes[:100])) <= {0, 1, 2}
    assert confidence[:100].min() >= 33 and confidence[:100].max() <= 100  # max of 3 probabilities
    legend = json.loads((maps / "scene_legend.json").read_text())
    assert [c["name"] for c in legend["classes"]] == CLASSES and legend["window"] == 64
    assert 'label="Water"' in (maps / "scene_classes.qml").read_text()
    assert Image.open(maps / "scene_preview.png").size[0] > 0
    polygons = gpd.read_file(maps / "scene_polygons.gpkg", layer="landcover")
    assert polygons.crs == rasterio.crs.CRS.from_string(UTM)
    assert set(polygons["class_name"]) <= set(CLASSES) and len(polygons) > 0
    # polygons cover exactly the mapped (non-nodata) area
    assert polygons.geometry.area.sum() == pytest.approx((classes != 255).sum() * 100.0)
    assert "scene_classes.tif" in out
    assert not list(maps.glob(".*"))  # no scratch or partial files left


def test_jpg_without_georeference_gives_png_maps(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "rgb.pt", bands=("red", "green", "blue"))
    rgb = np.moveaxis(reflectance(class_field(120, 160), 3) // 12, 0, -1).clip(0, 255).astype(np.uint8)
    jpg = write_png(tmp_path / "tile_sat.jpg", rgb)
    code, out, err = _predict(capsys, "--model", ckpt, "--input", jpg, "--out", tmp_path / "maps",
                              "--window", 64, "--polygons")
    assert code == 0, err
    assert "no georeference" in out
    classes = Image.open(tmp_path / "maps" / "tile_sat_classes.png")
    assert classes.mode == "P" and classes.size == (160, 120)  # paletted PNG with the class colours
    assert tuple(classes.getpalette()[:9]) == tuple(v for c in COLORS for v in c)
    assert Image.open(tmp_path / "maps" / "tile_sat_confidence.png").size == (160, 120)
    assert (tmp_path / "maps" / "tile_sat_preview.png").is_file()
    assert 'label="Water"' in (tmp_path / "maps" / "tile_sat_classes.qml").read_text()  # names in QGIS
    assert not list((tmp_path / "maps").glob("*.tif")) and not list((tmp_path / "maps").glob(".*"))
    assert not list((tmp_path / "maps").glob("*.gpkg"))


def test_band_mismatch_is_one_line_and_writes_nothing(tmp_path, seg_ckpt, capsys):
    scene = write_geotiff(tmp_path / "three.tif", reflectance(class_field(64, 64), 3))
    code, out, err = _predict(capsys, "--model", seg_ckpt, "--input", scene, "--out", tmp_path / "maps")
    assert code == 2
    assert err.count("\n") == 1 and "three.tif" in err and "B02, B03, B04, B08" in err
    assert not (tmp_path / "maps").exists() or not any((tmp_path / "maps").iterdir())


def test_named_bands_are_matched_by_name(tmp_path, seg_ckpt, capsys):
    data = reflectance(class_field(64, 96), 4)
    write_geotiff(tmp_path / "a" / "ordered.tif", data, descriptions=["B2", "B3", "B4", "B8"])
    write_geotiff(tmp_path / "b" / "ordered.tif", data[[3, 0, 2, 1]], descriptions=["B08", "B02", "B04", "B03"])
    for name in ("a", "b"):
        code, _, err = _predict(capsys, "--model", seg_ckpt, "--input", tmp_path / name,
                                "--out", tmp_path / f"maps_{name}", "--window", 64)
        assert code == 0, err
    read = [rasterio.open(tmp_path / f"maps_{n}" / "ordered_classes.tif").read(1) for n in ("a", "b")]
    assert (read[0] == read[1]).all()
    write_geotiff(tmp_path / "c" / "wrong.tif", data, descriptions=["B02", "B03", "B04", "B05"])
    code, _, err = _predict(capsys, "--model", seg_ckpt, "--input", tmp_path / "c", "--out", tmp_path / "m")
    assert code == 2 and "B08" in err and "wrong.tif" in err


def test_corrupt_raster_is_one_line_and_writes_nothing(tmp_path, seg_ckpt, capsys):
    good = write_geotiff(tmp_path / "in" / "good.tif", reflectance(class_field(64, 64), 4))
    bad = tmp_path / "in" / "bad.tif"
    bad.write_bytes(good.read_bytes()[:300])
    code, _, err = _predict(capsys, "--model", seg_ckpt, "--input", tmp_path / "in", "--out", tmp_path / "maps")
    last = err.strip().splitlines()[-1]  # after the progress bar: one line naming the file
    assert code == 2 and last.startswith("landmeta predict: error:") and "bad.tif" in last
    assert not (tmp_path / "maps").exists() or not any((tmp_path / "maps").iterdir())


def test_existing_maps_are_kept_without_overwrite(tmp_path, seg_ckpt, capsys):
    scene = write_geotiff(tmp_path / "s.tif", reflectance(class_field(64, 64), 4))
    args = ["--model", seg_ckpt, "--input", scene, "--out", tmp_path / "maps", "--window", 64]
    assert _predict(capsys, *args)[0] == 0
    code, _, err = _predict(capsys, *args)
    assert code == 2 and "--overwrite" in err
    assert _predict(capsys, *args, "--overwrite")[0] == 0


def test_real_sentinel2_band_folder(tmp_path, capsys):
    """A BigEarthNet patch (one GeoTIFF per band at 10/20/60 m) is stacked on its 10 m grid."""
    ckpt = make_checkpoint(tmp_path / "s2.pt", bands=tuple(S2_12))
    patch = sorted(BIGEARTHNET.iterdir())[0]
    code, _, err = _predict(capsys, "--model", ckpt, "--input", patch, "--out", tmp_path / "maps", "--window", 64)
    assert code == 0, err
    ref = next(patch.glob("*_B02.tif"))
    with rasterio.open(ref) as src, rasterio.open(tmp_path / "maps" / f"{patch.name}_classes.tif") as cls:
        assert cls.crs == src.crs and cls.transform == src.transform and cls.shape == src.shape == (120, 120)
        assert (cls.read(1) != 255).all()


def test_quicklook_overview_is_the_scene_decimated(tmp_path):
    """The quick-look's strip-by-strip decimated read equals the whole scene read and decimated,
    for a file read in several strips and for a band folder with coarser bands."""
    data = np.random.default_rng(0).integers(1, 10000, size=(4, 700, 90), dtype=np.uint16)
    scenes = [(write_geotiff(tmp_path / "tall.tif", data), ["B02", "B03", "B04", "B08"], 300),
              (sorted(BIGEARTHNET.iterdir())[0], S2_12, 50)]
    for path, bands, side in scenes:
        with open_scene(path, bands) as scene:
            f = int(np.ceil(max(scene.height, scene.width) / side))
            whole = scene.read(0, 0, scene.height, scene.width)[0][[3, 2, 1], f // 2::f, f // 2::f]
            overview = scene.overview(side, [3, 2, 1])
            assert overview.shape == (3, scene.height // f, scene.width // f)
            assert np.array_equal(overview, whole[:, :scene.height // f, :scene.width // f])

    thin = write_geotiff(tmp_path / "thin.tif", data[:, :3, :])  # 3 x 90 pixels, a cell is 5 x 5
    with open_scene(thin, ["B02", "B03", "B04", "B08"]) as scene:
        whole = scene.read(0, 0, 3, 90)[0]
        assert np.array_equal(scene.overview(18, [0]), whole[[0]][:, [2], 2::5])  # middle row, each cell's centre


def test_window_is_resampled_to_the_training_scale(tmp_path, capsys):
    """Chips of 64 px resized to 32 at training: a 128-px window reaches the model as 64 px."""
    ckpt = make_checkpoint(tmp_path / "half.pt", store_chip_size=64)
    scene = write_geotiff(tmp_path / "s.tif", reflectance(class_field(100, 150), 4))
    code, _, err = _predict(capsys, "--model", ckpt, "--input", scene, "--out", tmp_path / "maps", "--window", 128)
    assert code == 0, err
    legend = json.loads((tmp_path / "maps" / "s_legend.json").read_text())
    assert legend["window"] == 128 and legend["model_window"] == 64
    assert rasterio.open(tmp_path / "maps" / "s_classes.tif").shape == (100, 150)


def test_classifier_gives_one_class_per_window(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "cls.pt", kind="classification", method="pretrain", chip_size=32)
    scene = write_geotiff(tmp_path / "s.tif", reflectance(class_field(96, 128), 4))
    code, _, err = _predict(capsys, "--model", ckpt, "--input", scene, "--out", tmp_path / "maps")
    assert code == 0, err
    classes = rasterio.open(tmp_path / "maps" / "s_classes.tif").read(1)
    blocks = classes.reshape(3, 32, 4, 32)
    assert (blocks == blocks[:, :1, :, :1]).all()  # constant within each 32-px window
    maml = make_checkpoint(tmp_path / "maml.pt", kind="classification", method="maml", chip_size=32)
    code, _, err = _predict(capsys, "--model", maml, "--input", scene, "--out", tmp_path / "m2")
    assert code == 2 and "landmeta adapt" in err



@pytest.mark.slow
def test_maps_open_in_qgis_in_place_with_colours_and_legend(tmp_path, seg_ckpt, capsys):
    """Real QGIS (headless) opens the maps of a GeoTIFF and of a JPG: CRS, extent, palette and names
    from the legend, polygons, a store's layers, and a rendering showing each pixel's class colour."""
    if not has_qgis():
        pytest.skip("needs QGIS for the system Python (apt-get install python3-qgis qgis-providers); "
                    "see docs/mapping.md")
    from store_factory import make_store
    data = reflectance(class_field(150, 210), 4)
    data[:, :12, :30] = 0
    scene = write_geotiff(tmp_path / "scene.tif", data, nodata=0)
    code, _, err = _predict(capsys, "--model", seg_ckpt, "--input", scene, "--out", tmp_path / "maps",
                            "--window", 64, "--polygons")
    assert code == 0, err
    store = make_store(tmp_path / "store", parents_per_region=2)
    done = check_qgis("--map", tmp_path / "maps" / "scene_classes.tif", "--input", scene, "--store", store)
    assert done.returncode == 0 and done.stdout.rstrip().endswith("all checks passed"), done.stdout + done.stderr
    assert "CRS EPSG:32631 = input's EPSG:32631" in done.stdout and "layer 'tiles' is valid" in done.stdout
    assert "render: 100.00% of pixels show their class's colour" in done.stdout

    ckpt = make_checkpoint(tmp_path / "rgb.pt", bands=("red", "green", "blue"))
    rgb = np.moveaxis(reflectance(class_field(120, 160), 3) // 12, 0, -1).clip(0, 255).astype(np.uint8)
    jpg = write_png(tmp_path / "tile_sat.jpg", rgb)
    code, _, err = _predict(capsys, "--model", ckpt, "--input", jpg, "--out", tmp_path / "maps", "--window", 64)
    assert code == 0, err
    done = check_qgis("--map", tmp_path / "maps" / "tile_sat_classes.png", "--input", jpg)
    assert done.returncode == 0 and "CRS no CRS = input's no CRS" in done.stdout, done.stdout + done.stderr
    (tmp_path / "maps" / "tile_sat_classes.qml").unlink()  # without its style QGIS shows ids, not names
    done = check_qgis("--map", tmp_path / "maps" / "tile_sat_classes.png", "--input", jpg)
    assert done.returncode == 1 and "FAIL class map: palette has exactly the 3 legend classes" in done.stdout
