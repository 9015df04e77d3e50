"""`landmeta evaluate --scene --labels`: methods compared on spatially blocked tasks of a user's own
labels — the example labels file over its real BigEarthNet patch, with small checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from inference_factory import class_field, make_checkpoint, reflectance, write_geotiff
from store_factory import CLASS_NAMES, make_store
from test_evaluate import FAST, write_checkpoint

from landmeta.cli import main
from landmeta.data.store import ChipStore
from landmeta.data.tasks import Task
from landmeta.evaluation.results import open_results
from landmeta.evaluation.runner import EvalSetup, Evaluator
from landmeta.evaluation.windows import read_windows

PATCH = Path("/work/shared/data/bigearthnet-s2/S2_patches/S2B_MSIL2A_20180421T114349_41_4")
EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "examples" / "bigearthnet-labels.gpkg"
BANDS = ["B02", "B03", "B04", "B08"]
SIDE = 16  # the checkpoints' chips: 16-px windows (160 m) over the 120 x 120 px patch
SETTINGS = sum((["--set", s] for s in FAST + ["eval.finetune_steps=[0,3]"]), [])

pytestmark = pytest.mark.skipif(not PATCH.is_dir(), reason="the BigEarthNet sample is not in /work/shared/data")


def _run(capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    """Segmentation checkpoints first evaluated on a store's held-out regions (tuning on meta-val),
    then on the example labels with those tuned settings."""
    root = tmp_path_factory.mktemp("evaluate-labels")
    store = ChipStore.open(make_store(root / "store", chip_size=SIDE, parents_per_region=6, bands=BANDS))
    runs = [write_checkpoint(root / f"{m}.pt", store, m, "segmentation") for m in ("maml", "pretrain")]
    held_out = root / "held-out"
    assert main(["evaluate", "--data", str(store.path), "--runs", *map(str, runs), "--shots", "1,2", "--tasks", "2",
                 "--out", str(held_out), *SETTINGS, "--set", "task.val_tasks=2"]) == 0
    out = root / "labels"
    command = ["evaluate", "--scene", PATCH, "--labels", EXAMPLE, "--runs", *runs, "--shots", "0,1,2",
               "--tasks", "4", "--tuned", held_out, "--out", out, *SETTINGS]
    assert main([str(a) for a in command]) == 0
    return root, runs, held_out, out, command


def _pixel_boxes(scene: Path) -> np.ndarray:
    """Pixel bounding boxes (row0, col0, row1, col1) of the example's features on the patch grid, with a
    one-pixel margin around points (their discs)."""
    with rasterio.open(next(scene.glob("*_B02.tif"))) as src:
        frame = gpd.read_file(EXAMPLE).to_crs(src.crs)
        inverse = ~src.transform
    boxes = []
    for geom in frame.geometry:
        x0, y0, x1, y1 = geom.bounds
        (c0, r0), (c1, r1) = inverse @ (x0, y1), inverse @ (x1, y0)
        margin = 2 if geom.geom_type == "Point" else 0
        boxes.append((np.floor(r0) - margin, np.floor(c0) - margin, np.ceil(r1) + margin, np.ceil(c1) + margin))
    return np.array(boxes)


def _meets(boxes: np.ndarray, window) -> np.ndarray:
    r, c, h, w = window
    return (boxes[:, 0] < r + h) & (boxes[:, 2] > r) & (boxes[:, 1] < c + w) & (boxes[:, 3] > c)


def test_support_and_query_are_spatially_separated(region):
    _, _, _, out, _ = region
    meta = json.loads((out / "meta.json").read_text())
    windows = read_windows(out / "windows.npz")
    boxes = _pixel_boxes(PATCH)
    info = meta["user_region"]
    assert info["features"] == 19 and info["windows"] == len(windows.labels) and info["window_pixels"] == SIDE
    assert info["blocks"] >= 4 and info["buffer_pixels"] == SIDE and info["distinct_queries"] >= 3
    for shots in ("1", "2"):
        saved = json.loads(Path(meta["task_files"][shots]).read_text())
        assert saved["k_shot"] == int(shots) and len(saved["tasks"]) == 4
        for task in saved["tasks"]:
            support, query = np.array(task["support"]), np.array(task["query"])
            assert len(support) == int(shots) and len(query) >= 0.25 * (windows.blocks >= 0).sum()
            assert not set(support) & set(query)
            assert set(windows.blocks[query]) == set(task["held_out_blocks"])  # the held-out blocks, whole
            assert not set(windows.blocks[support]) & set(task["held_out_blocks"])
            for s in windows.windows[support]:
                for q in windows.windows[query]:  # a whole window's side between them, on one axis at least
                    assert max(q[0] - (s[0] + s[2]), s[0] - (q[0] + q[2]),
                               q[1] - (s[1] + s[3]), s[1] - (q[1] + q[3])) >= SIDE
            on_support = np.any([_meets(boxes, w) for w in windows.windows[support]], axis=0)
            on_query = np.any([_meets(boxes, w) for w in windows.windows[query]], axis=0)
            assert not (on_support & on_query).any()  # no feature labels pixels on both sides
    first = [json.loads(Path(meta["task_files"][s]).read_text())["tasks"][0] for s in ("1", "2")]
    assert first[0]["query"] == first[1]["query"] and set(first[0]["support"]) < set(first[1]["support"])


def test_every_method_and_task_has_rows_and_the_report_renders(region, capsys):
    root, _, held_out, out, _ = region
    results = pd.read_csv(out / "results.csv")
    methods = ["maml", "pretrain", "random", "rf", "ncm-maml", "ncm-pretrain", "rff-maml", "rff-pretrain"]
    for shots in (1, 2):
        part = results[results.shots == shots]
        assert sorted(part.method) == sorted(methods * 4)
        assert (part.groupby("method").task.apply(sorted).apply(tuple) == tuple(range(4))).all()
    assert sorted(results[results.shots == 0].method.unique()) == ["maml", "pretrain"]
    assert results.miou.between(0, 1).all() and (results.region == PATCH.name).all()
    meta = open_results(out).meta
    tuned = json.loads((held_out / "meta.json").read_text())["tuned"]
    assert tuned["pretrain"]["1"]["val_tasks"] > 0  # chosen on the store's meta-val tasks
    for name in ("maml", "pretrain", "random"):
        for s in ("1", "2"):
            assert meta["tuned"][name][s] == tuned[name][s] | {"chosen": str(held_out.resolve())}
    # the method chosen on the store's meta-val is the one recommended for the user's region too
    assert meta["choice"] == json.loads((held_out / "meta.json").read_text())["choice"]
    assert meta["regions"][0]["region"] == PATCH.name and -7 < meta["regions"][0]["lon"] < -6.5
    code, _, err = _run(capsys, "report", out, "--out", root / "report")
    assert code == 0, err
    page = (root / "report" / "index.md").read_text()
    assert "over S2B_MSIL2A_20180421T114349_41_4 (segmentation, your own labels)" in page
    assert "From the user's own labels, not the held-out-region protocol" in page and "19 features" in page
    assert "## miou" in page and "| ncm-pretrain |" in page and "| rff-pretrain |" in page
    assert f"- 1-shot: run {meta['choice']['1']['method']}. On meta-val it scored" in page
    assert "On these tasks it scores" in page


def test_saved_windows_reproduce_the_rows(region):
    """Worker processes rebuild the evaluation from windows.npz: it scores a task as the run did."""
    _, runs, _, out, _ = region
    meta = json.loads((out / "meta.json").read_text())
    seed = meta["config"]["seed"]
    setup = EvalSetup(meta["store"], "labels", "segmentation", [str(Path(r).resolve()) for r in runs],
                      meta["config"], seed, windows=True)
    ev = Evaluator(setup)
    task = Task.from_json(json.loads(Path(meta["task_files"]["2"]).read_text())["tasks"][3])
    xs, ys, xq, yq = ev.tensors(task)
    results = pd.read_csv(out / "results.csv")
    for name in ("rf", "maml"):
        method = next(m for m in ev.methods if m.name == name)
        row = results[(results.method == name) & (results.shots == 2) & (results.task == 3)].iloc[0]
        assert ev.score(task, yq, ev.predict(method, task, xs, ys, xq, seed + 3))["miou"] == \
            pytest.approx(row.miou, abs=1e-12)


def test_resume_keeps_rows_and_other_settings_are_refused(region, capsys):
    _, _, _, out, command = region
    before = (out / "results.csv").read_text()
    code, _, err = _run(capsys, *command)
    assert code == 0, err
    assert (out / "results.csv").read_text() == before
    code, _, err = _run(capsys, *command, "--block", 32)
    assert code == 2 and "results of another evaluation (user_region.block_pixels 48, now 32)" in err
    assert (out / "results.csv").read_text() == before


def test_classifier_on_three_classes(tmp_path, capsys):
    """Without the 4 building points (too few windows for a class of its own), 3-way classification works."""
    frame = gpd.read_file(EXAMPLE)
    labels = tmp_path / "no-urban.gpkg"
    frame[frame["class"] != "Urban/Built-up"].to_file(labels, driver="GPKG")
    runs = [make_checkpoint(tmp_path / f"{m}.pt", kind="classification", bands=tuple(BANDS), class_names=CLASS_NAMES,
                            colors=None, chip_size=SIDE, store_chip_size=SIDE, method=m,
                            num_classes=3 if m == "maml" else None) for m in ("maml", "pretrain")]
    code, stdout, err = _run(capsys, "evaluate", "--scene", PATCH, "--labels", labels, "--runs", *runs,
                             "--shots", "1,2", "--tasks", "3", "--out", tmp_path / "res", *SETTINGS)
    assert code == 0, err
    assert "accuracy on held-out blocks of no-urban.gpkg (15 features" in stdout
    meta = json.loads((tmp_path / "res" / "meta.json").read_text())
    assert meta["n_way"] == 3 and meta["user_region"]["shots_are"] == "support windows per class"
    windows = read_windows(tmp_path / "res" / "windows.npz")
    for task in json.loads(Path(meta["task_files"]["2"]).read_text())["tasks"]:
        assert sorted(windows.labels[task["support"]].tolist()) == sorted(task["classes"] * 2)
        assert set(windows.labels[task["query"]].tolist()) == set(task["classes"])  # every class in the query
    results = pd.read_csv(tmp_path / "res" / "results.csv")
    assert len(results) == 2 * 3 * 8 and results.macro_f1.between(0, 1).all()


def _bad(tmp_path: Path, case: str) -> tuple[list, str]:
    """Arguments of one bad `evaluate --labels` call and the message it must give."""
    seg = make_checkpoint(tmp_path / "seg.pt", bands=tuple(BANDS), class_names=CLASS_NAMES, colors=None,
                          chip_size=SIDE, store_chip_size=SIDE)
    args: list = ["--scene", PATCH, "--labels", EXAMPLE, "--runs", seg]
    if case == "scarce class":
        cls = make_checkpoint(tmp_path / "cls.pt", kind="classification", bands=tuple(BANDS), class_names=CLASS_NAMES,
                              colors=None, chip_size=SIDE, store_chip_size=SIDE, num_classes=4)
        return (["--scene", PATCH, "--labels", EXAMPLE, "--runs", cls, "--shots", "1"],
                "class 'Urban/Built-up' is the majority class of 1 of them; 1-shot tasks need 2 (1 support, 1 query)")
    if case == "one block":
        return args + ["--block", 1000], ("in 1 spatial block of 1000 px (0 more left out: meeting features of "
                                          "two blocks); holding out a query needs at least 2 blocks")
    if case == "too few windows":
        return args + ["--shots", "30"], ("30-shot tasks need 30 support windows at least 16 px from the held-out "
                                          "blocks; the best of 200 draws left")
    if case == "unknown class":
        other = make_checkpoint(tmp_path / "other.pt", kind="classification", bands=tuple(BANDS),
                                class_names=["Forest", "Cropland", "Grassland", "Water"], colors=None,
                                chip_size=SIDE, store_chip_size=SIDE, num_classes=4)
        return args[:-1] + [other], "classes 'Urban/Built-up' in field 'class' are not classes of the checkpoint"
    if case == "no CRS":
        plain = write_geotiff(tmp_path / "plain.tif", reflectance(class_field(120, 120), 4), crs=None,
                              descriptions=BANDS)
        return ["--scene", plain] + args[2:], "the scene has no CRS"
    if case == "empty layer":
        empty = tmp_path / "empty.gpkg"
        gpd.GeoDataFrame({"class": []}, geometry=[], crs="EPSG:4326").to_file(empty, driver="GPKG")
        return args[:3] + [empty] + args[4:], "the layer has no features"
    if case == "no scene":
        return args[2:], "--labels needs --scene"
    if case == "split":
        return args + ["--split", "val"], "--split goes with --data"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["scarce class", "one block", "too few windows", "unknown class", "no CRS",
                                  "empty layer", "no scene", "split"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    args, message = _bad(tmp_path, case)
    code, _, err = _run(capsys, "evaluate", *args, "--out", tmp_path / "results" / "res")
    *bars, last = err.strip().splitlines()  # the windows' progress bar, then one line
    assert code == 2 and last.startswith("landmeta evaluate: error:") and message in last, err
    assert all(bar.startswith("label windows:") for bar in bars) and not (tmp_path / "results" / "res").exists()


def test_label_options_need_labels(tmp_path, capsys):
    code, _, err = _run(capsys, "evaluate", "--data", tmp_path, "--runs", tmp_path, "--out", tmp_path / "r",
                        "--block", 64)
    assert code == 2 and "--block goes with --labels, not --data" in err
