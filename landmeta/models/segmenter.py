"""The segmenter: an smp U-Net, built without downloading any weights."""

from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import nn


def build_unet(in_channels: int, num_classes: int, encoder: str, encoder_depth: int,
               decoder_channels: list[int]) -> nn.Module:
    """`smp.Unet` with random initialisation; its head is `segmentation_head`."""
    return smp.Unet(encoder_name=encoder, encoder_depth=encoder_depth, encoder_weights=None,
                    decoder_channels=list(decoder_channels), in_channels=in_channels,
                    classes=num_classes)
