"""Chip store reader: validation on open, tables, arrays, train-only stats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from store_factory import BANDS, CLASS_NAMES, make_store

from landmeta.data.store import ChipStore
from landmeta.errors import StoreError


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("store") / "tiny", seed=0)


@pytest.fixture
def copy(store_path: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(store_path, out)
    return out


def test_open_exposes_manifest_tables_and_arrays(store_path: Path):
    store = ChipStore.open(store_path)
    assert store.bands == BANDS and store.class_names == CLASS_NAMES and store.num_classes == len(CLASS_NAMES)
    assert store.chip_size == 32 and store.ignore_index == 255
    assert store.kinds == ["classification", "segmentation"]
    n = len(store)
    assert n == 10 * 20 * 4 and list(store.chips["chip"]) == list(range(n))
    idx = np.array([5, 0, n - 1])
    images = store.images(idx)
    assert images.shape == (3, len(BANDS), 32, 32) and images.dtype == np.float32
    raw = np.load(store_path / "images.npy")
    np.testing.assert_array_equal(images, raw[idx].astype(np.float32))
    assert store.masks(idx).shape == (3, 32, 32) and store.masks(idx).dtype == np.uint8
    assert store.labels(idx).dtype == np.int64
    np.testing.assert_array_equal(store.labels(idx), store.chips["label"].to_numpy()[idx])


def test_regions_have_splits_and_centroids(store_path: Path):
    store = ChipStore.open(store_path)
    regions = store.regions.set_index("region")
    assert {"split", "season", "cluster", "n_chips", "class_counts", "lon", "lat"} <= set(regions.columns)
    assert len(store.regions_in("train")) == 6 and len(store.regions_in("val")) == 2
    assert set(store.regions_in("test")) == set(regions.index[regions["split"] == "test"])
    first = regions.loc["ROIs1158_spring_1"]
    assert first["lon"] == pytest.approx(-119.95) and first["lat"] == pytest.approx(-29.95)
    last = regions.loc[store.regions_in("test")[-1]]  # the factory leaves the last region without geometry
    assert np.isnan(last["lon"]) and np.isnan(last["lat"])
    with pytest.raises(StoreError, match="unknown split 'holdout'"):
        store.regions_in("holdout")


def test_mean_and_std_are_train_only(store_path: Path):
    store = ChipStore.open(store_path)
    raw = np.load(store_path / "images.npy").astype(np.float64)
    train = store.chips["region"].isin(store.regions_in("train")).to_numpy()
    np.testing.assert_allclose(store.mean, raw[train].mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(store.std, raw[train].std(axis=(0, 2, 3)), rtol=1e-5)
    assert not np.allclose(store.mean, raw.mean(axis=(0, 2, 3)), rtol=1e-3)  # val/test are shifted


@pytest.mark.parametrize("name", ["manifest.json", "images.npy", "masks.npy", "chips.csv", "regions.gpkg",
                                  "stats.json"])
def test_missing_file_is_named(copy: Path, name: str):
    (copy / name).unlink()
    with pytest.raises(StoreError, match=rf"{name}: missing"):
        ChipStore.open(copy)


def test_not_a_folder(tmp_path: Path):
    with pytest.raises(StoreError, match="no chip store here"):
        ChipStore.open(tmp_path / "nothing")


def test_wrong_image_shape(copy: Path):
    images = np.load(copy / "images.npy")
    np.save(copy / "images.npy", images[:, :3])
    with pytest.raises(StoreError, match=r"images.npy: expected float array of shape \(800, 6, 32, 32\)"):
        ChipStore.open(copy)


def test_wrong_mask_dtype(copy: Path):
    np.save(copy / "masks.npy", np.load(copy / "masks.npy").astype(np.int32))
    with pytest.raises(StoreError, match="masks.npy: expected uint8"):
        ChipStore.open(copy)


def test_corrupt_manifest(copy: Path):
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="manifest.json: not readable JSON"):
        ChipStore.open(copy)


def test_truncated_array(copy: Path):
    data = (copy / "images.npy").read_bytes()
    (copy / "images.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="images.npy: not a readable .npy array"):
        ChipStore.open(copy)


def test_chips_csv_out_of_step(copy: Path):
    lines = (copy / "chips.csv").read_text().splitlines()
    (copy / "chips.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(StoreError, match="chips.csv: expected 800 rows"):
        ChipStore.open(copy)


def test_stats_band_count(copy: Path):
    stats = json.loads((copy / "stats.json").read_text())
    stats["mean"] = stats["mean"][:2]
    stats.pop("bands")
    (copy / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(StoreError, match="stats.json: expected 6 means and stds"):
        ChipStore.open(copy)


def test_manifest_missing_key(copy: Path):
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["bands"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"manifest.json: missing keys \['bands'\]"):
        ChipStore.open(copy)


def test_index_out_of_range(store_path: Path):
    store = ChipStore.open(store_path)
    with pytest.raises(StoreError, match="out of range"):
        store.images(np.array([len(store)]))
