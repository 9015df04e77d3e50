"""Proto-MAML's head (Triantafillou et al. 2020, "Meta-Dataset"): at the start of each task's inner
loop the head is set from the support set's class prototypes, then the MAML inner loop runs on top.

The prototype c_k of class k is the mean of the features the head receives over the support samples
labelled k: pooled features for a classifier, the decoder's per-pixel features over every pixel
labelled k for a U-Net (masked average pooling; pixels labelled 255 left out). Row k of the head gets
weight 2·c_k and bias −‖c_k‖², so that before any inner step it scores ‖f‖² − ‖f − c_k‖²: the
nearest prototype wins. A convolution head (the U-Net's 3×3 `segmentation_head`) gets 2·c_k at its
centre tap and 0 at the others, i.e. it starts as the 1×1 classifier. Rows of classes without a
labelled support sample keep the head's own (meta-learned) values. Everything here is differentiable,
so the meta-gradient flows through the prototypes into the feature extractor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from landmeta.classes import IGNORE_INDEX
from landmeta.errors import ModelError
from landmeta.models import head_module
from landmeta.vocab import HEAD


@dataclass(frozen=True)
class PrototypeHead:
    """The layer of a model's head that prototypes set, and the names of its weight and bias."""

    layer: nn.Module  # an nn.Linear, or an nn.Conv2d whose centre tap alone is a 1×1 convolution
    weight: str
    bias: str


def prototype_head(model: nn.Module, pattern: str = HEAD) -> PrototypeHead:
    """The settable layer of the model's head (`meta.head_pattern`); ModelError when the head is not
    one linear layer or stride-1 "same" convolution with a bias (other parts of it must be identities)."""
    head = head_module(model, pattern)
    prefix = next(name for name, module in model.named_modules() if module is head)
    layers = [(name, m) for name, m in head.named_modules()
              if not any(m.children()) and not isinstance(m, nn.Identity)]
    if len(layers) == 1 and _settable(layers[0][1]):
        name, layer = layers[0]
        full = f"{prefix}.{name}" if name else prefix
        return PrototypeHead(layer, f"{full}.weight", f"{full}.bias")
    kinds = list(dict.fromkeys(type(m).__name__ for _, m in layers))
    found = ", ".join(kinds[:4]) + (", ..." if len(kinds) > 4 else "") if kinds else "no layer"
    raise ModelError(f"meta.head_pattern={pattern!r}: the head `{prefix}` holds {found}, not one linear layer "
                     "or stride-1 convolution with a bias, so Proto-MAML cannot set it from prototypes")


def _settable(layer: nn.Module) -> bool:
    """A Linear with a bias, or a Conv2d with a bias whose centre tap alone acts as a 1×1 convolution."""
    if isinstance(layer, nn.Linear):
        return layer.bias is not None
    if isinstance(layer, nn.Conv2d):
        k = layer.kernel_size
        return (layer.bias is not None and layer.groups == 1 and layer.stride == (1, 1)
                and layer.dilation == (1, 1) and k[0] == k[1] and k[0] % 2 == 1
                and layer.padding == (k[0] // 2, k[1] // 2))
    return False


def head_input(layer: nn.Module, run: Callable[[], Tensor]) -> Tensor:
    """The input `layer` receives while `run()` passes a batch through the model (kept in the graph)."""
    captured: list[Tensor] = []
    hook = layer.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
    try:
        run()
    finally:
        hook.remove()
    return captured[0]


def prototype_rows(features: Tensor, y: Tensor, weight: Tensor, bias: Tensor,
                   ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, Tensor]:
    """`weight` and `bias` with the row of every class labelled in `y` set from its prototype c_k:
    weight 2·c_k (a convolution: at its centre tap, 0 elsewhere), bias −‖c_k‖²; other rows kept.

    `features` (n, D) with labels (n,), or (n, D, H, W) with masks (n, H, W) (pixels labelled
    `ignore_index` left out). Differentiable in `features`, `weight` and `bias`."""
    rows, dim = weight.shape[0], features.shape[1]
    if features.dim() == 4:
        if features.shape[2:] != y.shape[1:]:
            raise ModelError(f"prototypes: head input of {tuple(features.shape[2:])} pixels, masks of "
                             f"{tuple(y.shape[1:])}")
        features, y = features.permute(0, 2, 3, 1).reshape(-1, dim), y.reshape(-1)
    keep = y != ignore_index
    features, y = features[keep].to(weight.dtype), y[keep]
    counts = torch.bincount(y, minlength=rows)
    if counts.numel() > rows:
        raise ModelError(f"prototypes: label {int(y.max())} for a head of {rows} rows")
    protos = features.new_zeros(rows, dim).index_add(0, y, features) / counts.clamp(min=1).unsqueeze(1)
    tap = weight.new_zeros(weight.shape[2:])  # () for a linear layer
    tap[tuple(s // 2 for s in weight.shape[2:])] = 1.0
    spread = (1,) * (weight.dim() - 2)
    present = counts > 0
    new_weight = torch.where(present.view(rows, 1, *spread), 2 * protos.view(rows, dim, *spread) * tap, weight)
    new_bias = torch.where(present, -(protos * protos).sum(1), bias)
    return new_weight, new_bias
