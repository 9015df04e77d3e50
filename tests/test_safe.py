"""Sentinel-2 `.SAFE` products as `predict --input` and `adapt --scene`: band files by name, the finest
resolution of each band, SCL cloud masking, the processing baseline's DN offset, bad products."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from inference_factory import make_checkpoint
from landmeta.cli import main
from landmeta.inference.labels import LabelSource, read_label_support
from landmeta.inference.safe import SCL_MASKED, scl_invalid
from landmeta.inference.scene import open_scene, scene_inputs
from landmeta.meta.checkpoint import Checkpoint
from safe_factory import BIGEARTHNET, S2_12, band_path, cloud_scl, write_product

pytestmark = pytest.mark.skipif(not BIGEARTHNET.is_dir(), reason="the BigEarthNet sample is not in /work/shared/data")

PATCH = BIGEARTHNET / "S2A_MSIL2A_20170617T113321_36_85"
OTHER = BIGEARTHNET / "S2B_MSIL2A_20170914T093029_32_39"  # another source product (tile, date)
EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "examples" / "bigearthnet-labels.gpkg"
EXAMPLE_PATCH = BIGEARTHNET / "S2B_MSIL2A_20180421T114349_41_4"


def _run(capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _mask10(scl: np.ndarray) -> np.ndarray:
    """The SCL's masked pixels on the 10 m grid (each 20 m pixel is 2 x 2 of them)."""
    return np.kron(scl_invalid(scl), np.ones((2, 2), dtype=bool))


def _masked_band_folder(folder: Path, patch: Path, mask: np.ndarray) -> Path:
    """The patch as a band folder whose B02 is nodata (0, declared) where `mask`: the same valid pixels
    as the product, so the model sees exactly the same input."""
    folder.mkdir(parents=True)
    for file in patch.glob("*.tif"):
        shutil.copy(file, folder / file.name)
    b02 = band_path(folder, "B02")
    with rasterio.open(b02) as src:
        profile, data = src.profile, src.read()
    data[:, mask] = 0
    with rasterio.open(b02, "w", **{**profile, "nodata": 0}) as dst:
        dst.write(data)
    return folder


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "s2.pt", bands=tuple(S2_12))


def test_product_reads_like_its_band_folder_with_scl_pixels_invalid(tmp_path):
    """Finest resolution of each band (not the product's coarser copies), the same pixels as the
    GeoTIFF band folder, and exactly the SCL's masked classes invalid, for windows at odd offsets."""
    scl = cloud_scl((60, 60))
    product = write_product(tmp_path, PATCH, scl=scl)
    mask = _mask10(scl)
    with open_scene(product, S2_12) as safe, open_scene(PATCH, S2_12) as folder:
        assert safe.name == product.name.removesuffix(".SAFE") and safe.crs == folder.crs
        assert (safe.height, safe.width, safe.transform) == (folder.height, folder.width, folder.transform)
        for row, col, h, w in [(0, 0, 120, 120), (7, 13, 45, 61), (-5, 99, 40, 40), (33, 1, 64, 64)]:
            image, valid = safe.read(row, col, h, w)
            expected, inside = folder.read(row, col, h, w)
            r0, c0 = max(row, 0), max(col, 0)
            want = inside.copy()
            want[r0 - row:r0 - row + 120 - r0, c0 - col:c0 - col + 120 - c0] &= ~mask[r0:row + h, c0:col + w]
            assert np.array_equal(valid, want)
            assert np.array_equal(image[:, valid], expected[:, valid])
            assert np.isnan(image[:, inside & ~valid]).all()
        count = safe.masked_count()
        assert count.masked == mask.sum() and count.pixels == 120 * 120
    values = set(np.unique(scl[scl_invalid(scl)]).tolist())
    assert values == set(SCL_MASKED) and not scl_invalid(np.array([2, 4, 5, 6, 7, 11])).any()


def test_predict_on_a_product_equals_the_band_folder_with_clouds_as_nodata(tmp_path, ckpt, capsys):
    scl = cloud_scl((60, 60))
    product = write_product(tmp_path / "in", PATCH, scl=scl)
    mask = _mask10(scl)
    folder = _masked_band_folder(tmp_path / "folder" / product.name.removesuffix(".SAFE"), PATCH, mask)
    code, out, err = _run(capsys, "predict", "--model", ckpt, "--input", product, "--out", tmp_path / "maps",
                          "--window", 64, "--overlap", 13)
    assert code == 0, err
    assert f"{mask.sum()} pixels ({100 * mask.mean():.1f} %) masked" in out and "SCL" in out
    assert "warning" not in err
    code, _, err = _run(capsys, "predict", "--model", ckpt, "--input", folder, "--out", tmp_path / "ref",
                        "--window", 64, "--overlap", 13)
    assert code == 0, err
    name = product.name.removesuffix(".SAFE")
    for kind in ("classes", "confidence"):
        with rasterio.open(tmp_path / "maps" / f"{name}_{kind}.tif") as got, \
                rasterio.open(tmp_path / "ref" / f"{name}_{kind}.tif") as ref:
            assert got.crs == ref.crs and got.transform == ref.transform
            assert np.array_equal(got.read(1), ref.read(1))
            assert np.array_equal(got.read(1) == 255, mask)
    legend = json.loads((tmp_path / "maps" / f"{name}_legend.json").read_text())
    assert legend["scl"]["masked_pixels"] == mask.sum() and legend["scl"]["pixels"] == 14400
    assert set(legend["scl"]["classes"]) == {str(v) for v in SCL_MASKED}
    assert legend["input"] == str(product)


def test_processing_baseline_offset_is_removed(tmp_path):
    """Products of baseline 04.00 on store DN + 1000; they read as the older products do."""
    old = write_product(tmp_path, PATCH, scl=cloud_scl((60, 60)), baseline="N0206")
    new = write_product(tmp_path, PATCH, scl=cloud_scl((60, 60)), baseline="N0510", dn_offset=1000)
    with open_scene(old, S2_12) as a, open_scene(new, S2_12) as b:
        image_a, valid_a = a.read(0, 0, 120, 120)
        image_b, valid_b = b.read(0, 0, 120, 120)
        assert np.array_equal(valid_a, valid_b)
        assert np.abs(image_a[:, valid_a] - image_b[:, valid_b]).max() < 1e-6  # float32 rounding only
        assert np.abs(a.overview(40, [3, 2, 1]) - b.overview(40, [3, 2, 1])).max() < 1e-6


def test_a_folder_of_products_is_several_scenes_and_l1c_is_read_unmasked(tmp_path, ckpt, capsys):
    """L2A and L1C side by side: each scene is named after its product; the L1C one (no SCL) equals the
    plain band folder's map and gives one warning."""
    l2a = write_product(tmp_path / "in", OTHER, scl=cloud_scl((60, 60)))
    l1c = write_product(tmp_path / "in", PATCH, level="L1C")
    assert scene_inputs(tmp_path / "in") == [l1c, l2a]  # sorted by name: S2A before S2B
    code, out, err = _run(capsys, "predict", "--model", ckpt, "--input", tmp_path / "in", "--out", tmp_path / "maps",
                          "--window", 64)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and l1c.name in warnings[0] and "not masked" in warnings[0]
    assert out.count("masked as no data") == 1
    code, _, err = _run(capsys, "predict", "--model", ckpt, "--input", PATCH, "--out", tmp_path / "ref", "--window", 64)
    assert code == 0, err
    with rasterio.open(tmp_path / "maps" / f"{l1c.stem}_classes.tif") as got, \
            rasterio.open(tmp_path / "ref" / f"{PATCH.name}_classes.tif") as ref:
        assert np.array_equal(got.read(1), ref.read(1)) and (got.read(1) != 255).all()
    assert (tmp_path / "maps" / f"{l2a.stem}_classes.tif").is_file()
    assert "scl" not in json.loads((tmp_path / "maps" / f"{l1c.stem}_legend.json").read_text())


def test_adapt_on_a_product_never_trains_on_clouds(tmp_path, capsys):
    """The example labels over the real patch as a product with a cloud over some of them: the
    support is the band folder's with the SCL-masked pixels unlabelled; `adapt --scene` runs."""
    from landmeta.classes import SIMPLIFIED_CLASSES, SIMPLIFIED_COLORS

    scl = np.full((60, 60), 4, dtype=np.uint8)
    scl[5:35, 5:35] = 9  # a generated cloud over the patch's upper left
    scl[35:45, 5:35] = 3  # and its shadow
    product = write_product(tmp_path, EXAMPLE_PATCH, scl=scl)
    mask = _mask10(scl)
    base = make_checkpoint(tmp_path / "base.pt", bands=tuple(S2_12), class_names=SIMPLIFIED_CLASSES,
                           colors=SIMPLIFIED_COLORS, chip_size=32, store_chip_size=32)
    ckpt = Checkpoint.load(base)
    clear = read_label_support(LabelSource(EXAMPLE_PATCH, EXAMPLE), ckpt)
    cloudy = read_label_support(LabelSource(product, EXAMPLE), ckpt)

    def mosaic(data) -> np.ndarray:
        full = np.full((120, 120), 255, dtype=np.int64)
        for (r, c, h, w), y in zip(data.windows, data.support.y):
            full[r:r + h, c:c + w] = y.numpy()[:120 - r, :120 - c]
        return full

    expected = np.where(mask, 255, mosaic(clear))
    assert np.array_equal(mosaic(cloudy), expected)
    assert (mosaic(clear)[mask] != 255).sum() > 100  # the cloud did cover labelled pixels
    code, _, err = _run(capsys, "adapt", "--checkpoint", base, "--scene", product, "--labels", EXAMPLE,
                          "--out", tmp_path / "adapted.pt", "--steps", 2)
    assert code == 0, err
    assert Checkpoint.load(tmp_path / "adapted.pt").adaptation["labels"]["scene"] == str(product.resolve())


def _bad_product(tmp_path: Path, case: str) -> tuple[Path, str]:
    """A damaged product and the file the error must name."""
    product = write_product(tmp_path / "in", PATCH, scl=cloud_scl((60, 60)))
    images = next(product.glob("GRANULE/*/IMG_DATA"))
    if case == "no band images":
        for file in images.rglob("*.jp2"):
            file.unlink()
    elif case == "no granule":
        shutil.rmtree(product / "GRANULE")
    elif case == "missing band":
        for file in images.rglob("*_B05_*.jp2"):
            file.unlink()
    elif case == "renamed":
        product = product.rename(product.with_name("my_scene.SAFE"))
    elif case == "zipped":
        archive = Path(shutil.make_archive(str(product), "zip", product.parent, product.name))
        shutil.rmtree(product)
        return archive, archive.name
    else:  # a truncated JP2: header kept (opens) or not (does not open)
        file = next(images.glob("R10m/*_B03_10m.jp2"))
        data = file.read_bytes()
        file.write_bytes(data[:len(data) // 2] if case == "truncated JP2" else data[:300])
        return product, file.name
    return product, product.name


@pytest.mark.parametrize("case, message", [
    ("no band images", "no band images in GRANULE/"),
    ("no granule", "no GRANULE folder"),
    ("missing band", "no image of B05 in this L2A product"),
    ("renamed", "processing baseline"),
    ("zipped", "unzip it"),
    ("truncated JP2", "cannot read pixels"),
    ("cut JP2", "cannot open as a raster"),
])
def test_bad_products_are_one_line_and_write_nothing(tmp_path, ckpt, capsys, case, message):
    product, named = _bad_product(tmp_path, case)
    code, _, err = _run(capsys, "predict", "--model", ckpt, "--input", product, "--out", tmp_path / "maps",
                          "--window", 64)
    last = err.strip().splitlines()[-1]  # after any progress bar
    assert code == 2 and last.startswith("landmeta predict: error:"), err
    assert named in last and message in last, last
    assert not (tmp_path / "maps").exists() or not any((tmp_path / "maps").iterdir())


def test_l2a_has_no_b10(tmp_path, capsys):
    """A 13-band (L1C-trained, e.g. SEN12MS) model on an L2A product: the error says why B10 is missing."""
    ckpt = make_checkpoint(tmp_path / "s13.pt", bands=("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08",
                                                       "B8A", "B09", "B10", "B11", "B12"))
    product = write_product(tmp_path, PATCH, scl=cloud_scl((60, 60)))
    code, _, err = _run(capsys, "predict", "--model", ckpt, "--input", product, "--out", tmp_path / "maps")
    assert code == 2 and "no image of B10" in err and "L2A products have no B10" in err and err.count("\n") == 1
