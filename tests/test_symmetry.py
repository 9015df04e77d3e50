"""Test-time augmentation over the eight symmetries of the square."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landmeta.models.symmetry import TURNS, symmetric_probabilities


def test_the_eight_symmetries_are_distinct():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    seen = {tuple(torch.rot90(x.flip(-1) if m else x, k, dims=(-2, -1)).flatten().tolist()) for k, m in TURNS}
    assert len(seen) == 8


def test_a_pointwise_segmenter_is_unchanged_so_every_map_is_turned_back():
    torch.manual_seed(0)
    model = nn.Conv2d(3, 5, 1)  # commutes with every symmetry: only correctly turned-back maps average to its own
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(symmetric_probabilities(model, x), model(x).softmax(1))


def test_an_invariant_classifier_is_unchanged_and_a_general_one_is_averaged():
    torch.manual_seed(0)
    pooled = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.randn(3, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(symmetric_probabilities(pooled, x), pooled(x).softmax(1))
        flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 36, 4))  # sees pixel positions
        expected = torch.stack([flat(torch.rot90(x.flip(-1) if m else x, k, dims=(-2, -1))).softmax(1)
                                for k, m in TURNS]).mean(0)
        p = symmetric_probabilities(flat, x)
        torch.testing.assert_close(p, expected)
        assert not torch.allclose(p, flat(x).softmax(1))
        torch.testing.assert_close(p.sum(1), torch.ones(3))


def test_non_square_chips_are_refused():
    with pytest.raises(ValueError, match="square"):
        symmetric_probabilities(nn.Identity(), torch.zeros(1, 1, 4, 6))
