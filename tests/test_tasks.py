"""Few-shot task samplers: determinism, disjointness (chips and parents), eligibility, saved lists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from store_factory import make_store

from landmeta.data.store import ChipStore
from landmeta.data.tasks import Task, load_or_create_tasks, sample_task, usable_regions
from landmeta.errors import TaskError

N, K, Q = 4, 2, 3


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ChipStore:
    return ChipStore.open(make_store(tmp_path_factory.mktemp("store") / "tiny", seed=1))


def _draw(store: ChipStore, kind: str, seed: int, count: int, split: str = "train") -> list[Task]:
    rng = np.random.default_rng(seed)
    return [sample_task(store, split, kind, rng, N, K, Q) for _ in range(count)]


@pytest.mark.parametrize("kind", ["classification", "segmentation"])
def test_same_seed_same_tasks(store: ChipStore, kind: str):
    a, b = _draw(store, kind, 7, 30), _draw(store, kind, 7, 30)
    assert a == b
    assert a != _draw(store, kind, 8, 30)
    rng1, rng2 = np.random.default_rng(3), np.random.default_rng(3)
    assert sample_task(store, "val", kind, rng1, N, K, Q) == sample_task(store, "val", kind, rng2, N, K, Q)


@pytest.mark.parametrize("kind", ["classification", "segmentation"])
def test_support_and_query_share_no_chip_nor_parent(store: ChipStore, kind: str):
    chips = store.chips
    for task in _draw(store, kind, 0, 200):
        assert not set(task.support) & set(task.query)
        assert not set(chips["parent"].iloc[task.support]) & set(chips["parent"].iloc[task.query])
        assert set(chips["region"].iloc[np.concatenate([task.support, task.query])]) == {task.region}
        assert task.region in store.regions_in("train")
        assert (store.labels(task.support) >= 0).all() and (store.labels(task.query) >= 0).all()


def test_classification_shape_and_class_coverage(store: ChipStore):
    for task in _draw(store, "classification", 1, 100):
        assert len(task.classes) == N and len(set(task.classes)) == N
        assert task.support.shape == (N * K,) and task.query.shape == (N * Q,)
        np.testing.assert_array_equal(store.labels(task.support), np.repeat(task.classes, K))
        np.testing.assert_array_equal(store.labels(task.query), np.repeat(task.classes, Q))
        counts = store.chips[store.chips["region"] == task.region]["label"].value_counts()
        assert all(counts[c] > K + Q for c in task.classes)  # only eligible classes


def test_segmentation_classes_are_those_in_the_masks(store: ChipStore):
    for task in _draw(store, "segmentation", 2, 50):
        assert task.support.shape == (K,) and task.query.shape == (Q,)
        masks = store.masks(np.concatenate([task.support, task.query]))
        present = sorted(int(c) for c in np.unique(masks) if c != 255)
        assert list(task.classes) == present
        parents = store.chips["parent"].iloc[np.concatenate([task.support, task.query])]
        assert parents.nunique() == K + Q


def test_eligibility_rule_matches_counts(store: ChipStore):
    chips = store.chips
    for split in ("train", "val", "test"):
        expected = []
        for region in store.regions_in(split):
            counts = chips[(chips["region"] == region) & (chips["label"] >= 0)]["label"].value_counts()
            if (counts > K + Q).sum() >= N:
                expected.append(region)
        assert usable_regions(store, split, "classification", N, K, Q) == expected
    # the regions drawn are exactly the usable ones, each reached
    drawn = {t.region for t in _draw(store, "classification", 4, 300)}
    assert drawn == set(usable_regions(store, "train", "classification", N, K, Q))


def test_unusable_region_is_never_drawn(tmp_path: Path):
    path = make_store(tmp_path / "s", seed=5, splits=("train", "train", "val", "test"))
    chips = ChipStore.open(path).chips
    first, second = chips["region"].iloc[0], chips["region"].iloc[80]
    assert usable_regions(ChipStore.open(path), "train", "classification", N, K, Q) == [first, second]
    chips.loc[chips["region"] == first, "label"] = 0  # single-class now: no 4-way task here
    chips.to_csv(path / "chips.csv", index=False)
    store = ChipStore.open(path)
    assert usable_regions(store, "train", "classification", N, K, Q) == [second]
    assert {t.region for t in _draw(store, "classification", 0, 50)} == {second}


def test_no_usable_region_gives_clear_error(store: ChipStore):
    with pytest.raises(TaskError, match=r"split 'test' has no region with ≥ 6 classes of > 9 chips"):
        sample_task(store, "test", "classification", np.random.default_rng(0), 6, 5, 4)
    with pytest.raises(TaskError, match=r"split 'val' has no region with ≥ 90 parent patches"):
        sample_task(store, "val", "segmentation", np.random.default_rng(0), N, 45, 45)
    with pytest.raises(TaskError, match="unknown split 'holdout'"):
        sample_task(store, "holdout", "classification", np.random.default_rng(0), N, K, Q)


def test_kind_must_be_in_store(tmp_path: Path):
    store = ChipStore.open(make_store(tmp_path / "s", seed=0, kinds=("classification",)))
    with pytest.raises(TaskError, match="store has no 'segmentation' tasks"):
        sample_task(store, "train", "segmentation", np.random.default_rng(0), N, K, Q)


def test_saved_task_list_round_trips(tmp_path: Path):
    store = ChipStore.open(make_store(tmp_path / "s", seed=2))
    for kind in ("classification", "segmentation"):
        tasks = load_or_create_tasks(store, "val", kind, N, K, Q, count=25, seed=3)
        path = store.path / "tasks" / f"val-{kind}-{N}way-{K}shot-{Q}q-25-seed3.json"
        assert path.is_file() and not list(path.parent.glob(".*"))  # written atomically, no leftovers
        saved = json.loads(path.read_text())
        assert saved["format"] == "landmeta-tasks" and len(saved["tasks"]) == 25
        again = load_or_create_tasks(ChipStore.open(store.path), "val", kind, N, K, Q, count=25, seed=3)
        assert again == tasks and all(t.kind == kind for t in again)
        assert tasks == [sample_task(store, "val", kind, rng, N, K, Q)
                         for rng in [np.random.default_rng(3)] for _ in range(25)]


def test_saved_list_for_other_settings_is_refused(tmp_path: Path):
    store = ChipStore.open(make_store(tmp_path / "s", seed=2))
    load_or_create_tasks(store, "val", "classification", N, K, Q, count=5, seed=0)
    path = store.path / "tasks" / f"val-classification-{N}way-{K}shot-{Q}q-5-seed0.json"
    saved = json.loads(path.read_text())
    saved["num_chips"] = 1
    path.write_text(json.dumps(saved))
    with pytest.raises(TaskError, match="does not match this store"):
        load_or_create_tasks(store, "val", "classification", N, K, Q, count=5, seed=0)
    path.write_text("{broken")
    with pytest.raises(TaskError, match="not a readable task list"):
        load_or_create_tasks(store, "val", "classification", N, K, Q, count=5, seed=0)


def test_store_written_by_preprocess(tmp_path: Path):
    """The reader and samplers on a store made by the real writer from SEN12MS-layout GeoTIFFs."""
    from preprocess_inputs import sen12ms_dataset

    from landmeta.data.preprocess import PreprocessOptions, preprocess
    from landmeta.data.transforms import BatchMaker

    raw = sen12ms_dataset(tmp_path / "raw", scenes=(1, 2, 3, 4), patches=(1, 2, 3, 4, 5, 6), size=64)
    store = ChipStore.open(preprocess("sen12ms", raw, tmp_path / "store", PreprocessOptions(chip_size=32)))
    assert store.chip_size == 32 and len(store.bands) == 15 and len(store.regions) == 8
    assert np.isfinite(store.regions["lon"]).all()  # georeferenced patches give every region a location
    chips = store.chips
    for kind, n_way in (("segmentation", 0), ("classification", 2)):
        split = next(s for s in ("train", "val", "test") if usable_regions(store, s, kind, n_way, 1, 1))
        rng = np.random.default_rng(0)
        tasks = [sample_task(store, split, kind, rng, n_way, 1, 1) for _ in range(20)]
        for task in tasks:
            assert not set(chips["parent"].iloc[task.support]) & set(chips["parent"].iloc[task.query])
        t = BatchMaker(store, bands=["B04", "B03", "B02"], augment=True).task_tensors(tasks[0],
                                                                                     np.random.default_rng(0))
        assert t.x_support.shape[1:] == (3, 32, 32) and torch.isfinite(t.x_query).all()
