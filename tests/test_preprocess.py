"""Chip store writer: format, splits, train-only statistics, atomicity, warnings, and the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from landmeta.cli import main
from landmeta.data.preprocess import PreprocessOptions, preprocess
from landmeta.data.regions import assign_splits, random_split
from landmeta.data.store import ChipStore
from landmeta.errors import DataError, OutputExistsError
from preprocess_inputs import sen12ms_dataset, sen12ms_patch

SEASONS = ("ROIs1158_spring", "ROIs1868_summer", "ROIs1970_fall")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return sen12ms_dataset(tmp_path_factory.mktemp("raw"), seasons=SEASONS, scenes=(1, 2), patches=(1, 2))


def run(root, out, **kw):
    kw.setdefault("chip_size", 32)
    return preprocess("sen12ms", root, out, PreprocessOptions(**kw))


def test_store_opens_with_the_reader_and_stats_come_from_train_regions(raw, tmp_path):
    store = ChipStore.open(run(raw, tmp_path / "store"))
    assert len(store) == 6 * 2 * 4 and store.kinds == ["classification", "segmentation"]
    assert sorted(store.regions["split"].value_counts().to_dict().items()) == [("test", 1), ("train", 4), ("val", 1)]
    train = store.chips.index[store.chips["region"].isin(store.regions_in("train"))].to_numpy()
    x = store.images(train).astype(np.float64)
    np.testing.assert_allclose(store.mean, x.mean(axis=(0, 2, 3)), rtol=1e-4)
    np.testing.assert_allclose(store.std, x.std(axis=(0, 2, 3)), rtol=1e-3)
    assert not np.allclose(store.mean, store.images(np.arange(len(store))).mean(axis=(0, 2, 3)), rtol=1e-6)
    stats = json.loads((store.path / "stats.json").read_text())
    assert stats["regions"] == store.regions_in("train")


def test_split_file_and_holdout(raw, tmp_path):
    regions = [f"{s}_{n}" for s in SEASONS for n in (1, 2)]
    (tmp_path / "split.csv").write_text("".join(f"{r},{s}\n" for r, s in zip(regions, ["train"] * 4 + ["val", "test"])))
    store = ChipStore.open(run(raw, tmp_path / "a", split_file=tmp_path / "split.csv"))
    assert store.regions_in("test") == [regions[5]] and store.regions_in("val") == [regions[4]]
    (tmp_path / "holdout.txt").write_text(f"# official hold-out\n{regions[0]}\n{regions[3]}\nROIs9999_winter_1\n")
    out = run(raw, tmp_path / "b", holdout=tmp_path / "holdout.txt")
    store = ChipStore.open(out)
    assert store.regions_in("test") == [regions[0], regions[3]] and len(store.regions_in("val")) == 1
    assert "ROIs9999_winter_1" in json.loads((out / "manifest.json").read_text())["warnings"][0]
    (tmp_path / "short.csv").write_text(f"{regions[0]},train\n")
    with pytest.raises(DataError, match="no split for regions"):
        run(raw, tmp_path / "c", split_file=tmp_path / "short.csv")
    (tmp_path / "bad.csv").write_text(f"{regions[0]},training\n")
    with pytest.raises(DataError, match="line 1"):
        run(raw, tmp_path / "c", split_file=tmp_path / "bad.csv")


def test_random_split_is_seeded_and_proportional():
    regions = [f"r{i:03d}" for i in range(125)]
    a, b, c = random_split(regions, 1), random_split(regions, 1), random_split(regions, 2)
    assert a == b and a != c
    assert pd.Series(a).value_counts().to_dict() == {"train": 75, "val": 25, "test": 25}
    with pytest.raises(DataError, match="at least 3 regions"):
        assign_splits(["a", "b"], 0)


def test_gpkg_layers_and_tiny_region_warning(tmp_path):
    import geopandas as gpd
    import pyogrio
    root = sen12ms_dataset(tmp_path / "raw", scenes=(1, 2, 3))
    sen12ms_patch(root, "ROIs1158_spring", 7, 1, np.random.default_rng(0))  # one patch = one chip only
    out = run(root, tmp_path / "store", chip_size=64)
    assert sorted(name for name, _ in pyogrio.list_layers(out / "regions.gpkg")) == ["regions", "tiles"]
    regions = gpd.read_file(out / "regions.gpkg", layer="regions")
    tiles = gpd.read_file(out / "regions.gpkg", layer="tiles")
    assert list(regions.columns) == ["region", "split", "season", "cluster", "n_chips", "class_counts", "geometry"]
    assert list(tiles.columns) == ["tile", "region", "label", "class_hist", "source", "geometry"]
    assert regions.geom_type.eq("MultiPolygon").all() and tiles.geom_type.eq("Polygon").all()
    chips = pd.read_csv(out / "chips.csv")
    assert list(tiles["tile"]) == list(chips["tile"])
    row = regions.set_index("region").loc["ROIs1158_spring_1"]
    assert sum(json.loads(row["class_counts"]).values()) == row["n_chips"] == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["small_regions"] == 1
    assert manifest["warnings"] == ["region ROIs1158_spring_7: too few samples for any task (1 chips, "
                                    "0 classes with 2+ chips)"]


def test_existing_output_needs_overwrite_and_failures_leave_nothing(raw, tmp_path):
    out = run(raw, tmp_path / "store")
    before = (out / "manifest.json").read_text()
    with pytest.raises(OutputExistsError):
        run(raw, out)
    with pytest.raises(DataError):
        run(raw, out, bands=["B99"], overwrite=True)
    assert (out / "manifest.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["store"]
    run(raw, out, overwrite=True, bands=["VV"])
    assert json.loads((out / "manifest.json").read_text())["bands"] == ["VV"]


def test_cli_summary_and_one_line_errors(raw, tmp_path, capsys):
    (raw / "ROIs1158_spring/lc_2/ROIs1158_spring_lc_2_p2.tif").rename(tmp_path / "moved.tif")
    try:
        code = main(["preprocess", "sen12ms", "--root", str(raw), "--out", str(tmp_path / "s"), "--chip-size", "32",
                     "--no-progress"])
        out = capsys.readouterr().out
        assert code == 0 and "wrote" in out and "skipped 1 inputs" in out and "patch has no lc file" in out
        code = main(["preprocess", "sen12ms", "--root", str(raw), "--out", str(tmp_path / "t"), "--strict",
                     "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "ROIs1158_spring_s2_2_p2.tif: patch has no lc file" in err[0]
        assert not (tmp_path / "t").exists()
        assert main(["preprocess", "sen12ms", "--root", str(raw), "--out", str(tmp_path / "w"), "--workers", "-2",
                     "--no-progress"]) == 2
        assert "--workers must be >= 0, got -2" in capsys.readouterr().err and not (tmp_path / "w").exists()
    finally:
        (tmp_path / "moved.tif").rename(raw / "ROIs1158_spring/lc_2/ROIs1158_spring_lc_2_p2.tif")


@pytest.mark.slow
def test_generated_datasets_preprocess_and_inspect_end_to_end(synth_tiny, tmp_path, capsys):
    """As a new user would: preprocess the generated SEN12MS and DeepGlobe layouts, then inspect."""
    assert main(["preprocess", "sen12ms", "--root", str(synth_tiny / "sen12ms"), "--out", str(tmp_path / "s"),
                 "--no-progress"]) == 0
    assert main(["preprocess", "deepglobe", "--root", str(synth_tiny / "deepglobe"), "--out", str(tmp_path / "d"),
                 "--split", "clustered", "--clusters", "4", "--no-progress"]) == 0
    for name in ("s", "d"):
        assert main(["inspect", str(tmp_path / name)]) == 0
    out = capsys.readouterr().out
    sen, dg = ChipStore.open(tmp_path / "s"), ChipStore.open(tmp_path / "d")
    assert sen.chip_size == 128 and len(sen.bands) == 15 and sen.chips.groupby("parent").size().eq(4).all()
    assert all(sen.regions_in(split) for split in ("train", "val", "test"))
    assert dg.regions.groupby("cluster")["split"].nunique().eq(1).all() and (dg.path / "clusters.png").exists()
    assert (tmp_path / "s" / "regions_map.png").exists() and "no region has a location" in out


def test_float16_chips_match_numpy_rounding_and_order():
    from landmeta.data.preprocess.cut import _chips_float16
    rng = np.random.default_rng(0)
    image = rng.normal(0, 300, (3, 8, 12)).astype(np.float32)
    image[0, 0, :6] = [0.0, -0.0, 6e-8, 3e-5, 65504.0, 65519.0]  # zeros, subnormals, largest, rounding edge
    chips = _chips_float16(image, 2, 3, 4)
    expected = image.astype(np.float16)
    assert chips.dtype == np.float16 and chips.shape == (6, 3, 4, 4)
    for k in range(6):
        i, j = divmod(k, 3)
        window = expected[:, i * 4:(i + 1) * 4, j * 4:(j + 1) * 4]
        assert np.array_equal(chips[k].view(np.uint16), window.view(np.uint16))


def _default_sigint() -> None:
    """In the child: Ctrl-C as at a terminal, even when the test run itself was started in the
    background (a shell starts background jobs with SIGINT ignored, and children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_the_workers_and_leaves_no_store(tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during preprocessing with
    worker processes: one line, exit 130, no traceback, no store and no half-built folder."""
    root = sen12ms_dataset(tmp_path / "raw", seasons=SEASONS, scenes=tuple(range(1, 11)), patches=tuple(range(1, 9)))
    out = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "landmeta", "preprocess", "sen12ms", "--root", str(root),
                             "--out", str(out), "--chip-size", "32", "--workers", "2"],
                            stderr=subprocess.PIPE, start_new_session=True, preexec_fn=_default_sigint)
    seen = ""
    while not re.search(r"\b([1-9]\d)/240\b", seen):  # at least 10 of the 240 patches done
        chunk = os.read(proc.stderr.fileno(), 65536)  # whole chunks: reading must not lag the writer
        assert chunk, f"preprocessing ended before it could be interrupted: {seen[-300:]}"
        seen += chunk.decode(errors="replace")
    assert proc.poll() is None, "preprocessing ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    err = seen + proc.stderr.read().decode(errors="replace")
    assert proc.wait(timeout=60) == 130, err[-500:]
    assert "landmeta preprocess: interrupted" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
