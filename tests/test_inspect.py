"""`landmeta inspect`: split, class and region summaries, and the map of region locations."""

from __future__ import annotations

import numpy as np
from PIL import Image

from landmeta.cli import main
from preprocess_inputs import deepglobe_dataset, sen12ms_dataset


def test_inspect_prints_summaries_and_maps_located_regions(tmp_path, capsys):
    raw = sen12ms_dataset(tmp_path / "raw", seasons=("ROIs1158_spring", "ROIs2017_winter"), scenes=(1, 2, 3))
    assert main(["preprocess", "sen12ms", "--root", str(raw), "--out", str(tmp_path / "store"),
                 "--chip-size", "32", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "store"), "--out", str(tmp_path / "inspect")]) == 0
    out = capsys.readouterr().out
    assert "regions per split" in out and "train     4" in out and "ROIs2017_winter_3" in out
    assert "chips per class in each region" in out and "chips per class and split" in out
    png = tmp_path / "inspect" / "regions_map.png"
    assert f"map: {png}" in out
    with Image.open(png) as img:
        assert img.size[0] > 300 and np.asarray(img.convert("L")).std() > 0


def test_inspect_without_locations_and_on_a_missing_store(tmp_path, capsys):
    raw = deepglobe_dataset(tmp_path / "raw", n=6, size=32)
    assert main(["preprocess", "deepglobe", "--root", str(raw), "--out", str(tmp_path / "dg"), "--grid", "2",
                 "--clusters", "3", "--no-progress"]) == 0
    assert main(["inspect", str(tmp_path / "dg")]) == 0
    out = capsys.readouterr().out
    assert "no region has a location" in out and not (tmp_path / "dg" / "regions_map.png").exists()
    assert main(["inspect", str(tmp_path / "nothing")]) == 2
    assert "no chip store here" in capsys.readouterr().err
