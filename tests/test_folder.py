"""Own-folder source: real Sentinel-2 per-band GeoTIFFs, PNG tiles, segmentation masks, class maps, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from PIL import Image
from pyproj import CRS, Transformer

from landmeta.data.preprocess import pool as preprocess_pool
from landmeta.data.preprocess import PreprocessOptions, preprocess
from landmeta.data.store import ChipStore
from landmeta.data.tasks import load_or_create_tasks
from landmeta.errors import DataError, LandmetaWarning
from preprocess_inputs import write_tif

BIGEARTHNET = Path(__file__).resolve().parents[1].parent / "shared/data/bigearthnet-s2/S2_patches"
COUNTRY = {"36_85": "ireland", "4_55": "ireland", "41_4": "ireland", "47_56": "ireland", "56_35": "portugal",
           "19_86": "finland", "43_47": "finland", "41_29": "finland", "32_39": "serbia", "43_14": "serbia",
           "66_56": "lithuania"}
BOXES = {"ireland": (-10.5, 51.4, -6.0, 55.4), "portugal": (-9.6, 36.9, -6.2, 42.2), "finland": (20, 59.8, 31.6, 70.1),
         "serbia": (18.8, 42.2, 23.0, 46.2), "lithuania": (20.9, 53.9, 26.9, 56.5)}

needs_bigearthnet = pytest.mark.skipif(not BIGEARTHNET.is_dir(), reason="real Sentinel-2 samples not present")


def run(root, out, workers=None, **kw):
    return preprocess("folder", root, out, PreprocessOptions(**kw), workers=workers)


def bigearthnet_folder(root: Path) -> Path:
    """<root>/<country>/<forest|agriculture>/<patch>/ (one GeoTIFF per band), linked to the real files."""
    for patch in sorted(BIGEARTHNET.iterdir()):
        key = "_".join(patch.name.split("_")[-2:])
        labels = json.loads(next(patch.glob("*_labels_metadata.json")).read_text())["labels"]
        cls = "forest" if "forest" in labels[0].lower() else "agriculture"
        target = root / COUNTRY[key] / cls / patch.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(patch, target_is_directory=True)
    return root


@needs_bigearthnet
def test_real_sentinel2_band_files_are_stacked_scaled_and_located(tmp_path):
    import geopandas as gpd
    out = run(bigearthnet_folder(tmp_path / "raw"), tmp_path / "store")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["bands"] == ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    assert manifest["chip_size"] == 120 and manifest["num_chips"] == 11 and manifest["skipped"] == []
    assert manifest["class_names"] == ["agriculture", "forest"] and manifest["kinds"] == ["classification"]
    chips = pd.read_csv(out / "chips.csv")
    images = np.load(out / "images.npy").astype(np.float32)
    patch = BIGEARTHNET / "S2A_MSIL2A_20170617T113321_36_85"
    row = chips.index[chips["tile"].str.endswith(patch.name)][0]
    with rasterio.open(patch / f"{patch.name}_B02.tif") as src:
        b02 = src.read(1)
    with rasterio.open(patch / f"{patch.name}_B01.tif") as src:
        b01 = src.read(1)
    np.testing.assert_allclose(images[row, 1], b02 / 10000.0, rtol=2e-3)  # 10 m band as is, as reflectance
    assert images[row, 0].shape == (120, 120)  # 60 m band resampled onto the 10 m grid
    assert abs(images[row, 0].mean() - b01.mean() / 10000.0) < 0.02 * b01.mean() / 10000.0
    assert chips.loc[row, "label"] == manifest["class_names"].index("agriculture")

    tiles = gpd.read_file(out / "regions.gpkg", layer="tiles")
    regions = gpd.read_file(out / "regions.gpkg", layer="regions").set_index("region")
    assert sorted(regions.index) == sorted(BOXES)
    for _, tile in tiles.iterrows():  # each footprint centre matches the patch's own metadata
        meta = json.loads(next((BIGEARTHNET / Path(tile["tile"]).name).glob("*.json")).read_text())
        c = meta["coordinates"]
        to_wgs = Transformer.from_crs(CRS.from_wkt(meta["projection"]), "EPSG:4326", always_xy=True)
        lon, lat = to_wgs.transform((c["ulx"] + c["lrx"]) / 2, (c["uly"] + c["lry"]) / 2)
        centre = tile.geometry.centroid
        assert abs(centre.x - lon) < 1e-3 and abs(centre.y - lat) < 1e-3
    for country, (w, s, e, n) in BOXES.items():
        x0, y0, x1, y1 = regions.loc[country, "geometry"].bounds
        assert w < x0 < x1 < e and s < y0 < y1 < n, country


def write_png(path: Path, rng: np.random.Generator, size: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def test_png_classification_folder_has_consistent_ids_and_no_geometry(tmp_path):
    import geopandas as gpd
    rng = np.random.default_rng(0)
    for region in ("a", "b", "c"):
        for cls in (["water", "crop"] if region != "b" else ["urban", "water"]):
            for i in range(3):
                write_png(tmp_path / "raw" / region / cls / f"t{i}.png", rng)
    out = run(tmp_path / "raw", tmp_path / "store", chip_size=16)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_names"] == ["crop", "urban", "water"] and manifest["bands"] == ["red", "green", "blue"]
    chips = pd.read_csv(out / "chips.csv")
    assert len(chips) == 3 * 2 * 3 * 4 and (chips["parent"].str.len() > 0).all()
    assert set(chips.loc[chips["tile"].str.startswith("b/water/"), "label"]) == {2}
    assert (np.load(out / "masks.npy") == 255).all()
    assert gpd.read_file(out / "regions.gpkg", layer="regions").geometry.isna().all()


def seg_folder(root: Path, rng: np.random.Generator, regions=("r1", "r2", "r3"), n=2) -> Path:
    for region in regions:
        for i in range(n):
            arr = rng.integers(0, 3000, (4, 32, 32)).astype(np.uint16)
            write_tif(root / region / "images" / f"t{i}.tif", arr)
            ids = rng.integers(0, 3, (32, 32)).astype(np.uint8)
            (root / region / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(ids).save(root / region / "masks" / f"t{i}.png")
    return root


def test_segmentation_folder_with_class_map_and_missing_mask(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    root = seg_folder(tmp_path / "raw", rng)
    write_tif(root / "r1" / "images" / "lonely.tif", np.ones((4, 32, 32), np.uint16))
    (tmp_path / "classes.csv").write_text("bare,0\ngrass,1\ntrees,2\n")
    out = run(root, tmp_path / "store", class_map=tmp_path / "classes.csv", chip_size=16)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_names"] == ["bare", "grass", "trees"]
    assert manifest["kinds"] == ["classification", "segmentation"]
    assert [s["file"] for s in manifest["skipped"]] == [str(root / "r1/images/lonely.tif")]
    masks = np.load(out / "masks.npy")
    ids = np.asarray(Image.open(root / "r1/masks/t0.png"))
    np.testing.assert_array_equal(masks[1], ids[:16, 16:])
    assert manifest["bands"] == ["b1", "b2", "b3", "b4"] and manifest["num_chips"] == 3 * 2 * 4
    monkeypatch.setattr(preprocess_pool, "START_METHOD", "spawn")  # as on macOS and Windows: the loader is pickled
    spawned = run(root, tmp_path / "spawned", workers=2, class_map=tmp_path / "classes.csv", chip_size=16)
    assert json.loads((spawned / "manifest.json").read_text())["checksums"] == manifest["checksums"]
    monkeypatch.undo()
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(root / "r3/masks/t1.png")  # 7: not in the map
    out = run(root, tmp_path / "store2", class_map=tmp_path / "classes.csv", chip_size=16)
    skipped = json.loads((out / "manifest.json").read_text())["skipped"]
    assert skipped[-1] == {"file": str(root / "r3/images/t1.tif"),
                           "reason": f"{root / 'r3/masks/t1.png'}: 1024 mask values are not class ids (e.g. 7)"}


def test_coloured_class_map_decodes_rgb_masks(tmp_path):
    rng = np.random.default_rng(2)
    colours = np.array([(0, 0, 255), (0, 255, 0)], dtype=np.uint8)
    for region in ("x", "y", "z"):
        write_png(tmp_path / "raw" / region / "images" / "t.png", rng)
        ids = rng.integers(0, 2, (32, 32))
        (tmp_path / "raw" / region / "masks").mkdir(parents=True)
        Image.fromarray(colours[ids]).save(tmp_path / "raw" / region / "masks" / "t.png")
    (tmp_path / "map.csv").write_text("water,0,0,0,255\nforest,1,0,255,0\n")
    out = run(tmp_path / "raw", tmp_path / "store", class_map=tmp_path / "map.csv")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_colors"] == [[0, 0, 255], [0, 255, 0]] and manifest["num_chips"] == 3
    assert set(np.unique(np.load(out / "masks.npy"))) == {0, 1}


def test_corrupt_geotiff_and_empty_folder(tmp_path):
    rng = np.random.default_rng(3)
    root = seg_folder(tmp_path / "raw", rng)
    bad = root / "r2" / "images" / "t1.tif"
    bad.write_bytes(b"II*\x00garbage")
    out = run(root, tmp_path / "store")
    skipped = json.loads((out / "manifest.json").read_text())["skipped"]
    assert skipped[0]["file"] == str(bad) and "cannot open as a raster" in skipped[0]["reason"]
    with pytest.raises(DataError, match="t1.tif"):
        run(root, tmp_path / "strict", strict=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no region folders"):
        run(tmp_path / "empty", tmp_path / "s3")
    (tmp_path / "empty" / "region").mkdir()
    with pytest.raises(DataError, match="no image tiles"):
        run(tmp_path / "empty", tmp_path / "s3")


def test_values_beyond_float16_are_clipped_and_counted(tmp_path):
    rng = np.random.default_rng(4)
    root = seg_folder(tmp_path / "raw", rng)
    huge = np.full((4, 32, 32), 1e6, np.float32)
    write_tif(root / "r1" / "images" / "t0.tif", huge)
    out = run(root, tmp_path / "store")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped"] == [] and manifest["counts"]["clipped_values"] == 4 * 32 * 32
    assert manifest["warnings"][-1] == (f"4096 values beyond ±65504 (not nodata) in 1 file clipped to fit the "
                                        f"store's float16: {root / 'r1/images/t0.tif'} (4096)")


def test_parent_pattern_keeps_quadrants_of_one_patch_together(tmp_path, capsys):
    """SEN12MS-style quadrant names: p7tl and p7br (even in two class folders) share one parent, so
    task sampling keeps them on one side; a tile the pattern does not match is its own parent."""
    from landmeta.cli import main
    rng = np.random.default_rng(0)
    for name, cls in (("p7tl", "water"), ("p7br", "crop"), ("p8tr", "water"), ("odd", "crop")):
        for region in ("a", "b", "c"):
            write_png(tmp_path / "raw" / region / cls / f"{name}.png", rng)
    out = run(tmp_path / "raw", tmp_path / "store", chip_size=32, parent_pattern=r"(p\d+)(tl|tr|bl|br)")
    chips = pd.read_csv(out / "chips.csv").set_index("tile")["parent"]
    assert chips["a/water/p7tl"] == chips["a/crop/p7br"] == "a/p7"
    assert chips["a/water/p8tr"] == "a/p8" and chips["a/crop/odd"] == "a/crop/odd"
    for bad, why in (("p\\d+", "needs a group"), ("(p", "not a regular expression")):
        code = main(["preprocess", "folder", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "s2"),
                     "--parent-pattern", bad, "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and why in err[0] and not (tmp_path / "s2").exists()


def test_class_from_one_patch_is_named_and_scenes_short_of_classes_are_left_out_of_tasks(tmp_path):
    """A class folder whose tiles come from one patch can give no task (support and query come from
    different patches): one warning naming it, its chips kept for pretraining; fatal with --strict.
    A scene with fewer classes than the task's ways is named in one warning when tasks are drawn."""
    rng = np.random.default_rng(5)
    layout = {"a": {"water": 4, "crop": 4, "urban": 4}, "b": {"water": 4, "crop": 4, "urban": 1},
              "c": {"water": 4, "crop": 4, "urban": 4}, "d": {"water": 4, "crop": 4, "urban": 4}}
    for region, classes in layout.items():
        for cls, n in classes.items():
            for i in range(n):
                write_png(tmp_path / "raw" / region / cls / f"p{i}{cls}tl.png", rng)
    for quadrant in ("tl", "tr"):  # two quadrants of one patch: one parent
        write_png(tmp_path / "raw" / "c" / "forest" / f"p9{quadrant}.png", rng)
    (tmp_path / "split.csv").write_text("a,train\nb,train\nc,train\nd,val\n")
    options = {"split_file": tmp_path / "split.csv", "parent_pattern": r"(p\d+)\w*(tl|tr)"}
    with pytest.warns(LandmetaWarning, match=r"^2 class folder\(s\) hold tiles of one patch only .*: "
                                             rf"{tmp_path}/raw/b/urban, {tmp_path}/raw/c/forest$"):
        out = run(tmp_path / "raw", tmp_path / "store", **options)
    assert json.loads((out / "manifest.json").read_text())["num_chips"] == 4 * 3 * 4 - 3 + 2  # b has one urban tile, c two forest quadrants
    with pytest.raises(DataError, match=r"raw/b/urban: all its tiles come from one patch"):
        run(tmp_path / "raw", tmp_path / "strict", strict=True, **options)
    assert not (tmp_path / "strict").exists()
    store = ChipStore.open(out)
    with pytest.warns(LandmetaWarning, match=r"split 'train': 1 of 3 regions cannot give a 3-way 1-shot task "
                                             r"with 1 queries and are left out: b \(2 classes of > 2 chips\)$"):
        tasks = load_or_create_tasks(store, "train", "classification", 3, 1, 1, 5, 0)
    assert {t.region for t in tasks} <= {"a", "c"}
