"""Per-task metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from landmeta.errors import TaskError
from landmeta.metrics import classification_metrics, segmentation_metrics


def test_classification_hand_example():
    # accuracy 3/4; kappa: po = .75, pe = .5·.25 + .5·.75 = .5 -> .5; F1: class 0 2/3, class 1 .8
    m = classification_metrics([0, 0, 1, 1], [0, 1, 1, 1])
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["kappa"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_classification_labels_count_unpredicted_class_in_macro_f1():
    # class 2 of a 3-way task never predicted nor true: with labels given it enters macro F1 as 0
    m = classification_metrics([0, 1], [0, 1], labels=[0, 1, 2])
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == 1.0 and m["kappa"] == 1.0


def test_classification_single_class_perfect_is_kappa_one():
    assert classification_metrics([2, 2, 2], [2, 2, 2])["kappa"] == 1.0


def test_segmentation_hand_example_with_ignore():
    truth = np.array([[0, 0], [1, 255]], dtype=np.uint8)
    pred = np.array([[0, 1], [1, 2]], dtype=np.uint8)   # class 2 only on the ignored pixel
    m = segmentation_metrics(truth, pred)
    assert m["miou"] == pytest.approx(0.5)              # IoU 1/2 for class 0 and class 1
    assert m["pixel_accuracy"] == pytest.approx(2 / 3)
    assert m["kappa"] == pytest.approx(0.4)             # po 2/3, pe 4/9


def test_segmentation_absent_class_never_counts_as_one():
    # class 2 predicted but absent from the truth: not in the mean, it only lowers class 0's IoU
    m = segmentation_metrics(np.zeros(4, np.uint8), np.array([0, 0, 0, 2], np.uint8))
    assert m["miou"] == pytest.approx(0.75)
    # class 1 present in the truth but never predicted: IoU 0 enters the mean
    m = segmentation_metrics(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0]))
    assert m["miou"] == pytest.approx(0.25)


def test_segmentation_kappa_matches_sklearn():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, size=(3, 16, 16))
    pred = np.where(rng.random(truth.shape) < 0.6, truth, rng.integers(0, 5, size=truth.shape))
    truth[0, :4] = 255
    valid = truth != 255
    expected = cohen_kappa_score(truth[valid], pred[valid])
    assert segmentation_metrics(truth, pred)["kappa"] == pytest.approx(expected)


def test_segmentation_all_ignored_raises():
    with pytest.raises(TaskError, match="no labelled pixel"):
        segmentation_metrics(np.full((2, 2), 255), np.zeros((2, 2)))
