"""`landmeta evaluate` on small chip stores: every method on the same saved tasks, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from store_factory import make_store
from torch import nn

from landmeta.cli import main
from landmeta.config import config_to_dict, load_config
from landmeta.data.store import ChipStore
from landmeta.data.tasks import load_or_create_tasks
from landmeta.errors import CheckpointError, DataError, ModelError, OutputExistsError
from landmeta.evaluation.baselines import forest_samples, head_inputs, nearest_prototype, random_forest
from landmeta.evaluation.methods import tuning_grid
from landmeta.evaluation.protocol import evaluate
from landmeta.evaluation.results import read_examples, read_results_csv, write_results_csv
from landmeta.evaluation.runner import EvalSetup, Evaluator
from landmeta.evaluation.stats import mean_ci
from landmeta.evaluation.tuning import choose_methods
from landmeta.meta.adapt import adapt, set_norm_stats
from landmeta.meta.checkpoint import Checkpoint
from landmeta.models import build_model

FAST = ["eval.finetune_steps=[3]", "eval.finetune_lrs=[0.01]", "eval.finetune_layers=[all]", "eval.rf_trees=10",
        "eval.bootstrap=500", "eval.examples=1", "meta.test_inner_steps=2", "task.q_query=2"]


def write_checkpoint(path: Path, store: ChipStore, method: str, kind: str, **changes) -> Path:
    """A checkpoint of an untrained model in the documented format (what `landmeta train` writes at step 0)."""
    config = load_config("tiny.yaml" if kind == "classification" else "tiny-seg.yaml", [f"meta.method={method}"])
    num_classes = config.task.n_way if kind == "classification" and method != "pretrain" else store.num_classes
    torch.manual_seed(0)
    model = build_model(config.model, len(store.bands), num_classes, kind)
    Checkpoint(method=method, kind=kind, config=config, model_state=model.state_dict(), bands=tuple(store.bands),
               class_names=tuple(store.class_names), class_colors=None, norm_mean=tuple(store.mean.tolist()),
               norm_std=tuple(store.std.tolist()), chip_size=store.chip_size, store_chip_size=store.chip_size,
               in_channels=len(store.bands), num_classes=num_classes, step=0,
               provenance={"made_by": "tests/test_evaluate.py"}).replace(**changes).save(path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    store_path = make_store(root / "store", chip_size=32)
    store = ChipStore.open(store_path)
    runs = [write_checkpoint(root / "runs" / m / "best.pt", store, m, "classification") for m in ("maml", "pretrain")]
    return root, store_path, store, [r.parent for r in runs]


@pytest.fixture(scope="module")
def evaluated(setup):
    root, store_path, _, runs = setup
    config = load_config("tiny.yaml", FAST)
    return evaluate(store_path, runs, root / "results", config, shots=[0, 1, 2], tasks=3)


def test_every_method_on_the_same_tasks(evaluated, setup):
    _, store_path, _, _ = setup
    results = pd.read_csv(evaluated / "results.csv")
    meta = json.loads((evaluated / "meta.json").read_text())
    methods = ["maml", "pretrain", "random", "rf", "ncm-maml", "ncm-pretrain", "rff-maml", "rff-pretrain"]
    assert list(meta["methods"]) == methods and meta["reference"] == "maml" and meta["status"] == "complete"
    for shots in (1, 2):
        part = results[results.shots == shots]
        assert sorted(part.method.unique()) == sorted(methods)
        assert (part.groupby("method").task.apply(sorted).apply(tuple) == (0, 1, 2)).all()
        # the tasks scored are those of the saved list, region by region
        saved = json.loads(Path(meta["task_files"][str(shots)]).read_text())["tasks"]
        regions = part[part.method == "maml"].sort_values("task").region.tolist()
        assert regions == [t["region"] for t in saved]
        assert {t["region"] for t in saved} <= set(ChipStore.open(store_path).regions_in("test"))
    assert sorted(results[results.shots == 0].method.unique()) == ["pretrain"]  # only its head allows 0-shot
    assert results[["accuracy", "macro_f1"]].apply(lambda c: c.between(0, 1).all()).all()
    assert meta["tuned"]["pretrain"]["1"]["steps"] == 3 and meta["tuned"]["random"]["2"]["lr"] == 0.01
    val_tasks = load_config("tiny.yaml").task.val_tasks
    assert meta["tuned"]["maml"]["1"]["steps"] is None  # one candidate: meta.test_inner_steps
    for name in methods:  # every method is scored on meta-val, for the choice of method
        assert meta["tuned"][name]["2"]["val_tasks"] == val_tasks and 0 <= meta["tuned"][name]["2"]["val_score"] <= 1


def test_summary_and_tests_follow_results(evaluated):
    results = pd.read_csv(evaluated / "results.csv")
    summary = pd.read_csv(evaluated / "summary.csv")
    row = summary[(summary.method == "rf") & (summary.shots == 2) & (summary.metric == "kappa")].iloc[0]
    mean, half, n = mean_ci(results[(results.method == "rf") & (results.shots == 2)].kappa)
    assert (row["mean"], row["ci"], row["n"]) == pytest.approx((mean, half, n))
    tests = pd.read_csv(evaluated / "tests.csv")
    assert set(tests.method) == {"pretrain", "random", "rf", "ncm-maml", "ncm-pretrain", "rff-maml", "rff-pretrain"}
    assert set(tests.shots) == {1, 2} and (tests.n == 3).all()


def test_examples_saved(evaluated):
    (ex,) = read_examples(evaluated / "examples.npz")
    assert ex["shots"] == 1 and ex["query_rgb"].dtype == np.uint8 and ex["query_rgb"].shape[-1] == 3
    assert set(ex["predictions"]) == {"maml", "pretrain", "random", "rf", "ncm-maml", "ncm-pretrain",
                                      "rff-maml", "rff-pretrain"}
    assert set(np.unique(ex["query_y"])) <= set(ex["classes"])  # global class ids


def test_resume_after_interruption_gives_the_same_table(evaluated, setup, tmp_path):
    root, store_path, _, runs = setup
    out = tmp_path / "results"
    full = (evaluated / "results.csv").read_text()
    out.mkdir()
    (out / "meta.json").write_text((evaluated / "meta.json").read_text())
    lines = full.splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[: len(lines) // 2]) + lines[len(lines) // 2][:7])  # cut mid-row
    evaluate(store_path, runs, out, load_config("tiny.yaml", FAST), shots=[0, 1, 2], tasks=3)
    key = ["shots", "method", "task"]
    before = pd.read_csv(evaluated / "results.csv").sort_values(key).reset_index(drop=True)
    after = pd.read_csv(out / "results.csv").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)


def test_method_chosen_on_meta_val_and_tested_on_test(evaluated):
    meta = json.loads((evaluated / "meta.json").read_text())
    choice = pd.read_csv(evaluated / "choice.csv")
    results = pd.read_csv(evaluated / "results.csv")
    assert list(choice.shots) == [1, 2] and list(meta["choice"]) == ["1", "2"]
    for row in choice.itertuples():
        val = {name: hp[str(row.shots)]["val_score"] for name, hp in meta["tuned"].items()}
        ranked = sorted(val, key=lambda name: -val[name])
        assert (row.method, row.runner_up) == (ranked[0], ranked[1])
        assert row.val_score == pytest.approx(val[row.method])
        at = results[results.shots == row.shots].set_index(["method", "task"]).accuracy
        assert row.mean == pytest.approx(at[row.method].mean())
        assert row.mean_diff == pytest.approx((at[row.method] - at[row.runner_up]).mean())
        assert row.best_here == at.groupby("method").mean().idxmax() and row.n == 3


def test_choose_methods_best_then_runner_up_ties_to_the_first():
    tuned = {"maml": {"1": {"val_score": 0.7, "val_tasks": 8}, "2": {"val_score": 0.5, "val_tasks": 8}},
             "pretrain": {"1": {"val_score": 0.7, "val_tasks": 8}, "2": {"val_score": 0.6, "val_tasks": 8}},
             "random": {"1": {"val_score": None, "val_tasks": 0}, "2": {"val_score": 0.9, "val_tasks": 8}},
             "rf": {"1": {"val_score": 0.2, "val_tasks": 8}}}
    choice = choose_methods(tuned, [1, 2, 5])
    assert choice == {"1": {"method": "maml", "val_score": 0.7, "runner_up": "pretrain",
                            "runner_up_val_score": 0.7, "val_tasks": 8},
                      "2": {"method": "random", "val_score": 0.9, "runner_up": "pretrain",
                            "runner_up_val_score": 0.6, "val_tasks": 8}}  # 5-shot: nothing scored


def test_resume_scores_on_meta_val_only_what_is_missing(evaluated, setup, tmp_path):
    """A folder evaluated before every method was scored on meta-val (no rf entry) and before
    `eval.tta` existed is resumed: rf's meta-val score is added, the other tuned settings kept."""
    root, store_path, _, runs = setup
    out = tmp_path / "results"
    out.mkdir()
    meta = json.loads((evaluated / "meta.json").read_text())
    old = {name: hp for name, hp in meta["tuned"].items() if name != "rf"} | {"pretrain": {
        s: hp | {"val_score": 0.123} for s, hp in meta["tuned"]["pretrain"].items()}}
    config = dict(meta["config"], eval={k: v for k, v in meta["config"]["eval"].items() if k != "tta"})
    (out / "meta.json").write_text(json.dumps(meta | {"tuned": old, "choice": {}, "config": config}))  # before tta
    evaluate(store_path, runs, out, load_config("tiny.yaml", FAST), shots=[0, 1, 2], tasks=3)
    now = json.loads((out / "meta.json").read_text())
    assert now["tuned"]["rf"] == meta["tuned"]["rf"] and now["tuned"]["pretrain"]["1"]["val_score"] == 0.123
    assert set(now["choice"]) == {"1", "2"}


def test_resume_scores_only_the_methods_an_older_folder_lacks(evaluated, setup, tmp_path):
    """A folder written before the rff baselines existed: resuming it scores them on meta-val and on
    every task, and leaves the rows and tuned settings already there as they were."""
    root, store_path, _, runs = setup
    out = tmp_path / "results"
    out.mkdir()
    meta = json.loads((evaluated / "meta.json").read_text())
    older = {key: {n: v for n, v in meta[key].items() if not n.startswith("rff-")} for key in ("methods", "tuned")}
    (out / "meta.json").write_text(json.dumps(meta | older | {"choice": {}}))
    full = read_results_csv(evaluated / "results.csv", "classification")
    write_results_csv(out / "results.csv", full[~full.method.str.startswith("rff-")], "classification")
    kept = (out / "results.csv").read_text()
    evaluate(store_path, runs, out, load_config("tiny.yaml", FAST), shots=[0, 1, 2], tasks=3)
    now = json.loads((out / "meta.json").read_text())
    assert now["tuned"] == meta["tuned"] and list(now["methods"]) == list(meta["methods"])
    assert (out / "results.csv").read_text().startswith(kept)  # only rows appended
    key = ["shots", "method", "task"]
    after = read_results_csv(out / "results.csv", "classification").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(full.sort_values(key).reset_index(drop=True), after)
    assert {"rff-maml", "rff-pretrain"} <= set(pd.read_csv(out / "summary.csv").method)


def test_results_of_another_split_are_refused(evaluated, setup):
    root, store_path, _, runs = setup
    with pytest.raises(DataError, match="another evaluation .*split"):
        evaluate(store_path, runs, evaluated, load_config("tiny.yaml", FAST), split="val", shots=[1], tasks=3)


def test_foreign_output_folder_is_left_alone(setup, tmp_path):
    _, store_path, _, runs = setup
    (tmp_path / "results.csv").write_text("a user's own table\n")
    with pytest.raises(OutputExistsError, match="not an evaluation's results folder"):
        evaluate(store_path, runs, tmp_path, load_config("tiny.yaml", FAST), shots=[1], tasks=2)
    assert (tmp_path / "results.csv").read_text() == "a user's own table\n"


def test_bad_checkpoints(setup, tmp_path):
    root, store_path, store, runs = setup
    config = load_config("tiny.yaml", FAST)
    with pytest.raises(CheckpointError, match="no checkpoint or run folder"):
        evaluate(store_path, [tmp_path / "missing"], tmp_path / "r", config, shots=[1], tasks=2)
    foreign = tmp_path / "foreign.pt"
    foreign.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="foreign.pt: not a readable checkpoint"):
        evaluate(store_path, [foreign], tmp_path / "r", config, shots=[1], tasks=2)
    other = write_checkpoint(tmp_path / "other.pt", store, "maml", "classification",
                             class_names=tuple(f"c{i}" for i in range(store.num_classes)))
    with pytest.raises(CheckpointError, match="other.pt: classes .* do not match"):
        evaluate(store_path, [other], tmp_path / "r", config, shots=[1], tasks=2)
    with pytest.raises(CheckpointError, match="maml/best.pt: a 4-way classifier; the tasks are 3-way"):
        evaluate(store_path, runs, tmp_path / "r", load_config("tiny.yaml", FAST + ["task.n_way=3"]), shots=[1], tasks=2)
    assert not (tmp_path / "r" / "results.csv").exists()


def test_cli_bad_input_is_one_line_exit_2(setup, tmp_path, capsys):
    _, store_path, _, _ = setup
    code = main(["evaluate", "--data", str(store_path), "--runs", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nope: no checkpoint or run folder" in err[0]


def test_cli_evaluate_segmentation(tmp_path, capsys):
    store_path = make_store(tmp_path / "store", chip_size=32, parents_per_region=6)
    store = ChipStore.open(store_path)
    runs = [write_checkpoint(tmp_path / f"{m}.pt", store, m, "segmentation") for m in ("maml", "pretrain")]
    code = main(["evaluate", "--data", str(store_path), "--runs", *map(str, runs), "--shots", "0,1",
                 "--tasks", "2", "--out", str(tmp_path / "res"), *sum((["--set", s] for s in FAST), []),
                 "--set", "task.q_query=1"])
    assert code == 0
    assert "| maml |" in capsys.readouterr().out
    results = pd.read_csv(tmp_path / "res" / "results.csv")
    # a segmentation head covering the store's classes allows 0-shot for both networks
    assert sorted(results[results.shots == 0].method.unique()) == ["maml", "pretrain"]
    assert results.miou.between(0, 1).all() and len(results[results.shots == 1]) == 2 * 8


def test_random_forest_and_prototypes_hand_examples():
    # two well-separated spectral classes: the forest and the prototypes recover them
    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.normal(0, .1, (3, 2, 4, 4)), rng.normal(5, .1, (3, 2, 4, 4))]).astype(np.float32)
    ys = np.array([0, 0, 0, 1, 1, 1])
    xq = np.stack([np.full((2, 4, 4), 5.0), np.zeros((2, 4, 4))]).astype(np.float32)
    assert random_forest("classification", xs, ys, xq, trees=10).tolist() == [1, 0]
    masks = np.where(xs[:, 0] > 2.5, 4, 1).astype(np.uint8)
    masks[0, 0, 0] = 255
    assert (random_forest("segmentation", xs, masks, xq, trees=10) == np.array([4, 1])[:, None, None]).all()
    protos = nearest_prototype(torch.tensor([[0., 0.], [2., 0.], [10., 10.]]), torch.tensor([0, 0, 1]),
                               torch.tensor([[1., 1.], [6., 6.]]))
    assert protos.tolist() == [0, 1]  # prototypes (1, 0) and (10, 10)


def test_random_forest_on_features_hand_examples():
    """The same band values everywhere, the features tell the classes apart: the forest given them does."""
    rng = np.random.default_rng(0)
    xs = np.ones((6, 2, 4, 4), dtype=np.float32)
    ys = np.array([0, 0, 0, 1, 1, 1])
    fs = np.repeat([[0.0], [5.0]], 3, axis=0).astype(np.float32)
    xq = np.ones((4, 2, 4, 4), dtype=np.float32)
    fq = np.array([[5.0], [0.0], [0.0], [5.0]], dtype=np.float32)
    assert forest_samples("classification", xs, fs).shape == (6, 2 * 2 + 1)
    assert random_forest("classification", xs, ys, xq, trees=10, features=(fs, fq)).tolist() == [1, 0, 0, 1]
    masks = np.where(rng.random((6, 4, 4)) < 0.5, 3, 1).astype(np.uint8)
    masks[0, 0, 0] = 255
    pixel_fs = np.where(masks == 3, 5.0, 0.0)[:, None].astype(np.float32)  # (n, 1, H, W)
    pixel_fq = np.where(rng.random((4, 1, 4, 4)) < 0.5, 5.0, 0.0).astype(np.float32)
    assert forest_samples("segmentation", xs, pixel_fs).shape == (6 * 16, 2 + 1)
    pred = random_forest("segmentation", xs, masks, xq, trees=10, features=(pixel_fs, pixel_fq))
    assert pred.shape == (4, 4, 4) and (pred == np.where(pixel_fq[:, 0] > 2.5, 3, 1)).all()
    with pytest.raises(ModelError, match="do not match"):
        random_forest("segmentation", xs, masks, xq, features=(pixel_fs[:, :, :2], pixel_fq))


@pytest.mark.parametrize("kind", ["classification", "segmentation"])
def test_forest_on_a_network_features_predicts_each_query(kind, tmp_path):
    """rff-<run>: the forest on band values plus the run's head inputs, a prediction per query chip
    (classification) or pixel (segmentation) that the features change."""
    store_path = make_store(tmp_path / "store", chip_size=32)
    store = ChipStore.open(store_path)
    runs = [str(write_checkpoint(tmp_path / f"{m}.pt", store, m, kind)) for m in ("maml", "pretrain")]
    config = load_config("tiny.yaml" if kind == "classification" else "tiny-seg.yaml", FAST)
    ev = Evaluator(EvalSetup(str(store_path), "test", kind, runs, config_to_dict(config), 0))
    methods = {m.name: m for m in ev.methods}
    assert methods["rff-pretrain"].family == "rff" and tuning_grid(config, "rff") == [{}]
    changed = []
    for task in load_or_create_tasks(ev.store, "test", kind, 4, 2, 2, 3, 0):
        xs, ys, xq, yq = ev.tensors(task)
        rf = ev.predict(methods["rf"], task, xs, ys, xq, 0)
        for name in ("rff-maml", "rff-pretrain"):
            pred = ev.predict(methods[name], task, xs, ys, xq, 0)
            assert pred.shape == yq.shape == rf.shape
            assert set(np.unique(pred)) <= set(np.unique(ys.numpy())) - {255}  # classes labelled in the support
            assert np.array_equal(pred, ev.predict(methods[name], task, xs, ys, xq, 0))  # seeded
            changed.append(not np.array_equal(pred, rf))
    assert any(changed)


def test_head_inputs_are_the_features_the_head_sees():
    cfg = load_config("tiny-seg.yaml").model
    unet = build_model(cfg, 3, 5, "segmentation").eval()
    feats = head_inputs(unet, torch.zeros(2, 3, 32, 32))
    assert feats.shape == (2, cfg.decoder_channels[-1], 32, 32)
    clf = build_model(load_config("tiny.yaml").model, 3, 4, "classification").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(clf.head(head_inputs(clf, x)), clf(x))


@pytest.mark.slow
def test_evaluate_on_a_store_from_a_folder_of_own_tiles(tmp_path):
    """The same code path on `landmeta preprocess folder` output: PNG tiles and id masks, no geography."""
    from PIL import Image

    from landmeta.data.preprocess import PreprocessOptions, preprocess

    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(3, 3))
    regions = [f"farm{i}" for i in range(6)]
    for region in regions:
        for t in range(6):
            mask = np.zeros((32, 32), np.uint8)
            mask[:, int(rng.integers(8, 24)):] = 1 + t % 2
            image = np.clip(colours[mask] + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
            (tmp_path / "raw" / region / "images").mkdir(parents=True, exist_ok=True)
            (tmp_path / "raw" / region / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(tmp_path / "raw" / region / "images" / f"t{t}.png")
            Image.fromarray(mask).save(tmp_path / "raw" / region / "masks" / f"t{t}.png")
    (tmp_path / "classes.txt").write_text("meadow,0\nfield,1\nwater,2\n")
    splits = ["train"] * 3 + ["val", "test", "test"]
    (tmp_path / "split.txt").write_text("".join(f"{r},{s}\n" for r, s in zip(regions, splits)))
    store_path = preprocess("folder", tmp_path / "raw", tmp_path / "store",
                            PreprocessOptions(class_map=tmp_path / "classes.txt", split_file=tmp_path / "split.txt"))
    store = ChipStore.open(store_path)
    assert "segmentation" in store.kinds
    runs = [write_checkpoint(tmp_path / f"{m}.pt", store, m, "segmentation") for m in ("maml", "pretrain")]
    out = evaluate(store_path, runs, tmp_path / "res", load_config("tiny-seg.yaml", FAST + ["task.q_query=1"]),
                   shots=[1], tasks=2)
    results = pd.read_csv(out / "results.csv")
    assert set(results.region) <= {"farm4", "farm5"} and len(results) == 2 * 8
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    assert "No map: the store has no region locations" in (tmp_path / "report" / "index.md").read_text()


def test_paper_presets_load_with_the_papers_shots():
    cls, seg, deepglobe = (load_config(f"paper-{name}") for name in ("sen12ms-cls", "sen12ms-seg", "deepglobe"))
    assert (cls.task.kind, cls.task.n_way, cls.data.chip_size) == ("classification", 4, 128)
    assert {1, 2, 5, 10} <= set(cls.eval.shots)
    assert seg.task.kind == "segmentation" and {1, 5} <= set(seg.eval.shots)
    assert deepglobe.task.kind == "segmentation" and {1, 2, 3, 4} <= set(deepglobe.eval.shots)
    assert deepglobe.task.q_query == 8


@pytest.mark.slow
def test_parallel_workers_give_the_same_results(evaluated, setup, tmp_path):
    root, store_path, _, runs = setup
    out = evaluate(store_path, runs, tmp_path / "res", load_config("tiny.yaml", FAST), shots=[0, 1, 2], tasks=3,
                   workers=2)
    key = ["shots", "method", "task"]
    serial = pd.read_csv(evaluated / "results.csv").sort_values(key).reset_index(drop=True)
    parallel = pd.read_csv(out / "results.csv").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(serial, parallel)


def test_no_fine_tuning_is_one_candidate_of_the_grid():
    config = load_config("tiny.yaml", ["eval.finetune_steps=[0,5]", "eval.finetune_lrs=[0.001,0.01]",
                                       "eval.finetune_layers=[all,head]"])
    grid = tuning_grid(config)
    assert len(grid) == 1 + 2 * 2 and [hp["steps"] for hp in grid] == [0, 5, 5, 5, 5]
    assert grid[0] == {"steps": 0, "lr": None, "layers": None}
    # random init is always trained, in all its layers
    assert tuning_grid(config, "random") == [{"steps": 5, "lr": lr, "layers": "all"} for lr in (0.001, 0.01)]


def test_zero_steps_with_trained_statistics_is_the_zero_shot_prediction(setup):
    root, store_path, store, runs = setup
    config = load_config("tiny.yaml", FAST + ["eval.norm_stats=trained"])
    ev = Evaluator(EvalSetup(str(store_path), "test", "classification",
                             [str(r / "best.pt") for r in runs], config_to_dict(config), 0))
    pretrain = next(m for m in ev.methods if m.name == "pretrain")
    task = load_or_create_tasks(store, "test", "classification", 4, 2, 2, 1, 0)[0]
    xs, ys, xq, _ = ev.tensors(task)
    no_steps = ev.predict(pretrain, task, xs, ys, xq, 0, {"steps": 0, "lr": 0.01, "layers": "all"})
    zero_shot = ev.predict(pretrain, task, xs[:0], ys[:0], xq, 0)
    assert np.array_equal(no_steps, zero_shot)
    # with the support's statistics the same weights predict differently (the statistics are the change)
    ev.config.eval.norm_stats = "support"
    assert not np.array_equal(ev.predict(pretrain, task, xs, ys, xq, 0, {"steps": 0}), zero_shot)


def test_test_time_symmetries_leave_the_forest_and_class_means_alone(setup):
    _, store_path, _, runs = setup
    config = load_config("tiny.yaml", FAST)
    ev = Evaluator(EvalSetup(str(store_path), "test", "classification", [str(r / "best.pt") for r in runs],
                             config_to_dict(config), 0))
    task = load_or_create_tasks(ev.store, "test", "classification", 4, 1, 2, 3, 0)[0]
    xs, ys, xq, _ = ev.tensors(task)
    plain = {m.name: ev.predict(m, task, xs, ys, xq, 0, {"steps": 2}) for m in ev.methods}
    ev.config.eval.tta = True
    turned = {m.name: ev.predict(m, task, xs, ys, xq, 0, {"steps": 2}) for m in ev.methods}
    assert all(np.array_equal(plain[name], turned[name]) for name in ("rf", "ncm-maml", "rff-maml"))
    assert all(turned[name].shape == plain[name].shape for name in plain)


def test_evaluation_tunes_over_the_zero_step_candidate(setup, tmp_path):
    _, store_path, _, runs = setup
    config = load_config("tiny.yaml", FAST + ["eval.finetune_steps=[0,3]", "eval.adapt_steps=[0,2]"])
    out = evaluate(store_path, runs, tmp_path / "res", config, split="test", shots=[1], tasks=2)
    tuned = json.loads((out / "meta.json").read_text())["tuned"]
    # MAML's test-time steps are chosen on meta-val too
    assert tuned["maml"]["1"]["steps"] in (0, 2) and tuned["maml"]["1"]["val_tasks"] == config.task.val_tasks
    assert tuned["pretrain"]["1"]["steps"] in (0, 3) and tuned["pretrain"]["1"]["val_tasks"] == config.task.val_tasks
    assert {k: tuned["random"]["1"][k] for k in ("steps", "lr", "layers")} == {"steps": 3, "lr": 0.01, "layers": "all"}


def _norm_net() -> nn.Module:
    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
    net[1].running_mean.fill_(2.0)
    net[1].running_var.fill_(4.0)
    return net


@pytest.mark.parametrize("policy", ["support", "trained", "blend"])
def test_norm_statistics_policies(policy):
    torch.manual_seed(0)
    net = _norm_net()
    x = torch.randn(5, 3, 8, 8) * 3 + 1
    with torch.no_grad():
        h = net[0](x)
    set_norm_stats(net, x, policy)
    mean, var = h.mean((0, 2, 3)), h.var((0, 2, 3))  # unbiased, as BatchNorm keeps it
    weight = {"support": 1.0, "trained": 0.0, "blend": 0.5}[policy]
    torch.testing.assert_close(net[1].running_mean, weight * mean + (1 - weight) * 2.0)
    torch.testing.assert_close(net[1].running_var, weight * var + (1 - weight) * 4.0)
    assert net[1].momentum == 0.1  # restored after the re-estimation pass


def test_unknown_norm_policy_is_refused():
    with pytest.raises(ModelError, match="BatchNorm statistics policy"):
        set_norm_stats(_norm_net(), torch.zeros(1, 3, 2, 2), "median")


def test_adapt_follows_the_policy_and_random_init_uses_the_support(setup):
    _, _, store, runs = setup
    ckpt = Checkpoint.load(runs[1] / "best.pt")
    model = ckpt.model()
    xs, ys = torch.randn(4, len(store.bands), 32, 32) + 3, torch.arange(4)
    trained = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    kept = adapt(ckpt, model, xs, ys, steps=0, classes=[0, 1, 2, 3], norm_stats="trained").state_dict()
    assert all(torch.equal(kept[k], v) for k, v in trained.items())
    moved = adapt(ckpt, model, xs, ys, steps=0, classes=[0, 1, 2, 3], norm_stats="support").state_dict()
    assert not any(torch.equal(moved[k], v) for k, v in trained.items())
    rand = adapt(ckpt.replace(method="random"), model, xs, ys, steps=0, classes=[0, 1, 2, 3],
                 norm_stats="trained").state_dict()  # an untrained network has no statistics of its own
    assert all(torch.equal(rand[k], moved[k]) for k in trained)
