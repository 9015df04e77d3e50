"""Batch transforms: band selection, train-only normalisation, resizing, aligned seeded augmentation."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from store_factory import BANDS, make_store

from landmeta.data.store import ChipStore
from landmeta.data.tasks import sample_task
from landmeta.data.transforms import BatchMaker, normalise
from landmeta.errors import StoreError


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ChipStore:
    return ChipStore.open(make_store(tmp_path_factory.mktemp("store") / "tiny", seed=3))


def _task(store: ChipStore, kind: str, seed: int = 0):
    return sample_task(store, "train", kind, np.random.default_rng(seed), 4, 2, 3)


def test_classification_tensors(store: ChipStore):
    task = _task(store, "classification")
    t = BatchMaker(store).task_tensors(task)
    assert t.x_support.shape == (8, len(BANDS), 32, 32) and t.x_support.dtype == torch.float32
    assert t.x_query.shape == (12, len(BANDS), 32, 32)
    assert t.y_support.dtype == torch.long
    assert t.y_support.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and t.y_query.tolist() == sorted([0, 1, 2, 3] * 3)
    expected = normalise(store.images(task.support), store.mean, store.std)
    np.testing.assert_allclose(t.x_support.numpy(), expected, rtol=1e-6)


def test_segmentation_tensors_keep_global_ids_and_ignore(store: ChipStore):
    task = _task(store, "segmentation")
    t = BatchMaker(store).task_tensors(task)
    assert t.y_support.shape == (2, 32, 32) and t.y_query.shape == (3, 32, 32) and t.y_query.dtype == torch.long
    np.testing.assert_array_equal(t.y_query.numpy(), store.masks(task.query))
    assert (t.y_query == 255).any()


def test_band_selection_and_errors(store: ChipStore):
    maker = BatchMaker(store, bands=["B04", "VV"])
    assert maker.in_channels == 2 and maker.bands == ["B04", "VV"]
    x, _ = maker.chip_tensors(np.array([0, 1]), "classification")
    full = normalise(store.images(np.array([0, 1])), store.mean, store.std)
    np.testing.assert_allclose(x.numpy(), full[:, [BANDS.index("B04"), BANDS.index("VV")]], rtol=1e-6)
    np.testing.assert_allclose(maker.mean, store.mean[[4, 0]])
    with pytest.raises(StoreError, match=r"unknown bands \['B8A', 'B12'\]; the store has \['VV', 'VH'"):
        BatchMaker(store, bands=["B04", "B8A", "B12"])
    with pytest.raises(StoreError, match="without repeats"):
        BatchMaker(store, bands=["B04", "B04"])


def test_normalisation_uses_train_only_stats(store: ChipStore):
    chips = store.chips
    train = np.flatnonzero(chips["region"].isin(store.regions_in("train")).to_numpy())
    test = np.flatnonzero(chips["region"].isin(store.regions_in("test")).to_numpy())
    maker = BatchMaker(store)
    x_train, _ = maker.chip_tensors(train, "segmentation")
    x_test, _ = maker.chip_tensors(test, "segmentation")
    # train chips come out centred and unit-scaled; the shifted test regions do not
    np.testing.assert_allclose(x_train.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=2e-3)
    np.testing.assert_allclose(x_train.std(dim=(0, 2, 3)).numpy(), 1.0, atol=2e-3)
    assert (x_test.mean(dim=(0, 2, 3))[2:].abs() > 0.1).all()  # reflectance bands shifted by 0.05


def test_normalise_constant_band():
    images = np.ones((2, 2, 4, 4), dtype=np.float16)
    out = normalise(images, np.array([1.0, 0.5]), np.array([0.0, 0.25]))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 0], 0.0)
    np.testing.assert_allclose(out[:, 1], 2.0)


def test_resize_images_and_masks(store: ChipStore):
    idx = np.arange(4)
    x, y = BatchMaker(store, chip_size=16).chip_tensors(idx, "segmentation")
    assert x.shape == (4, len(BANDS), 16, 16) and y.shape == (4, 16, 16)
    full = torch.from_numpy(normalise(store.images(idx), store.mean, store.std))
    np.testing.assert_allclose(x.numpy(), full.reshape(4, len(BANDS), 16, 2, 16, 2).mean(dim=(3, 5)).numpy(),
                               rtol=1e-5, atol=1e-5)  # area averaging of 2x2 blocks
    assert set(np.unique(y.numpy())) <= set(np.unique(store.masks(idx)))  # nearest: no invented ids
    x, y = BatchMaker(store, chip_size=48).chip_tensors(idx, "segmentation")
    assert x.shape == (4, len(BANDS), 48, 48) and y.shape == (4, 48, 48)


def test_augmentation_keeps_image_and_mask_aligned(store: ChipStore):
    """A band equal to the mask stays equal to it after augmentation, on every chip; all 8 symmetries occur."""
    maker = BatchMaker(store, augment=True)
    rng = np.random.default_rng(0)
    mask = torch.from_numpy(rng.integers(0, 6, size=(40, 16, 16), dtype=np.uint8))
    image = torch.cat([torch.from_numpy(rng.normal(size=(40, 12, 16, 16)).astype(np.float32)),
                       mask[:, None].float()], dim=1)
    x, y = maker._augment(image, mask, rng)
    assert x.shape == (40, 13, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.uint8
    torch.testing.assert_close(x[:, 12], y.float(), rtol=0, atol=0)
    seen = set()
    for i in range(40):
        found = [k for k, (xx, yy) in enumerate(_symmetries(image[i], mask[i])) if torch.equal(xx, x[i])]
        assert found
        seen.add(found[0])
    assert len(seen) == 8  # all eight symmetries of the square occur

    # through BatchMaker: the same chips augmented with one rng seed give the same tensors
    task = _task(store, "segmentation", seed=5)
    maker = BatchMaker(store, augment=True)
    a = maker.task_tensors(task, np.random.default_rng(11))
    b = maker.task_tensors(task, np.random.default_rng(11))
    c = maker.task_tensors(task, np.random.default_rng(12))
    assert torch.equal(a.x_support, b.x_support) and torch.equal(a.y_query, b.y_query)
    assert not (torch.equal(a.x_support, c.x_support) and torch.equal(a.x_query, c.x_query))
    plain = BatchMaker(store).task_tensors(task)
    for x, y, x0, y0 in [(a.x_support, a.y_support, plain.x_support, plain.y_support),
                         (a.x_query, a.y_query, plain.x_query, plain.y_query)]:
        for i in range(len(x)):  # each augmented chip is one symmetry applied to both image and mask
            matches = [(xx, yy) for xx, yy in _symmetries(x0[i], y0[i]) if torch.equal(xx, x[i])]
            assert matches and any(torch.equal(yy, y[i]) for _, yy in matches)


def _symmetries(x: torch.Tensor, y: torch.Tensor):
    for k, flip in itertools.product(range(4), (False, True)):
        xx, yy = (x.flip(-1), y.flip(-1)) if flip else (x, y)
        yield torch.rot90(xx, k, dims=(-2, -1)), torch.rot90(yy, k, dims=(-2, -1))


def test_no_rng_no_augmentation(store: ChipStore):
    task = _task(store, "classification")
    a = BatchMaker(store, augment=True).task_tensors(task)
    b = BatchMaker(store, augment=False).task_tensors(task, np.random.default_rng(0))
    c = BatchMaker(store).task_tensors(task)
    assert torch.equal(a.x_support, c.x_support) and torch.equal(b.x_query, c.x_query)


def test_chip_tensors_global_labels(store: ChipStore):
    idx = np.array([3, 50, 200, 7])
    x, y = BatchMaker(store, augment=True).chip_tensors(idx, "classification", np.random.default_rng(0))
    assert x.shape == (4, len(BANDS), 32, 32) and y.tolist() == store.labels(idx).tolist()


def test_unlabelled_chip_refused_for_classification(tmp_path: Path):
    path = make_store(tmp_path / "s", seed=0)
    store = ChipStore.open(path)
    chips = store.chips
    chips.loc[2, "label"] = -1
    chips.to_csv(path / "chips.csv", index=False)
    with pytest.raises(StoreError, match=r"chips \[2\] have no label"):
        BatchMaker(ChipStore.open(path)).chip_tensors(np.array([1, 2]), "classification")


def test_prepared_chips_are_cached_within_budget(store: ChipStore):
    idx = np.array([3, 50, 3, 7])
    cached, uncached = BatchMaker(store, chip_size=16), BatchMaker(store, chip_size=16, cache_mb=0)
    first, _ = cached.chip_tensors(idx, "classification")
    again, _ = cached.chip_tensors(idx[::-1].copy(), "classification")
    plain, _ = uncached.chip_tensors(idx, "classification")
    assert sorted(cached._cache) == [3, 7, 50] and not uncached._cache
    assert torch.equal(first, plain) and torch.equal(again, plain.flip(0))
    chip_bytes = first[0].nbytes
    small = BatchMaker(store, chip_size=16, cache_mb=2.5 * chip_bytes / 2**20)
    x, _ = small.chip_tensors(idx, "classification")
    assert len(small._cache) == 2 and torch.equal(x, plain)  # full: the rest is prepared, not kept
    assert cached.chip_tensors(np.array([], dtype=np.int64), "classification")[0].shape == (0, len(BANDS), 16, 16)


def test_random_crops_keep_image_and_mask_aligned_and_are_seeded():
    """A chip whose pixels carry their mask's class: after cropping both still agree."""
    from landmeta.data.transforms import random_crops
    mask = torch.from_numpy(np.kron(np.arange(16).reshape(4, 4), np.ones((8, 8), dtype=np.int64)))[None].repeat(3, 1, 1)
    image = mask[:, None].float().repeat(1, 2, 1, 1)
    x1, m1 = random_crops(image, mask, 0.5, np.random.default_rng(3))
    x2, m2 = random_crops(image, mask, 0.5, np.random.default_rng(3))
    assert torch.equal(x1, x2) and torch.equal(m1, m2) and x1.shape == image.shape and m1.shape == mask.shape
    assert not torch.equal(m1, mask)  # something was cropped
    inside = (x1[:, 0] - x1[:, 0].round()).abs() < 1e-6  # pixels away from the bilinear class edges
    assert torch.equal(x1[:, 0][inside].long(), m1[inside])
    assert set(m1.unique().tolist()) <= set(range(16))


def test_photometric_jitter_is_seeded_bounded_and_off_at_zero():
    from landmeta.data.transforms import photometric_jitter
    x = torch.randn(6, 3, 16, 16)
    assert torch.allclose(photometric_jitter(x, 0.0, np.random.default_rng(0)), x)
    a = photometric_jitter(x, 0.3, np.random.default_rng(1))
    assert torch.equal(a, photometric_jitter(x, 0.3, np.random.default_rng(1)))
    shift = (a.mean(dim=(2, 3)) - x.mean(dim=(2, 3))).abs()
    assert shift.max() <= 0.3 * 1.5 + 1e-5 and shift.max() > 0
    ratio = a.std(dim=(2, 3)) / x.std(dim=(2, 3))
    assert ((ratio >= 0.7 - 1e-5) & (ratio <= 1.3 + 1e-5)).all()
