"""Test-time augmentation: a model's class probabilities averaged over the eight symmetries of the
square (four rotations, each with and without a mirror), each segmentation map turned back first."""

from __future__ import annotations

import torch
from torch import Tensor, nn

TURNS = [(k, mirror) for mirror in (False, True) for k in range(4)]  # (quarter turns, mirrored first):
# the group of `data.transforms.SYMMETRIES`, here as torch turns that can be undone on output maps


def symmetric_probabilities(model: nn.Module, x: Tensor) -> Tensor:
    """Mean softmax of `model` over the eight symmetries of the square chips `x` (n, C, H, W): (n, K)
    for a classifier, (n, K, H, W) for a segmenter, each map turned back to `x`'s orientation."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"test-time symmetries need square chips, got {x.shape[-2]}x{x.shape[-1]}")
    total: Tensor | None = None
    for k, mirror in TURNS:
        turned = torch.rot90(x.flip(-1) if mirror else x, k, dims=(-2, -1))
        p = model(turned).softmax(1)
        if p.dim() == 4:
            p = torch.rot90(p, -k, dims=(-2, -1))
            p = p.flip(-1) if mirror else p
        total = p if total is None else total + p
    assert total is not None
    return total / len(TURNS)
