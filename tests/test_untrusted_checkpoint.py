"""A checkpoint from someone else cannot run code: every command that opens one refuses a pickle
that calls a function, with one line and exit 2 (docs/reliability.md)."""

from __future__ import annotations

import os
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from landmeta.cli import main
from landmeta.meta.checkpoint import Checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from inference_factory import class_field, make_checkpoint, reflectance, write_geotiff, write_png  # noqa: E402
from store_factory import make_store  # noqa: E402


class Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _evil(path: Path, marker: Path, zipped: bool) -> Path:
    """A file shaped like a landmeta checkpoint whose provenance holds the payload."""
    good = torch.load(make_checkpoint(path.with_name("good.pt")), weights_only=True)
    good["provenance"] = Payload(marker)
    if zipped:
        torch.save(good, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(good, fh)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("evil") / "store")


@pytest.fixture(scope="module")
def run_dir(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("evil-run") / "run"
    assert main(["train", "--config", "tiny", "--data", str(store), "--out", str(out), "--no-progress",
                 "--set", "meta.steps=1"]) == 0
    return out


def _commands(tmp: Path, evil: Path, store: Path, run_dir: Path) -> dict[str, list[str]]:
    scene = write_geotiff(tmp / "scene.tif", reflectance(class_field(64, 64), 4))
    support = tmp / "support"
    write_geotiff(support / "images" / "t0.tif", reflectance(class_field(64, 64), 4))
    write_png(support / "masks" / "t0.png", class_field(64, 64))
    resumed = tmp / "resumed"
    shutil.copytree(run_dir, resumed)
    shutil.copy(evil, resumed / "last.pt")
    train = ["train", "--config", "tiny", "--data", str(store), "--no-progress"]
    return {
        "predict": ["predict", "--model", str(evil), "--input", str(scene), "--out", str(tmp / "maps")],
        "adapt": ["adapt", "--checkpoint", str(evil), "--support", str(support), "--out", str(tmp / "m.pt")],
        "evaluate": ["evaluate", "--data", str(store), "--runs", str(evil), "--out", str(tmp / "results"),
                     "--tasks", "2", "--shots", "1"],
        "init_from": [*train, "--out", str(tmp / "r"), "--set", f"train.init_from={evil}"],
        "resume": [*train, "--out", str(resumed), "--resume", "--set", "meta.steps=2"],
    }


@pytest.mark.parametrize("zipped", [True, False], ids=["torch-zip", "plain-pickle"])
def test_no_command_runs_code_from_a_checkpoint(zipped: bool, store: Path, run_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "PWNED"
    evil = _evil(tmp_path / "evil.pt", marker, zipped)
    for name, argv in _commands(tmp_path, evil, store, run_dir).items():
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert not marker.exists(), f"{name} ran the checkpoint's code"
        assert code == 2, name
        assert len(err) == 1 and ("evil.pt" in err[0] or "last.pt" in err[0]), (name, err)
        # torch's reader stops a plain pickle at its first unknown opcode, before reaching the call
        assert ("refused, it holds a call to posix.system" if zipped else ".pt: not a readable") in err[0], \
            (name, err)
    assert not (tmp_path / "maps").exists() and not (tmp_path / "m.pt").exists()


def test_checkpoints_hold_only_weights_and_plain_values(run_dir: Path) -> None:
    """What training writes loads with torch's weights-only reader and nothing allow-listed."""
    for name in ("best.pt", "last.pt"):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(run_dir / name) == []
        ckpt = torch.load(run_dir / name, weights_only=True)
        assert isinstance(ckpt["provenance"]["torch"], str)
    assert isinstance(Checkpoint.load(run_dir / "last.pt").training["rng"]["numpy"][1], list)


def test_checkpoint_written_before_plain_values_still_loads(run_dir: Path, tmp_path: Path) -> None:
    """Older runs stored the numpy random state as an array and torch's version object: still readable."""
    old = torch.load(run_dir / "last.pt", weights_only=True)
    name, keys, pos, has_gauss, gauss = old["rng"]["numpy"]
    old["rng"]["numpy"] = (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss)
    old["provenance"]["torch"] = torch.__version__  # a TorchVersion object
    torch.save(old, tmp_path / "old.pt")
    assert Checkpoint.load(tmp_path / "old.pt").step == 1
