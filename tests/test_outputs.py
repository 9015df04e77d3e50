"""Outputs: created with the user's umask, one writer at a time (a second gets one line and exit 2),
a lock left by a dead writer taken over, a failed fresh training run leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from landmeta.cli import main
from landmeta.io import atomic_dir, atomic_write_text, output_lock
from landmeta.meta.checkpoint import Checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from inference_factory import class_field, reflectance, write_geotiff, write_png  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _modes(root: Path) -> dict[str, str]:
    """Permission bits of `root` and everything under it (symlinks left out)."""
    found = {str(root): oct(root.stat().st_mode & 0o777)}
    for path in root.rglob("*"):
        if not path.is_symlink():
            found[str(path)] = oct(path.stat().st_mode & 0o777)
    return found


def _chain(synth_tiny: Path, tmp: Path) -> dict[str, Path]:
    """Every command once, on the tiny synthetic dataset; returns each command's output."""
    outs = {name: tmp / name for name in ("store", "run", "results", "report", "support", "maps")}
    outs["model"] = tmp / "models" / "region.pt"
    assert main(["preprocess", "sen12ms", "--root", str(synth_tiny / "sen12ms"), "--out", str(outs["store"]),
                 "--bands", "B02", "B03", "B04", "B08", "--no-progress"]) == 0
    assert main(["train", "--config", "tiny-seg", "--data", str(outs["store"]), "--out", str(outs["run"]),
                 "--no-progress", "--set", "meta.steps=2", "--set", "train.val_every=2"]) == 0
    assert main(["evaluate", "--data", str(outs["store"]), "--runs", str(outs["run"]), "--out",
                 str(outs["results"]), "--shots", "1", "--tasks", "2", "--workers", "1"]) == 0
    assert main(["report", str(outs["results"]), "--out", str(outs["report"])]) == 0
    cls = class_field(64, 64)
    write_geotiff(outs["support"] / "images" / "t0.tif", reflectance(cls, 4))
    write_png(outs["support"] / "masks" / "t0.png", cls)
    assert main(["adapt", "--checkpoint", str(outs["run"] / "best.pt"), "--support", str(outs["support"]),
                 "--out", str(outs["model"]), "--steps", "1"]) == 0
    scene = write_geotiff(tmp / "scene.tif", reflectance(class_field(64, 64, seed=1), 4))
    assert main(["predict", "--model", str(outs["model"]), "--input", str(scene), "--out", str(outs["maps"]),
                 "--polygons", "--html"]) == 0
    return outs


def test_every_output_follows_the_umask(synth_tiny: Path, tmp_path: Path, umask022: None) -> None:
    outs = _chain(synth_tiny, tmp_path)
    modes: dict[str, str] = {}
    for name in ("store", "run", "results", "report", "maps", "model"):
        modes |= _modes(outs[name])
    wrong = {p: m for p, m in modes.items() if m != (oct(0o755) if Path(p).is_dir() else oct(0o644))}
    assert not wrong, wrong
    kinds = {Path(p).suffix for p in modes}
    assert {".json", ".csv", ".html", ".md", ".yaml", ".pt", ".tif", ".qml", ".gpkg", ".npy", ".png"} <= kinds
    assert not list(tmp_path.glob(".*.lock")) and not list(tmp_path.glob(".*partial*"))


def test_atomic_writes_follow_a_stricter_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        with atomic_dir(tmp_path / "folder") as tmp:
            atomic_write_text(tmp / "b.csv", "x\n")
    finally:
        os.umask(old)
    assert oct((tmp_path / "a.json").stat().st_mode & 0o777) == oct(0o640)
    assert oct((tmp_path / "folder").stat().st_mode & 0o777) == oct(0o750)
    assert oct((tmp_path / "folder" / "b.csv").stat().st_mode & 0o777) == oct(0o640)


def _attempts(synth_tiny: Path, tmp: Path, outs: dict[str, Path]) -> dict[str, tuple[Path, list[str]]]:
    """Each command, with the output it would write, aimed at an output another writer holds."""
    scene = tmp / "scene.tif"
    return {
        "preprocess": (tmp / "s2", ["preprocess", "sen12ms", "--root", str(synth_tiny / "sen12ms"), "--out",
                                    str(tmp / "s2"), "--no-progress"]),
        "train": (outs["run"], ["train", "--config", "tiny-seg", "--data", str(outs["store"]), "--out",
                                str(outs["run"]), "--no-progress", "--resume", "--set", "meta.steps=3"]),
        "evaluate": (outs["results"], ["evaluate", "--data", str(outs["store"]), "--runs", str(outs["run"]),
                                       "--out", str(outs["results"]), "--shots", "1", "--tasks", "2",
                                       "--workers", "1"]),
        "report": (outs["report"], ["report", str(outs["results"]), "--out", str(outs["report"]), "--overwrite"]),
        "adapt": (outs["model"], ["adapt", "--checkpoint", str(outs["run"] / "best.pt"), "--support",
                                  str(outs["support"]), "--out", str(outs["model"]), "--steps", "1",
                                  "--overwrite"]),
        "predict": (outs["maps"], ["predict", "--model", str(outs["model"]), "--input", str(scene), "--out",
                                   str(outs["maps"]), "--overwrite"]),
    }


def test_second_writer_of_any_output_is_one_line_and_exit_2(synth_tiny: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    outs = _chain(synth_tiny, tmp_path)
    capsys.readouterr()
    for name, (target, argv) in _attempts(synth_tiny, tmp_path, outs).items():
        before = {p: Path(p).stat().st_mtime_ns for p in (_modes(target) if target.exists() else {})}
        with output_lock(target):
            code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (name, err)
        assert len(err) == 1 and f"already being written by PID {os.getpid()} since " in err[0], (name, err)
        after = {p: Path(p).stat().st_mtime_ns for p in (_modes(target) if target.exists() else {})}
        assert after == before, name  # nothing written, nothing removed


def test_two_training_processes_on_one_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A real second process: `train --resume` while the run trains is refused; the first goes on."""
    from store_factory import make_store
    store = make_store(tmp_path / "store")
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "landmeta", "train", "--config", "tiny", "--data", str(store), "--out",
            str(out), "--no-progress", "--set", "meta.steps=400", "--set", "train.ckpt_every=1"]
    first = subprocess.Popen(argv, cwd=ROOT, env=os.environ | {"OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while not (out / "last.pt").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert (out / "last.pt").exists()
        code = main(["train", "--config", "tiny", "--data", str(store), "--out", str(out), "--no-progress",
                     "--resume", "--set", "meta.steps=400"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and f"already being written by PID {first.pid}" in err[0]
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(60)
    assert first.returncode == 130  # interrupted cleanly: checkpoint and metrics agree
    step = Checkpoint.load(out / "last.pt").step
    assert len((out / "metrics.csv").read_text().splitlines()) == step + 1


def test_lock_of_a_dead_writer_is_taken_over_with_a_warning(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    from store_factory import make_store
    store = make_store(tmp_path / "store")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".run.lock").write_text(f"{dead.stdout.strip()} host 2026-01-01T00:00:00+00:00\n")
    assert main(["train", "--config", "tiny", "--data", str(store), "--out", str(tmp_path / "run"),
                 "--no-progress", "--set", "meta.steps=1"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"landmeta train: warning: {tmp_path / 'run'}: took over the lock left by PID "
                   f"{dead.stdout.strip()} (since 2026-01-01T00:00:00+00:00), which is no longer running"]
    assert not (tmp_path / ".run.lock").exists()


def test_failed_fresh_run_leaves_nothing_so_a_rerun_works(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from store_factory import make_store
    store = make_store(tmp_path / "store")
    out = tmp_path / "run"
    base = ["train", "--config", "tiny", "--data", str(store), "--out", str(out), "--no-progress"]
    code = main([*base, "--set", "meta.outer_lr=1.0e+30", "--set", "meta.grad_clip=1.0e+30",
                 "--set", "train.ckpt_every=100", "--set", "meta.steps=50"])
    err = capsys.readouterr().err
    assert code == 2 and "no checkpoint written yet" in err
    assert not out.exists()
    assert main(base) == 0
