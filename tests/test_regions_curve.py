"""scripts/regions_curve.py on the tiny synthetic data: nested subsets of the meta-train regions, one
store per subset, every subset scored on the same saved test tasks, the curve; bad input."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
from PIL import Image

from landmeta.cli import main
from landmeta.data.store import ChipStore

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "regions_curve.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("regions_curve", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_store(synth_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dataset as 32-px chips (patches downsampled 4 times, four chips each)."""
    store = tmp_path_factory.mktemp("curve") / "store"
    assert main(["preprocess", "sen12ms", "--root", str(synth_tiny / "sen12ms"), "--out", str(store),
                 "--downsample", "4", "--chip-size", "32", "--no-progress"]) == 0
    return store


def _args(synth_tiny: Path, store: Path, out: Path, subsets: str) -> list[str]:
    return ["--raw", str(synth_tiny / "sen12ms"), "--data", str(store), "--out", str(out), "--subsets", subsets,
            "--kinds", "segmentation", "--shots", "1", "--steps", "2", "--tasks", "3",
            "--seg-config", "tiny-seg", "--seg-maml-config", "tiny-seg"]


def _task_tiles(store: ChipStore, name: str) -> list[list[str]]:
    tasks = json.loads((store.path / "tasks" / name).read_text())["tasks"]
    tiles = store.chips["tile"].to_numpy()
    return [list(tiles[t["support"] + t["query"]]) for t in tasks]


@pytest.mark.slow
def test_nested_subsets_are_trained_apart_and_scored_on_the_same_tasks(synth_tiny, tiny_store, tmp_path, capsys):
    """2 and all 12 meta-train regions: a store for the 2, four trainings, two evaluations, the curve."""
    curve_script = _script()
    out = tmp_path / "study"
    assert curve_script.main(_args(synth_tiny, tiny_store, out, "2,all")) == 0
    full = ChipStore.open(tiny_store)
    train = full.regions_in("train")
    subsets = json.loads((out / "subsets.json").read_text())
    assert sorted(subsets["order"]) == train and len(train) == 12
    assert subsets["subsets"] == {"2": sorted(subsets["order"][:2]), "12": train}

    # the subset's store: its 2 meta-train regions and the full store's meta-val regions, nothing else
    sub = ChipStore.open(out / "subsets" / "n2" / "store")
    assert sub.regions_in("train") == subsets["subsets"]["2"] and sub.regions_in("val") == full.regions_in("val")
    assert not sub.regions_in("test") and sub.manifest["options"]["downsample"] == 4
    for n, store in ((2, sub.path), (12, tiny_store)):  # each subset's runs learnt from its own store
        for method in ("maml", "pretrain"):
            assert json.loads((out / "runs" / f"seg-n{n}-{method}" / "run.json").read_text())["data"] == str(store)
    # its meta-val tasks (model selection) are the full store's, chip for chip
    names = sorted(p.name for p in (sub.path / "tasks").glob("val-*.json"))
    assert names and all(_task_tiles(sub, n) == _task_tiles(full, n) for n in names)

    # every subset is evaluated on the full store's saved test tasks
    metas = {n: json.loads((out / "results" / f"seg-n{n}" / "meta.json").read_text()) for n in (2, 12)}
    assert metas[2]["store"] == metas[12]["store"] == str(tiny_store.resolve())
    assert metas[2]["task_files"] == metas[12]["task_files"]
    assert metas[2]["methods"]["maml"]["checkpoint"] != metas[12]["methods"]["maml"]["checkpoint"]

    curve = pd.read_csv(out / "curve.csv")
    assert set(curve["regions"]) == {2, 12} and set(curve["shots"]) == {1} and (curve["metric"] == "miou").all()
    assert {"maml", "pretrain", "random"} <= set(curve["method"]) and curve["mean"].between(0, 1).all()
    assert (curve["n"] == 3).all()
    table = (out / "curve.md").read_text()
    assert "| 2 |" in table and "| 12 |" in table and "1-shot maml − pretrain" in table
    assert Image.open(out / "curve.png").size[0] >= 400

    # a rerun trains nothing again
    best = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("best.pt")}
    assert len(best) == 4
    assert curve_script.main(_args(synth_tiny, tiny_store, out, "2,all")) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("best.pt")} == best


def test_a_subset_larger_than_the_meta_train_split_is_one_line(synth_tiny, tiny_store, tmp_path, capsys):
    """Bad input: one line naming the subset and the split's size, exit 2, nothing written."""
    code = _script().main(_args(synth_tiny, tiny_store, tmp_path / "study", "4,13"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "subset of 13 regions" in err[0] and "(12 regions)" in err[0] and str(tiny_store) in err[0]
    assert not (tmp_path / "study").exists()
