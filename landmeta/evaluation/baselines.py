"""Baselines beyond the paper: a random forest on band values (`rf`), the same forest on band values
plus a network's features (`rff-<run>`) and nearest-class-mean classifiers on a network's features
(`ncm-<run>`). Each is fitted on one task's support set and predicts its query set."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.ensemble import RandomForestClassifier
from torch import nn

from landmeta.errors import ModelError
from landmeta.models import head_module


def chip_statistics(images: np.ndarray) -> np.ndarray:
    """(n, C, H, W) -> (n, 2C): per-band mean and standard deviation of each chip."""
    flat = images.reshape(images.shape[0], images.shape[1], -1)
    return np.concatenate([flat.mean(-1), flat.std(-1)], axis=1)


def forest_samples(kind: str, images: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
    """The forest's samples: classification (n, 2C [+ D]), chip statistics then `features` (n, D);
    segmentation (n·H·W, C [+ D]), each pixel's band values then its `features` (n, D, H, W)."""
    if features is not None and (features.shape[0] != images.shape[0]
                                 or (kind == "segmentation" and features.shape[2:] != images.shape[2:])):
        raise ModelError(f"random forest: features of shape {features.shape} do not match images {images.shape}")
    if kind == "classification":
        stats = chip_statistics(images)
        return stats if features is None else np.concatenate([stats, features], axis=1)
    stacked = images if features is None else np.concatenate([images, features.astype(images.dtype)], axis=1)
    return stacked.transpose(0, 2, 3, 1).reshape(-1, stacked.shape[1])


def random_forest(kind: str, x_support: np.ndarray, y_support: np.ndarray, x_query: np.ndarray,
                  seed: int = 0, trees: int = 100, max_pixels: int = 20000, ignore_index: int = 255,
                  features: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Fit a random forest on the support set and predict the query set.

    Classification: one sample per chip, features = per-band mean and std; returns (n_query,) labels.
    Segmentation: one sample per labelled support pixel (at most `max_pixels`, drawn at random),
    features = band values; returns (n_query, H, W) class ids. `features` (support, query): a
    network's head inputs, appended to each sample's (`forest_samples`).
    """
    support_features, query_features = features if features is not None else (None, None)
    samples = forest_samples(kind, x_support, support_features)
    labels = y_support.reshape(-1)
    keep = np.flatnonzero(labels != ignore_index)
    if keep.size == 0:
        raise ModelError("random forest: the support has no labelled sample")
    if kind == "segmentation" and keep.size > max_pixels:
        keep = np.sort(np.random.default_rng(seed).choice(keep, max_pixels, replace=False))
    forest = RandomForestClassifier(n_estimators=trees, random_state=seed, n_jobs=1)
    forest.fit(samples[keep], labels[keep])
    pred = forest.predict(forest_samples(kind, x_query, query_features))
    return pred if kind == "classification" else pred.reshape(x_query.shape[0], *x_query.shape[2:])


def head_inputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The features a model's head receives: (n, D) for a classifier with `head` (its linear layer's
    input), (n, D, H, W) for a U-Net (the decoder output fed to `segmentation_head`)."""
    head = head_module(model)
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        with torch.no_grad():
            model(x)
    finally:
        hook.remove()
    return captured[0]


def nearest_prototype(support: torch.Tensor, y_support: torch.Tensor, query: torch.Tensor,
                      ignore_index: int = 255) -> torch.Tensor:
    """Label each query feature vector with the class whose mean support feature is nearest (Euclidean).

    Classification: support (n, D), query (m, D), labels (n,). Segmentation: per-pixel prototypes from
    support (n, D, H, W) and masks (n, H, W), ignoring `ignore_index`; query (m, D, H, W) -> (m, H, W).
    """
    if support.ndim == 4:
        d = support.shape[1]
        feats = support.permute(0, 2, 3, 1).reshape(-1, d)
        labels = y_support.reshape(-1)
        keep = labels != ignore_index
        feats, labels = feats[keep], labels[keep]
        m, _, h, w = query.shape
        flat_query = query.permute(0, 2, 3, 1).reshape(-1, d)
    else:
        feats, labels, flat_query = support, y_support, query
    classes = torch.unique(labels)
    if classes.numel() == 0:
        raise ModelError("prototypes: the support set has no labelled sample")
    protos = torch.stack([feats[labels == c].mean(0) for c in classes])
    nearest = torch.cdist(flat_query.double(), protos.double()).argmin(1)
    pred = classes[nearest]
    return pred.reshape(m, h, w) if support.ndim == 4 else pred
