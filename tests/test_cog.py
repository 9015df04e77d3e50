"""Cloud-optimised GeoTIFFs (written with GDAL's COG driver) as `predict --input`: the same map as the
plain GeoTIFF, and windows and the quick-look read only the tiles and overview levels they need."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil

from inference_factory import class_field, make_checkpoint, reflectance, write_geotiff
from landmeta.cli import main
from landmeta.inference.maps import GDAL_CACHE_BYTES
from landmeta.inference.scene import open_scene

BANDS = ["B02", "B03", "B04", "B08"]


def _cog(plain: Path, path: Path, blocksize: int = 256) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rasterio.shutil.copy(plain, path, driver="COG", BLOCKSIZE=blocksize, COMPRESS="DEFLATE")
    return path


def _bytes_read() -> int:
    """Bytes this process has read from files so far (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_cog_gives_the_same_map_as_the_plain_geotiff(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "seg.pt")
    plain = write_geotiff(tmp_path / "plain" / "scene.tif", reflectance(class_field(200, 260), 4))
    cog = _cog(plain, tmp_path / "cog" / "scene.tif")
    with rasterio.open(cog) as src:
        assert src.overviews(1) and src.block_shapes[0] == (256, 256)
    for name in ("plain", "cog"):
        assert main(["predict", "--model", str(ckpt), "--input", str(tmp_path / name / "scene.tif"),
                     "--out", str(tmp_path / f"maps_{name}"), "--window", "128"]) == 0, capsys.readouterr().err
    for kind in ("classes", "confidence"):
        with rasterio.open(tmp_path / "maps_plain" / f"scene_{kind}.tif") as a, \
                rasterio.open(tmp_path / "maps_cog" / f"scene_{kind}.tif") as b:
            assert a.transform == b.transform and a.crs == b.crs and np.array_equal(a.read(), b.read())


def test_cog_window_and_quicklook_read_a_small_part_of_the_file(tmp_path):
    """A 64² window reads about one 256² tile, and the quick-look an overview level, not the whole file."""
    plain = write_geotiff(tmp_path / "plain.tif", reflectance(class_field(2048, 2048), 4))
    cog = _cog(plain, tmp_path / "cog.tif")
    size = cog.stat().st_size
    with open_scene(cog, BANDS) as scene:
        start = _bytes_read()
        image, valid = scene.read(700, 900, 64, 64)
        window_bytes = _bytes_read() - start
        start = _bytes_read()
        quicklook = scene.overview(256, [2, 1, 0])
        quicklook_bytes = _bytes_read() - start
    with open_scene(plain, BANDS) as scene:
        assert np.array_equal(image, scene.read(700, 900, 64, 64)[0]) and valid.all()
        whole = scene.read(0, 0, 2048, 2048)[0][[2, 1, 0]]
    assert window_bytes < size / 40, (window_bytes, size)  # measured: 0.4 MB of 31 MB
    assert quicklook_bytes < size / 40, (quicklook_bytes, size)
    assert quicklook.shape == (3, 256, 256)
    # an overview level averages blocks (GDAL's COG default); the quick-look stays close to the decimated scene
    decimated = whole[:, 4::8, 4::8]
    assert np.abs(quicklook - decimated).mean() < 0.02


def test_gdal_block_cache_of_predict_holds_blocks(tmp_path):
    """Under the block cache `predict` and `adapt --scene` set, a window read again comes from the cache
    (the cap was once handed to GDAL as 64 bytes, which kept no block and re-decoded every JPEG 2000 tile)."""
    plain = write_geotiff(tmp_path / "plain.tif", reflectance(class_field(512, 512), 4))
    tiled = _cog(plain, tmp_path / "cog.tif")
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), open_scene(tiled, BANDS) as scene:
        scene.read(100, 100, 200, 200)
        start = _bytes_read()
        scene.read(100, 100, 200, 200)
        assert _bytes_read() - start < 1024  # reading /proc/self/io itself: 0.1 kB; one block: 100s of kB
