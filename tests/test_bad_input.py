"""Out-of-range numbers in configs and CLI options, odd output paths, damaged result rows, odd names."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from inference_factory import class_field, make_checkpoint, reflectance, write_geotiff
from landmeta.cli import main
from landmeta.config import BOUNDS, Config, load_config
from landmeta.data.store import ChipStore
from landmeta.errors import ConfigError, DataError, OutputExistsError, TaskError
from landmeta.evaluation.protocol import evaluate
from landmeta.evaluation.results import ResultsLog, open_results, read_results_csv
from landmeta.reporting.maps import gain_map
from landmeta.reporting.plots import classification_example, segmentation_example, shot_curves
from landmeta.text import mpl_text
from store_factory import make_store
from test_evaluate import FAST, write_checkpoint


def _numeric_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Dotted keys of every field holding a number or a list of numbers (optional or not)."""
    keys = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            keys += _numeric_keys(hint, f"{prefix}{f.name}.")
            continue
        flat = str(hint)
        if any(t in flat for t in ("int", "float")) or hint in (int, float):
            keys.append(prefix + f.name)
    return keys


def test_every_numeric_config_value_has_a_bound():
    numeric = set(_numeric_keys())
    assert numeric and numeric <= set(BOUNDS), sorted(numeric - set(BOUNDS))
    known = set(_numeric_keys()) | {"eval.finetune_layers"}
    assert set(BOUNDS) <= known, sorted(set(BOUNDS) - known)


@pytest.mark.parametrize("override, message", [
    ("meta.meta_batch=-2", "meta.meta_batch must be >= 1, got -2"),
    ("meta.outer_lr=-1", "meta.outer_lr must be >= 0, got -1.0"),
    ("meta.inner_lr=-0.4", "meta.inner_lr must be > 0, got -0.4"),
    ("meta.inner_lr=.nan", "meta.inner_lr must be a finite number > 0, got nan"),
    ("meta.grad_clip=0", "meta.grad_clip must be > 0, got 0.0"),
    ("meta.steps=0", "meta.steps must be >= 1, got 0"),
    ("train.val_every=-5", "train.val_every must be >= 1, got -5"),
    ("train.workers=-1", "train.workers must be >= 0, got -1"),
    ("task.n_way=1", "task.n_way must be >= 2, got 1"),
    ("model.encoder_depth=9", "model.encoder_depth must be in [1, 5], got 9"),
    ("eval.finetune_steps=[10, -3]", "eval.finetune_steps[1] must be >= 0, got -3"),
    ("eval.finetune_lrs=[]", "eval.finetune_lrs needs at least 1 value(s), got []"),
    ("eval.bootstrap=0", "eval.bootstrap must be >= 1, got 0"),
    ("seed=-1", "seed must be in [0, 4294967295], got -1"),
])
def test_out_of_range_override_names_key_bound_and_value(override, message):
    with pytest.raises(ConfigError) as info:
        load_config("tiny", [override])
    assert str(info.value) == f"--set {override}: {message}"


def test_out_of_range_value_in_a_file_names_the_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("meta:\n  inner_lr: -0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: meta\.inner_lr must be > 0, got -0\.1"):
        load_config(bad)


def test_edge_values_are_accepted():
    cfg = load_config("tiny", ["meta.inner_steps=0", "eval.finetune_steps=[0]", "eval.adapt_steps=null",
                               "train.early_stop_patience=0", "eval.examples=0", "seed=4294967295"])
    assert cfg.meta.inner_steps == 0 and cfg.eval.finetune_steps == [0] and cfg.seed == 2**32 - 1


# --- numeric CLI options: one line naming option, range and value; exit 2; nothing written --------

@pytest.mark.parametrize("argv, message", [
    (["adapt", "--checkpoint", "c.pt", "--support", "s", "--out", "m.pt", "--steps", "-1"], "--steps must be >= 0, got -1"),
    (["adapt", "--checkpoint", "c.pt", "--support", "s", "--out", "m.pt", "--lr", "-0.1"], "--lr must be > 0, got -0.1"),
    (["adapt", "--checkpoint", "c.pt", "--support", "s", "--out", "m.pt", "--lr", "nan"],
     "--lr must be a finite number > 0, got nan"),
    (["evaluate", "--data", "d", "--runs", "r", "--out", "res", "--tasks", "0"], "--tasks must be >= 1, got 0"),
    (["evaluate", "--data", "d", "--runs", "r", "--out", "res", "--workers", "-3"], "--workers must be >= 1, got -3"),
    (["predict", "--model", "m.pt", "--input", "i.tif", "--out", "maps", "--batch", "0"], "--batch must be >= 1, got 0"),
    (["predict", "--model", "m.pt", "--input", "i.tif", "--out", "maps", "--window", "-64"], "--window must be >= 1, got -64"),
    (["predict", "--model", "m.pt", "--input", "i.tif", "--out", "maps", "--overlap", "-1"], "--overlap must be >= 0, got -1"),
    (["preprocess", "folder", "--root", "raw", "--out", "store", "--chip-size", "0"], "--chip-size must be >= 1, got 0"),
    (["preprocess", "folder", "--root", "raw", "--out", "store", "--downsample", "-2"], "--downsample must be >= 1, got -2"),
    (["preprocess", "deepglobe", "--root", "raw", "--out", "store", "--grid", "0"], "--grid must be >= 1, got 0"),
    (["preprocess", "deepglobe", "--root", "raw", "--out", "store", "--clusters", "0"], "--clusters must be >= 1, got 0"),
    (["preprocess", "folder", "--root", "raw", "--out", "store", "--split-seed", "-1"],
     "--split-seed must be in [0, 4294967295], got -1"),
    (["preprocess", "folder", "--root", "raw", "--out", "store", "--workers", "-1"], "--workers must be >= 0, got -1"),
    (["synth", "--out", "raw", "--seed", "-7"], "--seed must be in [0, 4294967295], got -7"),
    (["train", "--config", "tiny", "--data", "d", "--out", "run", "--nproc", "0"], "--nproc must be >= 1, got 0"),
])
def test_numeric_option_out_of_range(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"landmeta {argv[0]}: error: {message}"]
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def evaluation_inputs(tmp_path_factory):
    """A small chip store and two untrained checkpoints (maml, pretrain) that `evaluate` accepts."""
    root = tmp_path_factory.mktemp("bad-evaluate")
    store_path = make_store(root / "store", chip_size=32)
    store = ChipStore.open(store_path)
    runs = [write_checkpoint(root / f"{m}.pt", store, m, "classification") for m in ("maml", "pretrain")]
    return store_path, runs


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*"))


def test_evaluate_negative_tasks_writes_nothing(evaluation_inputs, tmp_path, capsys):
    store_path, runs = evaluation_inputs
    before = _files(store_path)
    code = main(["evaluate", "--data", str(store_path), "--runs", *map(str, runs), "--out", str(tmp_path / "res"),
                 "--tasks", "-5", "--shots", "1"])
    assert code == 2 and capsys.readouterr().err.strip() == "landmeta evaluate: error: --tasks must be >= 1, got -5"
    assert _files(store_path) == before and list(tmp_path.iterdir()) == []
    with pytest.raises(TaskError, match="tasks per shot count must be >= 1, got 0"):  # the library refuses it too
        evaluate(store_path, runs, tmp_path / "res", load_config("tiny"), shots=[1], tasks=0)
    assert _files(store_path) == before and not (tmp_path / "res").exists()


@pytest.mark.parametrize("out", ["taken.csv", "taken.csv/res"])
def test_evaluate_out_on_a_file_is_one_line(out, evaluation_inputs, tmp_path, capsys):
    store_path, runs = evaluation_inputs
    (tmp_path / "taken.csv").write_text("a user's file\n")
    before = _files(store_path)
    code = main(["evaluate", "--data", str(store_path), "--runs", *map(str, runs), "--out", str(tmp_path / out),
                 "--tasks", "2", "--shots", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is not a folder; choose another --out" in err[0]
    assert f"{tmp_path / 'taken.csv'}" in err[0] and "Traceback" not in err[0]
    assert (tmp_path / "taken.csv").read_text() == "a user's file\n"
    assert [p.name for p in tmp_path.iterdir()] == ["taken.csv"] and _files(store_path) == before
    if out == "taken.csv":  # the library refuses it too, before anything is written
        with pytest.raises(OutputExistsError, match="exists and is not a folder"):
            evaluate(store_path, runs, tmp_path / out, load_config("tiny"), shots=[1], tasks=2)
        assert [p.name for p in tmp_path.iterdir()] == ["taken.csv"] and _files(store_path) == before


# --- results.csv: a row that does not parse exactly is dropped and recomputed ----------------------

ROWS = [{"task": 0, "region": "r1", "method": "maml", "shots": 1, "accuracy": 0.7134375, "kappa": 0.61,
         "macro_f1": 0.7},
        {"task": 1, "region": "east, coast", "method": "rf", "shots": 1, "accuracy": 0.5, "kappa": 1 / 3,
         "macro_f1": 0.45}]


def _log(path: Path) -> str:
    log = ResultsLog(path, "classification")
    log.append(ROWS)
    return path.read_text()


def test_results_rows_read_back_exactly(tmp_path: Path):
    _log(tmp_path / "results.csv")
    rows = read_results_csv(tmp_path / "results.csv", "classification")
    assert rows.attrs["dropped"] == 0 and rows.to_dict("records") == ROWS


@pytest.mark.parametrize("damage", [
    lambda text: text[: text.rindex("0.45") + 3],  # killed writer: last line cut inside a number
    lambda text: text.rstrip("\n")[:-3],  # cut inside the checksum
    lambda text: text.replace("0.7134375", "0.71"),  # a number shortened in place, checksum kept
    lambda text: text.replace(",0.61,", ",0.62,"),  # an edited value
    lambda text: text.replace('"east, coast"', '"east, co'),  # a quoted field cut off
    lambda text: text + "garbage without commas\n",
])
def test_damaged_rows_are_dropped_and_recomputed(damage, tmp_path: Path):
    path = tmp_path / "results.csv"
    intact = _log(path)
    path.write_text(damage(intact))
    rows = read_results_csv(path, "classification")
    assert rows.attrs["dropped"] >= 1 and all(r in ROWS for r in rows.to_dict("records"))
    log = ResultsLog(path, "classification")  # resume: the damaged rows are gone from the file, to be redone
    missing = [r for r in ROWS if not log.has(r["task"], r["method"], r["shots"])]
    assert read_results_csv(path, "classification").attrs["dropped"] == 0
    if missing:
        log.append(missing)
    assert sorted(path.read_text().splitlines()) == sorted(intact.splitlines())


def test_rows_without_checksum_are_recomputed(tmp_path: Path):
    path = tmp_path / "results.csv"
    path.write_text("task,region,method,shots,accuracy,kappa,macro_f1\n0,r1,maml,1,0.71,0.61,0.7\n")  # older format
    assert read_results_csv(path, "classification").attrs["dropped"] == 1
    log = ResultsLog(path, "classification")
    assert not log.has(0, "maml", 1) and path.read_text() == "task,region,method,shots,accuracy,kappa,macro_f1,crc\n"


def test_cut_row_is_recomputed_by_evaluate_and_refused_by_report(evaluation_inputs, tmp_path: Path):
    store_path, runs = evaluation_inputs
    config = load_config("tiny", FAST)
    out = evaluate(store_path, runs, tmp_path / "res", config, shots=[1], tasks=2)
    intact = (out / "results.csv").read_text()
    last = intact.splitlines()[-1].split(",")
    number = next(f for f in last[4:-1] if len(f) > 4)
    cut = intact.replace(",".join(last), ",".join(last).replace(number, number[:4], 1))
    (out / "results.csv").write_text(cut)  # a row whose metric lost its last digits
    with pytest.raises(DataError, match=r"1 row\(s\) do not parse exactly or fail their checksum"):
        open_results(out)
    evaluate(store_path, runs, out, config, shots=[1], tasks=2)  # resume recomputes that row only
    assert sorted((out / "results.csv").read_text().splitlines()) == sorted(intact.splitlines())
    assert open_results(out).results.attrs["dropped"] == 0


# --- names with matplotlib's mathtext characters are drawn literally ----------------------------

ODD = ["p$\\q{$", "$x^$ & co", "a\\$b$c"]  # each would be parsed as (broken) mathtext


def test_mpl_text_shows_names_literally():
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    for name in ODD + ["plain", "cost $5"]:
        fig = Figure()
        title = fig.add_subplot().set_title(mpl_text(name))
        fig.canvas.draw()  # raises on a mathtext error
        assert title._preprocess_math(title.get_text()) == (name, False)


def test_predict_preview_with_odd_class_and_scene_names(tmp_path, capsys):
    model = make_checkpoint(tmp_path / "odd.pt", class_names=ODD)
    scene = write_geotiff(tmp_path / "sc$\\q{$.tif", reflectance(class_field(96, 96), 4))
    code = main(["predict", "--model", str(model), "--input", str(scene), "--out", str(tmp_path / "maps"),
                 "--window", "64"])
    assert code == 0, capsys.readouterr().err
    legend = json.loads((tmp_path / "maps" / "sc$\\q{$_legend.json").read_text())
    assert [c["name"] for c in legend["classes"]] == ODD  # files keep the names as they are
    assert Image.open(tmp_path / "maps" / "sc$\\q{$_preview.png").size[0] > 0


def test_report_figures_with_odd_class_region_and_method_names(tmp_path):
    colors = np.array([(0, 153, 0), (194, 79, 68), (28, 13, 255)], dtype=np.uint8)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (2, 8, 8, 3), dtype=np.uint8)
    seg = {"task": 0, "region": "r$\\x{$", "shots": 1, "support_rgb": rgb[:1], "query_rgb": rgb,
           "support_y": rng.integers(0, 3, (1, 8, 8)), "query_y": rng.integers(0, 3, (2, 8, 8)),
           "predictions": {"m$\\y{$": rng.integers(0, 3, (2, 8, 8))}}
    assert segmentation_example(seg, ODD, colors, tmp_path / "seg.png").stat().st_size > 0
    cls = seg | {"support_y": np.array([0]), "query_y": np.array([1, 2]),
                 "predictions": {"m$\\y{$": np.array([1, 0])}}
    assert classification_example(cls, ODD, colors, tmp_path / "cls.png").stat().st_size > 0
    summary = pd.DataFrame({"method": ["m$\\y{$"] * 2, "shots": [1, 2], "metric": ["accuracy"] * 2,
                            "mean": [0.5, 0.6], "ci": [0.1, 0.1], "n": [3, 3]})
    assert shot_curves(summary, "accuracy", ["m$\\y{$"], tmp_path / "curve.png").stat().st_size > 0
    gain = pd.DataFrame({"region": ["r$\\x{$", "$east^$"], "gain": [0.1, -0.2], "tasks": [2, 2],
                         "lon": [10.0, 120.0], "lat": [45.0, -30.0]})
    assert gain_map(gain, tmp_path / "map.png", "m$\\y{$", "$b^$", "accuracy").stat().st_size > 0
