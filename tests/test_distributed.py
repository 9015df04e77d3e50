"""Multi-process meta-training (torch.distributed, gloo on CPU): parity with one process, rank 0
writes alone, a killed rank ends the run with the last checkpoint intact, resume with another world size."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from landmeta.cli import main
from landmeta.meta.checkpoint import Checkpoint
from landmeta.meta.distributed import World, my_share

sys.path.insert(0, str(Path(__file__).parent))
from store_factory import make_store  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# No normalisation layer: BatchNorm running statistics are averaged across ranks (not bit-equal to one
# process), and a convolution bias before BatchNorm has a zero gradient that Adam turns rounding noise into.
SETTINGS = ["--set", "model.norm=none", "--set", "train.val_every=100",
            "--set", "train.ckpt_every=2"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("dist") / "store")


def args(store: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return ["train", "--config", "tiny", "--data", str(store), "--out", str(out), "--no-progress",
            *SETTINGS, "--set", f"meta.steps={steps}", *extra]


def launch(store: Path, out: Path, steps: int, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "landmeta", *args(store, out, steps, "--nproc", "2", *extra)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def params(path: Path) -> dict[str, torch.Tensor]:
    return Checkpoint.load(path).model_state


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=2e-4, msg=key)


def test_task_split_is_by_global_index() -> None:
    assert [list(my_share(6, World(r, 3))) for r in range(3)] == [[0, 3], [1, 4], [2, 5]]
    assert list(my_share(4, World())) == [0, 1, 2, 3]


def test_batch_must_divide_by_process_count(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(args(store, tmp_path / "r", 2, "--nproc", "3")) == 2
    assert "meta.meta_batch=2 must divide by the number of processes (3)" in capsys.readouterr().err
    assert main(args(store, tmp_path / "r", 2, "--nproc", "2", "--method", "pretrain",
                     "--set", "train.batch_size=15")) == 2
    assert "train.batch_size=15 must divide by the number of processes (2)" in capsys.readouterr().err
    assert main(args(store, tmp_path / "r", 2, "--nproc", "0")) == 2
    assert "--nproc must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_rank_death_resume_and_parity_with_one_process(store: Path, tmp_path: Path,
                                                       capfd: pytest.CaptureFixture) -> None:
    steps, run, reference = 16, tmp_path / "run", tmp_path / "reference"
    # 1. A rank killed mid-run ends the whole run with a clear message; last.pt stays readable.
    proc = launch(store, run, steps)
    deadline = time.time() + 90
    while not (run / "last.pt").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.02)
    os.kill(_descendants(proc.pid)[-1], signal.SIGKILL)  # a training process, not the launcher
    assert main(args(store, reference, steps)) == 0  # the single-process reference
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "a training process failed" in err and "is intact, continue with --resume" in err
    killed_at = Checkpoint.load(run / "last.pt").step
    assert 2 <= killed_at < steps and Checkpoint.load(run / "last.pt").training["processes"] == 2

    # 2. Resumed with two processes, and (a copy) with one: both end where the single-process run ends.
    shutil.copytree(run, tmp_path / "one")
    capfd.readouterr()
    assert in_two_processes(args(store, run, steps, "--resume")) == [0, 0]
    out = capfd.readouterr().out
    assert out.count(f"done at step {steps}") == 1  # printed by rank 0 only
    assert main(args(store, tmp_path / "one", steps, "--resume")) == 0  # another world size
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in reference.iterdir())
    expected = pd.read_csv(reference / "metrics.csv")
    for folder in (run, tmp_path / "one"):
        metrics = pd.read_csv(folder / "metrics.csv")
        assert list(metrics["step"]) == list(range(1, steps + 1))  # one row per step: rank 0 wrote alone
        # The first steps agree to rounding; Adam then amplifies the rounding of a sum taken in another order.
        pd.testing.assert_series_equal(metrics["loss"], expected["loss"], rtol=1e-4)
        assert_close(params(reference / "last.pt"), params(folder / "last.pt"))


def in_two_processes(argv: list[str]) -> list[int]:
    """`landmeta <argv>` in two processes forked from this one (modules already imported), joined
    as torchrun would join them (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); their exit codes."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_rank, args=(rank, port, argv)) for rank in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    return [proc.exitcode for proc in procs]


def _rank(rank: int, port: int, argv: list[str]) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    code = main(argv)
    sys.stdout.flush()
    os._exit(code)


def _descendants(pid: int) -> list[int]:
    """Process ids below `pid` (depth first, so the training workers come last)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        found += [int(c) for c in children]
        todo += [int(c) for c in children]
    return found


def test_ctrl_c_saves_before_stopping(store: Path, tmp_path: Path) -> None:
    """Ctrl-C on `--nproc 2` (SIGINT to the launcher's process group, as a terminal sends it): the
    training processes finish their step, save last.pt at the last logged step, and the launcher
    exits 130 with one line; torchrun reports no failure."""
    run = tmp_path / "run"
    proc = launch(store, run, 1000)
    deadline = time.time() + 90
    while not (run / "last.pt").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.02)
    time.sleep(1)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; the last checkpoint" in err and "Traceback" not in err
    logged = pd.read_csv(run / "metrics.csv")["step"]
    saved = Checkpoint.load(run / "last.pt").step
    assert saved == logged.iloc[-1] < 1000
    assert f"interrupted at step {saved}" in out
