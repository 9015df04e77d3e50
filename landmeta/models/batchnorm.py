"""Training-mode BatchNorm with a cheaper double backward, for the second-order inner loop.

The forward pass and the ordinary backward pass are PyTorch's own kernels. When the backward pass
itself is differentiated (second-order MAML differentiates the inner-loop gradient), PyTorch's
generic formula costs dozens of full-size operations per layer; `_BatchNormBackward` gives it a
hand-derived one with about half as many. `BatchNormMode()` routes every training-mode
`F.batch_norm` call inside it through this function; it changes no value, only the cost.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode


class _BatchNormBackward(torch.autograd.Function):
    """(dx, dw, db) of y = w·x̂ + b, x̂ = (x - mean)·invstd, with statistics over all but dim 1."""

    @staticmethod
    def forward(ctx: Any, g: Tensor, x: Tensor, w: Tensor, mean: Tensor, invstd: Tensor,
                eps: float) -> tuple[Tensor, Tensor, Tensor]:
        ctx.save_for_backward(g, x, w, mean, invstd)
        return torch.ops.aten.native_batch_norm_backward(g, x, w, None, None, mean, invstd, True, eps,
                                                         [True, True, True])

    @staticmethod
    def backward(ctx: Any, a: Tensor | None, a_w: Tensor | None,
                 a_b: Tensor | None) -> tuple[Tensor | None, ...]:
        """Gradients of Σ a·dx + a_w·dw + a_b·db. Per channel, with means m(·) over the reduced
        dimensions, ḡ = m(g), c = m(g·x̂), d = m(a·x̂), s = m(a·(g - ḡ)) and dx = w·r·(g - ḡ - x̂·c):
        d/dg = w·r·(a - ā - x̂·d) + a_w·x̂ + a_b;  d/dw = M·r·(s - c·d);
        d/dx = r·(a_w - w·r·d)·(g - ḡ) - w·r²·c·(a - ā) + x̂·(w·r²·(3·c·d - s) - a_w·r·c)."""
        g, x, w, mean, invstd = ctx.saved_tensors
        dims = [0, *range(2, x.dim())]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        r, wv = invstd.view(shape), w.view(shape)
        a_w = torch.zeros_like(wv) if a_w is None else a_w.view(shape)
        a_b = torch.zeros_like(wv) if a_b is None else a_b.view(shape)
        xhat = (x - mean.view(shape)) * r
        g_c = g - g.mean(dims, keepdim=True)
        c = (g * xhat).mean(dims, keepdim=True)
        wr = wv * r
        if a is None:
            d = s = torch.zeros_like(c)
            g_grad = xhat * a_w + a_b
            x_grad = g_c * (r * a_w) - xhat * (a_w * r * c)
        else:
            a_c = a - a.mean(dims, keepdim=True)
            d = (a * xhat).mean(dims, keepdim=True)
            s = (a * g_c).mean(dims, keepdim=True)
            g_grad = a_c * wr + xhat * (a_w - wr * d) + a_b
            x_grad = (g_c * (r * (a_w - wr * d)) - a_c * (wr * r * c)
                      + xhat * (wr * r * (3 * c * d - s) - a_w * r * c))
        w_grad = (r * (x.numel() // x.shape[1]) * (s - c * d)).view(-1)
        return g_grad, x_grad, w_grad, None, None, None


class _BatchNormTrain(torch.autograd.Function):
    """Training-mode batch norm (running statistics updated in place when given)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, b: Tensor, running_mean: Tensor | None,
                running_var: Tensor | None, momentum: float, eps: float) -> Tensor:
        out, mean, invstd = torch.native_batch_norm(x, w, b, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(x, w, mean, invstd)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        x, w, mean, invstd = ctx.saved_tensors
        if torch.is_grad_enabled():  # the backward pass is itself differentiated (create_graph)
            grads = _BatchNormBackward.apply(g, x, w, mean, invstd, ctx.eps)
        else:
            grads = torch.ops.aten.native_batch_norm_backward(g, x, w, None, None, mean, invstd, True,
                                                              ctx.eps, [True, True, True])
        return (*grads, None, None, None, None)


def _batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
                weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
                momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    if not training or weight is None or bias is None or torch.is_autocast_enabled():
        return F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    return _BatchNormTrain.apply(input, weight, bias, running_mean, running_var, momentum, eps)


class BatchNormMode(TorchFunctionMode):
    """Inside it, training-mode affine `F.batch_norm` has the cheaper double backward."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func is F.batch_norm:
            return _batch_norm(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))
