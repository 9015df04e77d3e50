"""Classifiers: the paper's small CNN and an smp-encoder classifier, each with a linear `head`."""

from __future__ import annotations

import torch
from torch import nn


def norm_layer(norm: str, channels: int) -> nn.Module:
    """The normalisation after each convolution: batch, group (up to 8 groups), instance or none."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if norm == "instance":
        return nn.GroupNorm(channels, channels)  # instance norm with affine parameters
    return nn.Identity()


class ConvClassifier(nn.Module):
    """depth x [Conv3x3(width) + norm + ReLU + MaxPool2], global average pooling, linear head."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 64, depth: int = 4,
                 norm: str = "batch") -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = in_channels
        for _ in range(depth):
            blocks += [nn.Conv2d(channels, width, 3, padding=1), norm_layer(norm, width),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = width
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


class EncoderClassifier(nn.Module):
    """An smp encoder, global average pooling of its deepest features, linear head."""

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.out_channels[-1]), num_classes)  # type: ignore[index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)[-1].mean(dim=(2, 3)))
