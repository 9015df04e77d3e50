"""Step data made ahead in DataLoader workers equals the data made in the training process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from landmeta.cli import main
from landmeta.data.store import ChipStore
from landmeta.data.transforms import BatchMaker
from landmeta.errors import ConfigError
from landmeta.meta.checkpoint import Checkpoint
from landmeta.meta.distributed import World
from landmeta.meta.feed import MetaBatches, PooledBatches, pretraining_pool, steps_data

sys.path.insert(0, str(Path(__file__).parent))
from store_factory import make_store  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("feed") / "store")


def test_workers_make_the_same_steps(store: Path) -> None:
    chips = ChipStore.open(store)
    batches = BatchMaker(chips, augment=True)
    tasks = MetaBatches(chips, batches, "classification", 3, 2, 2, 4, 0, World(1, 2, 1))
    here, ahead = list(steps_data(tasks, 3, 9, 0)), list(steps_data(tasks, 3, 9, 2))
    assert len(here) == len(ahead) == 6
    for step_here, step_ahead in zip(here, ahead):
        assert len(step_here) == 2  # rank 1 of 2 takes tasks 1 and 3 of the meta-batch of 4
        for a, b in zip(step_here, step_ahead):
            assert a.classes == b.classes
            for name in ("x_support", "y_support", "x_query", "y_query"):
                assert torch.equal(getattr(a.tensors, name), getattr(b.tensors, name))
    assert not torch.equal(here[0][0].tensors.x_support, here[1][0].tensors.x_support)
    pooled = PooledBatches(batches, pretraining_pool(chips, "segmentation"), "segmentation", 8, 0, World())
    for (x1, y1), (x2, y2) in zip(steps_data(pooled, 0, 4, 0), steps_data(pooled, 0, 4, 1)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    with pytest.raises(ConfigError, match="train.workers"):
        steps_data(tasks, 0, 1, -1)


def test_training_with_workers_matches_training_without(store: Path, tmp_path: Path) -> None:
    runs = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        assert main(["train", "--config", "tiny", "--data", str(store), "--out", str(out), "--no-progress",
                     "--set", "meta.steps=4", "--set", "train.val_every=100",
                     "--set", f"train.workers={workers}"]) == 0
        runs[workers] = Checkpoint.load(out / "last.pt").model_state
    for name, value in runs[0].items():
        assert torch.equal(value, runs[2][name]), name
