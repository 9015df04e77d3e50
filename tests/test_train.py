"""`landmeta train`: run folder, methods, exact resume after SIGKILL, SIGINT, bad input, NaN."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from landmeta.cli import main
from landmeta.config import load_config
from landmeta.data.store import ChipStore
from landmeta.errors import CheckpointError
from landmeta.meta.adapt import adapt
from landmeta.meta.checkpoint import Checkpoint
from landmeta.meta.run_setup import random_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from store_factory import make_store  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("train") / "store")


@pytest.fixture(scope="module")
def tiny_run(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "--config", "tiny", "--data", str(store), "--out", str(out), "--no-progress"]) == 0
    return out


def train_args(store: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--config", "tiny", "--data", str(store), "--out", str(out), "--no-progress", *extra]


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_run_folder_contents(tiny_run: Path, store: Path) -> None:
    for name in ("config.yaml", "run.json", "metrics.csv", "best.pt", "last.pt"):
        assert (tiny_run / name).is_file(), name
    metrics = pd.read_csv(tiny_run / "metrics.csv")
    assert list(metrics["step"]) == [1, 2, 3, 4]
    assert metrics["val_metric"].notna().sum() == 2  # val_every 2
    assert metrics["loss"].notna().all() and metrics["train_metric"].between(0, 1).all()
    assert load_config(tiny_run / "config.yaml").meta.steps == 4
    last, best = Checkpoint.load(tiny_run / "last.pt"), Checkpoint.load(tiny_run / "best.pt")
    assert last.step == 4 and best.training["best_val"] == metrics["val_metric"].max()
    assert last.method == "maml" and last.num_classes == 4 and list(last.bands) == ChipStore.open(store).bands
    model = best.model()
    assert not model.training and model(torch.zeros(2, last.in_channels, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize("method,extra", [
    ("metasgd", []),
    ("anil", ["--set", "meta.inner_lr_mode=lslr"]),
    ("pretrain", []),
    ("maml", ["--set", "meta.class_head=global", "--set", "meta.inner_lr_mode=lslr"]),
])
def test_methods_train_and_adapt(method: str, extra: list[str], store: Path, tmp_path: Path) -> None:
    out = tmp_path / method
    assert main(train_args(store, out, "--method", method, "--set", "meta.steps=2", *extra)) == 0
    ckpt = Checkpoint.load(out / "last.pt")
    assert ckpt.method == method
    assert (ckpt.inner_lrs is None) == (method == "pretrain")
    if method == "pretrain" or "meta.class_head=global" in extra:
        assert ckpt.num_classes == ChipStore.open(store).num_classes  # one output per store class
    model = ckpt.model()
    x, y = torch.randn(4, ckpt.in_channels, 32, 32), torch.arange(4)
    adapted = adapt(ckpt, model, x, y, classes=(0, 2, 3, 5))
    assert adapted(x).shape == (4, 4)


def test_segmentation_unet_trains(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg"
    assert main(["train", "--config", "tiny-seg", "--data", str(store), "--out", str(out), "--no-progress",
                 "--set", "meta.steps=2"]) == 0
    ckpt = Checkpoint.load(out / "best.pt")
    assert ckpt.kind == "segmentation" and 0 <= ckpt.training["best_val"] <= 1
    assert ckpt.model()(torch.zeros(1, ckpt.in_channels, 32, 32)).shape[1] == ckpt.num_classes


def test_random_checkpoint_is_untrained_init(store: Path) -> None:
    config = load_config("tiny")
    a, b = random_checkpoint(config, ChipStore.open(store)), random_checkpoint(config, ChipStore.open(store))
    assert a.method == "random" and a.step == 0 and same_state(a.model_state, b.model_state)


def _start(store: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "landmeta", *train_args(store, out, *extra)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(proc: subprocess.Popen, path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)


LONG = ["--set", "meta.steps=16", "--set", "train.ckpt_every=1", "--set", "train.val_every=8"]


@pytest.mark.slow
def test_resume_after_sigkill_ends_with_same_weights(store: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    assert main(train_args(store, reference, *LONG)) == 0
    killed = tmp_path / "killed"
    proc = _start(store, killed, *LONG)
    _wait_for_checkpoint(proc, killed / "last.pt")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = Checkpoint.load(killed / "last.pt").step
    assert stopped_at < 16, "the run ended before it could be killed"
    assert main(["train", "--data", str(store), "--out", str(killed), "--resume", "--no-progress"]) == 0
    a, b = Checkpoint.load(reference / "last.pt"), Checkpoint.load(killed / "last.pt")
    assert same_state(a.model_state, b.model_state)
    assert same_state(a.inner_lrs or {}, b.inner_lrs or {})
    ref_metrics, res_metrics = pd.read_csv(reference / "metrics.csv"), pd.read_csv(killed / "metrics.csv")
    pd.testing.assert_frame_equal(ref_metrics.drop(columns="seconds"), res_metrics.drop(columns="seconds"))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_and_exits_cleanly(signum: int, store: Path, tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    proc = _start(store, out, *LONG)
    _wait_for_checkpoint(proc, out / "last.pt")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    ckpt = Checkpoint.load(out / "last.pt")
    if ckpt.step < 16:  # the signal arrived while training
        assert proc.returncode == 130
        assert len(pd.read_csv(out / "metrics.csv")) == ckpt.step
    assert "Traceback" not in err


def test_bad_bands_and_class_count_exit_2(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(train_args(store, tmp_path / "a", "--set", "data.bands=[B02, XX]")) == 2
    assert "XX" in capsys.readouterr().err
    assert main(train_args(store, tmp_path / "b", "--set", "task.n_way=9")) == 2
    err = capsys.readouterr().err
    assert "n_way" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_existing_run_needs_resume(tiny_run: Path, store: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(train_args(store, tiny_run)) == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_with_other_model_or_corrupt_checkpoint_exit_2(tiny_run: Path, store: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    before = (tiny_run / "last.pt").read_bytes()
    assert main(train_args(store, tiny_run, "--resume", "--set", "model.width=32")) == 2
    assert "model.width" in capsys.readouterr().err
    run = tmp_path / "corrupt"
    run.mkdir()
    (run / "last.pt").write_bytes(before[: len(before) // 2])
    (run / "best.pt").write_bytes(before)
    assert main(train_args(store, run, "--resume")) == 2
    err = capsys.readouterr().err
    assert "last.pt" in err and len(err.strip().splitlines()) == 1
    assert (run / "best.pt").read_bytes() == before and (tiny_run / "last.pt").read_bytes() == before


def test_checkpoint_of_other_band_set_is_refused(tiny_run: Path) -> None:
    ckpt = Checkpoint.load(tiny_run / "best.pt")
    with pytest.raises(CheckpointError, match="bands"):
        ckpt.fits("classification", ["B02", "B03", "B04"])
    with pytest.raises(CheckpointError, match="segmentation"):
        ckpt.fits("segmentation", ckpt.bands)
    ckpt.model_state["head.weight"] = torch.zeros(3, 7)  # another head shape
    with pytest.raises(CheckpointError, match="do not fit"):
        ckpt.model()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(store: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "nan"
    code = main(train_args(store, out, "--set", "meta.outer_lr=1.0e+30", "--set", "train.ckpt_every=1",
                           "--set", "train.val_every=100", "--set", "meta.grad_clip=1.0e+30"))
    assert code == 2
    err = capsys.readouterr().err
    assert "became" in err and "last good checkpoint" in err
    step = Checkpoint.load(out / "last.pt").step
    assert 1 <= step < 4 and f"step {step}" in err
    assert len(pd.read_csv(out / "metrics.csv")) == step


def test_init_from_starts_at_another_runs_weights(tiny_run: Path, store: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    """train.init_from (e.g. MAML from a pretraining run): at outer rate 0 the weights stay the source's."""
    source = tiny_run / "best.pt"
    out = tmp_path / "from"
    assert main(train_args(store, out, "--set", "meta.steps=1", "--set", "meta.outer_lr=0",
                           "--set", f"train.init_from={source}")) == 0
    started, given = Checkpoint.load(out / "last.pt").model_state, Checkpoint.load(source).model_state
    params = [k for k in given if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(started[k], given[k]) for k in params)
    seeded = random_checkpoint(load_config("tiny"), ChipStore.open(store)).model_state
    assert not all(torch.equal(seeded[k], given[k]) for k in params)  # not the run's own initialisation
    code = main(train_args(store, tmp_path / "bad", "--set", "model.width=8", "--set", f"train.init_from={source}"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(source) in err[0] and "do not fit" in err[0]


def test_resume_of_a_run_made_before_an_option_existed(tiny_run: Path, store: Path, tmp_path: Path) -> None:
    """A config option added since the run was made counts with its default: resuming is allowed."""
    out = tmp_path / "old"
    assert main(train_args(store, out, "--set", "meta.steps=2")) == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    del ckpt["config"]["meta"]["per_step_bn"]
    torch.save(ckpt, out / "last.pt")
    assert main(train_args(store, out, "--resume", "--set", "meta.steps=3")) == 0
    assert Checkpoint.load(out / "last.pt").step == 3
