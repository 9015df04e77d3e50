"""Models chosen by name in the config: `conv`, `smp-classifier` (classification), `unet` (segmentation).

Classification models expose a linear head whose parameter names start with `head.`; the U-Net's
head is `segmentation_head.`. Every model is built with random weights; `model.encoder_weights`
may name a local file of encoder weights (a state dict), never a download.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import cast

import segmentation_models_pytorch as smp
import torch
from torch import nn

from landmeta.config import ModelConfig
from landmeta.errors import ModelError
from landmeta.models.classifier import ConvClassifier, EncoderClassifier, norm_layer
from landmeta.models.segmenter import build_unet
from landmeta.vocab import HEAD

MODELS = {"conv": "classification", "smp-classifier": "classification", "unet": "segmentation"}


def build_model(cfg: ModelConfig, in_channels: int, num_classes: int, kind: str,
                chip_size: int | None = None) -> nn.Module:
    """Build the model named by `cfg.name` for `kind` tasks; ModelError if it does not fit."""
    if cfg.name not in MODELS:
        raise ModelError(f"model.name: unknown model {cfg.name!r} (known: {', '.join(MODELS)})")
    if MODELS[cfg.name] != kind:
        raise ModelError(f"model.name: {cfg.name} is a {MODELS[cfg.name]} model, the task is {kind}")
    if in_channels < 1 or num_classes < 2:
        raise ModelError(f"model {cfg.name}: needs >= 1 input band and >= 2 classes, "
                         f"got {in_channels} bands and {num_classes} classes")
    downsampling = 2 ** (cfg.depth if cfg.name == "conv" else cfg.encoder_depth)
    if chip_size is not None and (chip_size < downsampling or
                                  (cfg.name != "conv" and chip_size % downsampling)):
        raise ModelError(f"model {cfg.name}: chip size {chip_size} does not fit {downsampling}x "
                         f"downsampling (set data.chip_size to a multiple of {downsampling})")
    if cfg.name == "conv":
        return ConvClassifier(in_channels, num_classes, cfg.width, cfg.depth, cfg.norm)
    if cfg.name == "unet" and len(cfg.decoder_channels) != cfg.encoder_depth:
        raise ModelError(f"model.decoder_channels: needs {cfg.encoder_depth} entries "
                         f"(model.encoder_depth), got {cfg.decoder_channels}")
    try:
        if cfg.name == "unet":
            model = build_unet(in_channels, num_classes, cfg.encoder, cfg.encoder_depth,
                               cfg.decoder_channels)
            encoder = cast(nn.Module, model.encoder)
        else:
            encoder = smp.encoders.get_encoder(cfg.encoder, in_channels=in_channels,
                                               depth=cfg.encoder_depth, weights=None)
            model = EncoderClassifier(encoder, num_classes)
    except (KeyError, ValueError) as exc:
        raise ModelError(f"model.encoder: cannot build {cfg.encoder!r} with depth "
                         f"{cfg.encoder_depth}: {exc}") from exc
    _drop_unused(model, in_channels, max(chip_size or 0, 2 * downsampling))
    if cfg.encoder_weights:
        _load_encoder_weights(encoder, Path(cfg.encoder_weights))
    if cfg.norm != "batch":
        _replace_batchnorm(model, cfg.norm)
    return model


def _load_encoder_weights(encoder: nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types on a foreign or truncated file
        raise ModelError(f"{path}: cannot read encoder weights ({exc.__class__.__name__})") from exc
    if not isinstance(state, dict):
        raise ModelError(f"{path}: encoder weights must be a state dict")
    try:  # weights of stages beyond encoder_depth are ignored; every kept tensor must be there
        missing = nn.Module.load_state_dict(encoder, state, strict=False).missing_keys
    except RuntimeError as exc:
        raise ModelError(f"{path}: encoder weights do not fit the encoder "
                         f"({str(exc).splitlines()[1].strip()})") from exc
    if missing:
        raise ModelError(f"{path}: encoder weights lack {len(missing)} tensors (e.g. {missing[0]})")


def _drop_unused(model: nn.Module, in_channels: int, size: int) -> None:
    """Replace submodules whose parameters never reach the output (smp keeps the stages beyond
    `encoder_depth`) by Identity, so that every parameter of the model receives a gradient."""
    probe = copy.deepcopy(model).eval()
    probe(torch.zeros(1, in_channels, size, size)).float().sum().backward()
    unused = {name for name, p in probe.named_parameters() if p.grad is None}
    if not unused:
        return
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            prefix = f"{parent_name}.{name}." if parent_name else f"{name}."
            names = [prefix + n for n, _ in child.named_parameters()]
            if names and all(n in unused for n in names):
                setattr(parent, name, _Skip())


class _Skip(nn.Module):
    """Stands in for a dropped submodule: returns its first input unchanged."""

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return x


def _replace_batchnorm(module: nn.Module, norm: str) -> None:
    """Swap every BatchNorm2d of an smp model for the configured normalisation."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, norm_layer(norm, child.num_features))
        else:
            _replace_batchnorm(child, norm)


def is_head(name: str, pattern: str = HEAD) -> bool:
    """A parameter belongs to the head when its first name component is `pattern` or
    `segmentation_<pattern>` (the smp U-Net's head)."""
    return name.split(".")[0] in (pattern, f"segmentation_{pattern}")


def head_module(model: nn.Module, pattern: str = HEAD) -> nn.Module:
    """The head itself: a classifier's last linear layer, a U-Net's 1x1 segmentation convolution."""
    for name in (pattern, f"segmentation_{pattern}"):
        if hasattr(model, name):
            return getattr(model, name)
    raise ModelError(f"{type(model).__name__}: no `{pattern}` or `segmentation_{pattern}` layer")
