"""DeepGlobe reader and store: sub-tile grid, downsampling, colours, pseudo-regions and splits, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from landmeta.classes import decode_deepglobe_mask
from landmeta.data.preprocess import PreprocessOptions, preprocess
from landmeta.errors import ConfigError, DataError
from preprocess_inputs import deepglobe_dataset, deepglobe_image


def run(root, out, **kw):
    return preprocess("deepglobe", root, out, PreprocessOptions(**kw))


def test_each_image_is_a_region_cut_into_a_grid(tmp_path):
    root = deepglobe_dataset(tmp_path / "raw", n=8, size=64)
    out = run(root, tmp_path / "store", clusters=3)
    manifest = json.loads((out / "manifest.json").read_text())
    chips = pd.read_csv(out / "chips.csv", dtype=str)
    masks = np.load(out / "masks.npy")
    images = np.load(out / "images.npy")
    assert manifest["chip_size"] == 16 and manifest["num_chips"] == 8 * 16 and manifest["kinds"] == ["segmentation"]
    assert chips["region"].nunique() == 8 and (chips["parent"] == chips["tile"]).all()
    ids, _ = decode_deepglobe_mask(np.asarray(Image.open(root / "100_mask.png").convert("RGB")))
    np.testing.assert_array_equal(masks[5], ids[16:32, 16:32])  # r1c1 of the first image
    rgb = np.asarray(Image.open(root / "100_sat.jpg").convert("RGB"))
    np.testing.assert_allclose(images[5], np.moveaxis(rgb[16:32, 16:32], -1, 0) / 255.0, atol=2e-3)
    assert (out / "clusters.png").stat().st_size > 0


def test_downsample_factor_shrinks_sub_tiles(tmp_path):
    root = deepglobe_dataset(tmp_path / "raw", n=6, size=64)
    out = run(root, tmp_path / "store", downsample=2, clusters=3)
    images = np.load(out / "images.npy")
    assert images.shape == (6 * 16, 3, 8, 8)
    rgb = np.asarray(Image.open(root / "100_sat.jpg").convert("RGB")).astype(np.float32) / 255.0
    block = rgb[:16, :16].reshape(8, 2, 8, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(images[0], np.moveaxis(block, -1, 0), atol=2e-3)
    with pytest.raises(DataError, match="--grid"):
        run(root, tmp_path / "other", chip_size=8)


def test_clustered_split_keeps_clusters_disjoint_and_random_split_is_seeded(tmp_path):
    import geopandas as gpd
    root = deepglobe_dataset(tmp_path / "raw", n=12, size=32)
    out = run(root, tmp_path / "clustered", split="clustered", clusters=4, grid=2)
    regions = gpd.read_file(out / "regions.gpkg", layer="regions")
    assert set(regions["split"]) == {"train", "val", "test"}
    assert regions.groupby("cluster")["split"].nunique().eq(1).all()
    assert regions.geometry.isna().all()  # no georeference in DeepGlobe
    a = gpd.read_file(run(root, tmp_path / "a", clusters=4, grid=2) / "regions.gpkg", layer="regions")
    b = gpd.read_file(run(root, tmp_path / "b", clusters=4, grid=2) / "regions.gpkg", layer="regions")
    assert list(a["split"]) == list(b["split"]) and list(a["cluster"]) == list(b["cluster"])
    assert (a["split"].value_counts().to_dict()) == {"train": 8, "val": 2, "test": 2}
    with pytest.raises(ConfigError, match="clustered"):
        preprocess("sen12ms", root, tmp_path / "c", PreprocessOptions(split="clustered"))


def test_mask_with_unknown_colours_and_image_without_mask_are_skipped(tmp_path):
    root = deepglobe_dataset(tmp_path / "raw", n=6, size=32)
    rng = np.random.default_rng(1)
    _, bad_mask = deepglobe_image(root, "900", rng, size=32)
    arr = np.asarray(Image.open(bad_mask)).copy()
    arr[0, 0] = (255, 0, 0)  # red is none of the seven colours
    Image.fromarray(arr).save(bad_mask)
    lonely, _ = deepglobe_image(root, "901", rng, size=32, mask=False)
    out = run(root, tmp_path / "store", clusters=3, grid=2)
    skipped = {s["file"]: s["reason"] for s in json.loads((out / "manifest.json").read_text())["skipped"]}
    assert "outside the seven" in skipped[str(root / "900_sat.jpg")]
    assert "no mask 901_mask.png" in skipped[str(lonely)]
    assert json.loads((out / "manifest.json").read_text())["num_chips"] == 6 * 4
    with pytest.raises(DataError, match="901_sat.jpg: no mask"):  # found first, while pairing files
        run(root, tmp_path / "strict", strict=True, clusters=3, grid=2)
    lonely.unlink()
    with pytest.raises(DataError, match="900_mask.png: 1 pixels have colours outside"):
        run(root, tmp_path / "strict", strict=True, clusters=3, grid=2)


@pytest.mark.parametrize("keep, reason", [(0.1, "cannot open as an image"), (0.6, "cannot decode image")])
def test_truncated_jpeg_is_named(tmp_path, keep, reason):
    root = deepglobe_dataset(tmp_path / "raw", n=5, size=64)
    sat = root / "102_sat.jpg"
    data = sat.read_bytes()
    sat.write_bytes(data[: int(len(data) * keep)])
    out = run(root, tmp_path / "store", clusters=3)
    skipped = json.loads((out / "manifest.json").read_text())["skipped"]
    assert [s["file"] for s in skipped] == [str(sat)] and skipped[0]["reason"].startswith(reason)
    with pytest.raises(DataError, match="102_sat.jpg"):
        run(root, tmp_path / "strict", clusters=3, strict=True)


def test_empty_folder(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(DataError, match="no DeepGlobe images"):
        run(tmp_path / "raw", tmp_path / "store")
