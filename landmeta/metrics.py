"""Per-task metrics: accuracy, Cohen's kappa and macro F1 for classification; mIoU over the classes
present in the query ground truth, pixel accuracy and kappa for segmentation."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score

from landmeta.classes import IGNORE_INDEX
from landmeta.errors import TaskError

CLASSIFICATION_METRICS = ("accuracy", "kappa", "macro_f1")
SEGMENTATION_METRICS = ("miou", "pixel_accuracy", "kappa")


def metric_names(kind: str) -> tuple[str, ...]:
    """The metric columns of a task kind, headline metric first."""
    return CLASSIFICATION_METRICS if kind == "classification" else SEGMENTATION_METRICS


def classification_metrics(y_true, y_pred, labels=None) -> dict[str, float]:
    """Accuracy, Cohen's kappa and macro F1 (over `labels`, default: labels seen in either array)."""
    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    if y_true.size == 0 or y_true.shape != y_pred.shape:
        raise TaskError(f"classification metrics: need equal non-empty label arrays, got {y_true.shape} and {y_pred.shape}")
    if np.array_equal(y_true, y_pred):
        kappa = 1.0  # perfect agreement; sklearn returns nan when only one class occurs
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            kappa = float(cohen_kappa_score(y_true, y_pred, labels=labels))
        kappa = 0.0 if np.isnan(kappa) else kappa
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "kappa": kappa,
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
    }


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix (rows: truth, columns: prediction) of integer arrays by counting."""
    return np.bincount(y_true.astype(np.int64) * num_classes + y_pred.astype(np.int64),
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def kappa_from_confusion(cm: np.ndarray) -> float:
    """Cohen's kappa from a confusion matrix; 1 for perfect agreement on a single class."""
    n = cm.sum()
    observed = np.trace(cm) / n
    expected = float((cm.sum(0) * cm.sum(1)).sum()) / float(n) ** 2
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else 0.0
    return float((observed - expected) / (1.0 - expected))


def segmentation_metrics(y_true, y_pred, ignore_index: int = IGNORE_INDEX) -> dict[str, float]:
    """mIoU over the classes present in `y_true`, pixel accuracy and kappa; `ignore_index` pixels excluded.

    A class absent from the ground truth never enters the mean (predicting it only lowers the IoU of
    the true classes it was confused with), so an absent class can never count as IoU 1.
    """
    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise TaskError(f"segmentation metrics: truth {y_true.shape} and prediction {y_pred.shape} differ in size")
    valid = y_true != ignore_index
    if not valid.any():
        raise TaskError("segmentation metrics: the query ground truth has no labelled pixel")
    t = y_true[valid].astype(np.int64)
    p = y_pred[valid].astype(np.int64)
    num_classes = int(max(t.max(), p.max())) + 1
    cm = confusion(t, p, num_classes)
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    present = cm.sum(1) > 0
    return {
        "miou": float((inter[present] / union[present]).mean()),
        "pixel_accuracy": float(inter.sum() / cm.sum()),
        "kappa": kappa_from_confusion(cm),
    }


def task_metrics(kind: str, y_true, y_pred, ignore_index: int = IGNORE_INDEX, labels=None) -> dict[str, float]:
    """The metrics of one task of either kind."""
    if kind == "classification":
        return classification_metrics(y_true, y_pred, labels=labels)
    return segmentation_metrics(y_true, y_pred, ignore_index=ignore_index)
