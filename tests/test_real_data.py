"""The real-data presets end to end on a slice of the real dev sets (../shared/data): two SEN12MS-RGB
scenes and two DeepGlobe tiles, preprocess -> train (MAML and pretraining, a few steps) -> evaluate
on the meta-val region -> report. The README's real-data walkthroughs, shrunk to seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from landmeta.cli import main

SHARED = next((p for p in (Path(__file__).resolve().parents[2] / "shared" / "data", Path("/work/shared/data"))
               if p.is_dir()), None)
pytestmark = pytest.mark.skipif(SHARED is None, reason="the real dev sets (../shared/data) are not on this machine")

FEW_STEPS = ["--set", "meta.steps=2", "--set", "train.val_every=2", "--set", "train.ckpt_every=2",
             "--set", "task.val_tasks=2", "--no-progress"]
SMALL_GRIDS = ["--set", "eval.finetune_steps=[0,2]", "--set", "eval.adapt_steps=[0,1]", "--set", "eval.rf_trees=5",
               "--set", "eval.finetune_lrs=[0.01]", "--set", "eval.finetune_layers=[all]"]


def _subset(folder: Path, names: dict[str, str], root: Path) -> tuple[Path, Path]:
    """Links to some of a dev set's regions (name -> split) and their split file."""
    root.mkdir(parents=True)
    for name in names:
        for source in folder.glob(f"{name}*"):
            (root / source.name).symlink_to(source)
    split = root.parent / "split.csv"
    split.write_text("".join(f"{name},{part}\n" for name, part in names.items()))
    return root, split


def _train_evaluate_report(config: str, store: Path, tmp: Path, shots: str, extra: list[str],
                           maml_from_pretrain: bool) -> dict:
    runs = {m: tmp / f"run-{m}" for m in ("pretrain", "maml")}
    assert main(["train", "--config", config, "--data", str(store), "--out", str(runs["pretrain"]),
                 "--method", "pretrain", *FEW_STEPS, *extra]) == 0
    start = ["--set", f"train.init_from={runs['pretrain'] / 'best.pt'}"] if maml_from_pretrain else []
    assert main(["train", "--config", config, "--data", str(store), "--out", str(runs["maml"]), *FEW_STEPS, *extra,
                 *start]) == 0
    assert main(["evaluate", "--config", config, "--data", str(store), "--runs", str(runs["maml"]),
                 str(runs["pretrain"]), "--split", "val", "--shots", shots, "--tasks", "2", "--out",
                 str(tmp / "results"), "--workers", "1", *extra, *SMALL_GRIDS]) == 0
    assert main(["report", str(tmp / "results"), "--out", str(tmp / "report")]) == 0
    summary = pd.read_csv(tmp / "results" / "summary.csv")
    assert {"maml", "pretrain", "random", "rf"} <= set(summary["method"])
    headline = summary[summary["metric"].isin(["accuracy", "miou"])]
    assert len(headline) and headline["mean"].between(0, 1).all()  # (kappa may be negative)
    html = (tmp / "report" / "index.html").read_text()
    assert "maml" in html and "pretrain" in html
    return json.loads((store / "manifest.json").read_text())


def test_sen12ms_rgb_preset_on_two_real_scenes(tmp_path: Path) -> None:
    root, split = _subset(SHARED / "sen12ms-rgb-dev" / "scenes",
                          {"ROIs1158_spring_scene123": "train", "ROIs1970_fall_scene141": "val"}, tmp_path / "scenes")
    store = tmp_path / "store"
    assert main(["preprocess", "folder", "--root", str(root), "--out", str(store), "--split-file", str(split),
                 "--parent-pattern", r"(p\d+)(tl|tr|bl|br)", "--no-progress"]) == 0
    manifest = _train_evaluate_report("sen12ms-rgb", store, tmp_path, "1,2", ["--set", "data.chip_size=32"], False)
    assert manifest["counts"]["chips"] == 78 + 72 and manifest["bands"] == ["red", "green", "blue"]
    chips = pd.read_csv(store / "chips.csv")
    assert chips["parent"].nunique() < len(chips)  # quadrants of one patch share a parent


def test_deepglobe_preset_on_two_real_tiles(tmp_path: Path) -> None:
    root, split = _subset(SHARED / "deepglobe-dev" / "tiles", {"10233": "train", "2774": "val"}, tmp_path / "tiles")
    store = tmp_path / "store"
    assert main(["preprocess", "deepglobe", "--root", str(root), "--out", str(store), "--split-file", str(split),
                 "--downsample", "8", "--no-progress"]) == 0
    manifest = _train_evaluate_report("deepglobe", store, tmp_path, "1", ["--set", "data.chip_size=64"], True)
    assert manifest["counts"]["chips"] == 32 and manifest["chip_size"] == 76
