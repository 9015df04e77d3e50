"""SEN12MS reader and store: pairing, bands by name, quadrant labels, masks, georeference, bad input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import rasterio
from pyproj import Transformer

from landmeta.classes import igbp_lookup
from landmeta.data.preprocess import pool as preprocess_pool
from landmeta.data.preprocess import PreprocessOptions, preprocess
from landmeta.data.sen12ms import ALL_BANDS
from landmeta.errors import DataError
from preprocess_inputs import sen12ms_dataset, sen12ms_patch, write_tif


def run(root, out, workers=None, **kw):
    kw.setdefault("chip_size", 32)
    return preprocess("sen12ms", root, out, PreprocessOptions(**kw), workers=workers)


def read(path):
    with rasterio.open(path) as src:
        return src.read(), src.transform


def test_chips_are_quadrants_with_physical_units_and_majority_labels(tmp_path):
    root = sen12ms_dataset(tmp_path / "raw", seasons=("ROIs1158_spring", "ROIs1868_summer"), scenes=(1, 2))
    out = run(root, tmp_path / "store")
    images = np.load(out / "images.npy")
    masks = np.load(out / "masks.npy")
    chips = pd.read_csv(out / "chips.csv")
    manifest = json.loads((out / "manifest.json").read_text())
    assert images.dtype == np.float16 and images.shape == (8 * 4, 15, 32, 32)
    assert manifest["bands"] == ALL_BANDS and manifest["num_chips"] == 32
    assert set(chips["region"]) == {"ROIs1158_spring_1", "ROIs1158_spring_2", "ROIs1868_summer_1",
                                    "ROIs1868_summer_2"}
    # the second chip is the top-right quadrant of the first patch
    row = chips.iloc[1]
    assert row["parent"] == "ROIs1158_spring_1_p1" and row["tile"] == "ROIs1158_spring_1_p1_r0c1"
    s1, _ = read(root / "ROIs1158_spring/s1_1/ROIs1158_spring_s1_1_p1.tif")
    s2, _ = read(root / "ROIs1158_spring/s2_1/ROIs1158_spring_s2_1_p1.tif")
    lc, _ = read(root / "ROIs1158_spring/lc_1/ROIs1158_spring_lc_1_p1.tif")
    np.testing.assert_allclose(images[1, 0], s1[0, :32, 32:], rtol=1e-3)
    np.testing.assert_allclose(images[1, 2:], s2[:, :32, 32:] / 10000.0, rtol=1e-3)
    expected_mask = igbp_lookup()[lc[0, :32, 32:]]
    np.testing.assert_array_equal(masks[1], expected_mask)
    assert row["label"] == np.bincount(expected_mask.ravel()).argmax()
    assert chips.groupby("parent").size().eq(4).all()


def test_bands_selected_by_name_in_given_order(tmp_path):
    root = sen12ms_dataset(tmp_path / "raw", scenes=(1, 2))
    out = run(root, tmp_path / "store", bands=["B04", "vv", "B8A"])
    images = np.load(out / "images.npy")
    s1, _ = read(root / "ROIs1158_spring/s1_1/ROIs1158_spring_s1_1_p1.tif")
    s2, _ = read(root / "ROIs1158_spring/s2_1/ROIs1158_spring_s2_1_p1.tif")
    assert json.loads((out / "manifest.json").read_text())["bands"] == ["B04", "VV", "B8A"]
    np.testing.assert_allclose(images[0, 0], s2[3, :32, :32] / 1e4, rtol=1e-3)
    np.testing.assert_allclose(images[0, 1], s1[0, :32, :32], rtol=1e-3)
    np.testing.assert_allclose(images[0, 2], s2[8, :32, :32] / 1e4, rtol=1e-3)
    with pytest.raises(DataError, match="unknown SEN12MS bands"):
        run(root, tmp_path / "other", bands=["B13"])


def test_region_footprint_is_the_patches_reprojected(tmp_path):
    import geopandas as gpd
    root = sen12ms_dataset(tmp_path / "raw", scenes=(1, 2))
    out = run(root, tmp_path / "store")
    regions = gpd.read_file(out / "regions.gpkg", layer="regions")
    tiles = gpd.read_file(out / "regions.gpkg", layer="tiles")
    assert regions.crs.to_epsg() == 4326 and tiles.crs.to_epsg() == 4326
    assert len(tiles) == 32 and tiles.geometry.notna().all()
    _, transform = read(root / "ROIs1158_spring/s2_1/ROIs1158_spring_s2_1_p1.tif")
    to_wgs = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    west, north = to_wgs.transform(transform.c, transform.f)  # patch p1 is the scene's north-west corner
    east, south = to_wgs.transform(transform.c + 2 * 640, transform.f - 640)
    shape = regions.set_index("region").loc["ROIs1158_spring_1", "geometry"]
    np.testing.assert_allclose(shape.bounds, (west, south, east, north), atol=2e-3)
    assert regions.set_index("region").loc["ROIs1158_spring_1", "season"] == "spring"


def test_same_store_from_any_number_of_worker_processes_even_around_a_skipped_patch(tmp_path, monkeypatch):
    root = sen12ms_dataset(tmp_path / "raw", scenes=(1, 2))
    sen12ms_patch(root, "ROIs1158_spring", 1, 9, np.random.default_rng(5), s2_count=10)  # bad, between good ones
    stores = {w: run(root, tmp_path / f"w{w}", workers=w) for w in (1, 2, 3)}
    manifests = {w: json.loads((out / "manifest.json").read_text()) for w, out in stores.items()}
    assert manifests[1]["counts"]["inputs_skipped"] == 1 and manifests[1]["num_chips"] == 2 * 2 * 2 * 4
    for w, out in stores.items():
        assert manifests[w]["checksums"] == manifests[1]["checksums"]
        for name in ("images.npy", "masks.npy", "chips.csv"):
            assert hashlib.sha256((out / name).read_bytes()).hexdigest() == manifests[w]["checksums"][name]
        assert (out / "stats.json").read_text() == (stores[1] / "stats.json").read_text()
        assert not list(out.glob(".*"))  # no scratch file left behind
    monkeypatch.setattr(preprocess_pool, "START_METHOD", "spawn")  # as on macOS and Windows: workers pickled
    spawned = run(root, tmp_path / "spawned", workers=2)
    assert json.loads((spawned / "manifest.json").read_text())["checksums"] == manifests[1]["checksums"]
    images, chips = np.load(stores[2] / "images.npy"), pd.read_csv(stores[2] / "chips.csv")
    first = chips.index[chips["tile"] == "ROIs1158_spring_2_p1_r0c0"][0]  # the patch after the gap
    s2 = read(root / "ROIs1158_spring/s2_2/ROIs1158_spring_s2_2_p1.tif")[0]
    np.testing.assert_array_equal(images[first, 2:], (s2[:, :32, :32] * np.float32(1e-4)).astype(np.float16))


def test_nan_and_nodata_pixels_are_zeroed_and_ignored(tmp_path):
    root = sen12ms_dataset(tmp_path / "raw", scenes=(1, 2))
    s1_path = root / "ROIs1158_spring/s1_1/ROIs1158_spring_s1_1_p1.tif"
    s2_path = root / "ROIs1158_spring/s2_1/ROIs1158_spring_s2_1_p1.tif"
    s1, transform = read(s1_path)
    s2, _ = read(s2_path)
    s1[1, 0, 0] = np.nan
    s2[:, 5, 5] = 0  # all-zero S2 pixel = nodata
    write_tif(s1_path, s1, transform=transform)
    write_tif(s2_path, s2, transform=transform)
    out = run(root, tmp_path / "store")
    images, masks = np.load(out / "images.npy"), np.load(out / "masks.npy")
    assert np.isfinite(images).all()
    assert masks[0, 0, 0] == 255 and masks[0, 5, 5] == 255 and (images[0, :, 0, 0] == 0).all()
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["nodata_pixels"] == 2 and counts["nodata_tiles"] == 1


def _valid_pixel_stats(root, regions):
    """Per-band mean and std of the raw inputs of `regions` over pixels with data in every band."""
    values = []
    for path in sorted(root.glob("*/s2_*/*.tif")):
        season, _, scene, _ = path.stem.rsplit("_", 3)
        if f"{season}_{scene}" not in regions:
            continue
        s2, _ = read(path)
        s1, _ = read(str(path).replace("s2", "s1"))
        image = np.concatenate([s1.astype(np.float64), s2 / 10000.0])
        valid = s2.any(axis=0) & np.isfinite(s1).all(axis=0)
        values.append(image[:, valid])
    pixels = np.concatenate(values, axis=1)
    return pixels.mean(axis=1), pixels.std(axis=1), pixels.shape[1]


@pytest.mark.parametrize("downsample", [1, 2])
def test_normalisation_statistics_leave_out_nodata_pixels(tmp_path, downsample):
    root = sen12ms_dataset(tmp_path / "raw", scenes=(1, 2))
    s1_path = root / "ROIs1158_spring/s1_1/ROIs1158_spring_s1_1_p1.tif"
    s2_path = root / "ROIs1158_spring/s2_2/ROIs1158_spring_s2_2_p2.tif"
    s1, transform = read(s1_path)
    s1[0, :20, :] = np.nan  # NaN in one band: the pixel has no data in any
    write_tif(s1_path, s1, transform=transform)
    s2, transform = read(s2_path)
    s2[:, 30:, 10:50] = 0  # all-zero S2 pixels: nodata
    write_tif(s2_path, s2, transform=transform)
    split = tmp_path / "split.csv"
    split.write_text("ROIs1158_spring_1,train\nROIs1158_spring_2,train\nROIs1868_summer_1,val\n"
                     "ROIs1868_summer_2,test\n")
    out = run(root, tmp_path / "store", split_file=split, downsample=downsample, chip_size=32 // downsample)
    stats = json.loads((out / "stats.json").read_text())
    train = ["ROIs1158_spring_1", "ROIs1158_spring_2"]
    assert stats["regions"] == train
    if downsample == 1:  # the statistics are those of the raw inputs' valid pixels
        mean, std, pixels = _valid_pixel_stats(root, train)
        assert stats["pixels"] == pixels == 4 * 64 * 64 - 20 * 64 - 34 * 40
        assert np.allclose(stats["mean"], mean, rtol=1e-5) and np.allclose(stats["std"], std, rtol=1e-4)
    # ... and, at any resolution, those of the stored chips' pixels that are not nodata (mask 255)
    images = np.load(out / "images.npy").astype(np.float64)
    masks = np.load(out / "masks.npy")
    chips = pd.read_csv(out / "chips.csv")
    rows = chips.index[chips["region"].isin(train)].to_numpy()
    nodata = (images[rows] == 0).all(axis=1)  # nodata pixels are stored as 0 in every band
    assert (masks[rows][nodata] == 255).all()
    stored = images[rows].transpose(1, 0, 2, 3)[:, ~nodata]
    assert stats["pixels"] == stored.shape[1] < len(rows) * (32 // downsample) ** 2
    assert np.allclose(stats["mean"], stored.mean(axis=1), rtol=1e-3)
    assert np.allclose(stats["std"], stored.std(axis=1), rtol=1e-3)


@pytest.mark.parametrize("damage, reason", [
    ("wrong_band_count", "S2 file has 10 bands, expected 13"),
    ("grid", "patch is 48x48, the dataset's patches are 64x64 (the most common size)"),
    ("origin", "disagrees with the lc file's"),
    ("no_lc", "patch has no lc file"),
    ("truncated", "truncated or corrupt"),
])
def test_bad_patch_is_skipped_and_counted_or_fatal_when_strict(tmp_path, damage, reason):
    root = sen12ms_dataset(tmp_path / "raw", scenes=(1, 2, 3))
    rng = np.random.default_rng(5)
    if damage == "wrong_band_count":
        bad = sen12ms_patch(root, "ROIs1158_spring", 1, 9, rng, s2_count=10)["s2"]
    elif damage == "grid":
        bad = sen12ms_patch(root, "ROIs1158_spring", 1, 9, rng)["s1"]
        write_tif(bad, np.zeros((2, 48, 48), np.float32))
    elif damage == "origin":
        bad = sen12ms_patch(root, "ROIs1158_spring", 1, 9, rng)["s2"]
        write_tif(bad, read(bad)[0], transform=rasterio.transform.from_origin(0, 0, 10, 10))
    elif damage == "no_lc":
        bad = sen12ms_patch(root, "ROIs1158_spring", 1, 9, rng, kinds=("s1", "s2"))["s2"]
    else:
        bad = sen12ms_patch(root, "ROIs1158_spring", 1, 9, rng)["s2"]
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    out = run(root, tmp_path / "store")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["inputs_skipped"] == 1
    skipped = manifest["skipped"][0]
    assert str(bad) in (skipped["file"], skipped["reason"].split(": ")[0]) and reason in skipped["reason"]
    assert manifest["num_chips"] == 4 * 2 * 3 * 2 and len(np.load(out / "images.npy")) == manifest["num_chips"]
    with pytest.raises(DataError, match=str(bad.name)):
        run(root, tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict").exists() and not (tmp_path / ".strict.partial").exists()


def test_empty_or_foreign_root_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no SEN12MS season folders"):
        run(tmp_path / "empty", tmp_path / "store")
    assert not (tmp_path / "store").exists()
