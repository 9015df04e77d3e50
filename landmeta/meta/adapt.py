"""Test-time adaptation of a checkpoint's model to one task's support set.

MAML family: the method's own inner loop (its adapted parameters, its learned rates if any) for
`meta.test_inner_steps` steps; Proto-MAML first sets the head from the support set's class
prototypes. pretrain and random: plain fine-tuning of every parameter with Adam
(`eval.finetune_steps[0]` steps at `eval.finetune_lrs[0]` unless given). A pretrained
classifier's head covers every class of the store; for an N-way task it is replaced by an N-way
head made of the rows of the task's classes (`classes`), or zeros when they are not given.

In every case BatchNorm normalises with batch statistics during the steps; afterwards its running
statistics follow `eval.norm_stats` (`set_norm_stats`): `support` re-estimates them from the support
set at the adapted weights, `trained` keeps those learned in training, `blend` averages the two.
A random-init model has no trained statistics and always uses the support's. The returned copy is
in eval mode, so query chips are predicted one by one without seeing each other.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from landmeta.config import MetaConfig
from landmeta.errors import ModelError
from landmeta.meta.checkpoint import Checkpoint
from landmeta.meta.maml import (
    adapted_names,
    build_rates,
    build_step_norms,
    forward,
    inner_loop,
    prototype_init,
    task_loss,
)
from landmeta.models import is_head
from landmeta.vocab import MAML_METHODS

NORM_POLICIES = ("support", "trained", "blend")  # BatchNorm statistics after adaptation (eval.norm_stats)


def adapt(ckpt: Checkpoint, model: nn.Module, x_support: Tensor, y_support: Tensor,
          steps: int | None = None, lr: float | None = None,
          classes: Sequence[int] | None = None, layers: str = "all",
          norm_stats: str | None = None, on_step: Callable[[], Any] | None = None) -> nn.Module:
    """Return an adapted copy of `model` (eval mode); `model` itself is left unchanged.

    `layers` ("all" or "head") chooses what pretrain/random fine-tuning changes; `norm_stats`
    (default: the checkpoint's `eval.norm_stats`) the BatchNorm statistics used afterwards;
    `on_step()` is called after each adaptation step (a progress bar).
    """
    config, method = ckpt.config, ckpt.method
    model = copy.deepcopy(model).train()
    x_support = x_support.to(next(model.parameters()).device)
    y_support = y_support.to(x_support.device)
    if ckpt.kind == "classification":
        _fit_head(model, ckpt.global_class_head, y_support, classes)
    if len(x_support) == 0:
        return model.eval()
    with torch.enable_grad():
        if method in MAML_METHODS:
            _inner_adapt(model, ckpt, config.meta, x_support, y_support,
                         config.meta.test_inner_steps if steps is None else steps, lr, on_step)
        else:
            _finetune(model, x_support, y_support,
                      config.eval.finetune_steps[0] if steps is None else steps,
                      config.eval.finetune_lrs[0] if lr is None else lr, layers, config.meta.head_pattern, on_step)
    set_norm_stats(model, x_support, "support" if method == "random" else
                   config.eval.norm_stats if norm_stats is None else norm_stats)
    return model.eval()


def _fit_head(model: nn.Module, global_head: bool, y: Tensor, classes: Sequence[int] | None) -> None:
    """Cut a global head (pretrained, or MAML with `class_head: global`) to the task's classes;
    check that a task-local head fits the labels."""
    head = cast(nn.Linear, model.head)
    n_way = len(classes) if classes is not None else int(y.max()) + 1 if len(y) else head.out_features
    if global_head and (classes is not None or n_way != head.out_features):
        new = nn.Linear(head.in_features, n_way).to(head.weight.device)
        with torch.no_grad():
            if classes is not None:
                rows = torch.as_tensor(list(classes), device=head.weight.device)
                new.weight.copy_(head.weight[rows])
                new.bias.copy_(head.bias[rows])
            else:
                new.weight.zero_()
                new.bias.zero_()
        model.head = new
    elif n_way > head.out_features:
        raise ModelError(f"the task has {n_way} classes, the model's head {head.out_features}")


def _inner_adapt(model: nn.Module, ckpt: Checkpoint, meta: MetaConfig, x: Tensor, y: Tensor,
                 steps: int, lr: float | None, on_step: Callable[[], Any] | None) -> None:
    rates = build_rates(model, meta).to(x.device)
    if ckpt.inner_lrs is not None:
        rates.load_state_dict(ckpt.inner_lrs)
    if lr is not None:
        rates.mode, rates.lr = "fixed", lr
    names = adapted_names(model, meta.method, meta.head_pattern)
    params = {n: p.detach().requires_grad_() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    if meta.method == "protomaml":  # the head from the support's class prototypes, then the inner loop
        with torch.no_grad():
            params = prototype_init(model, params, buffers, x, y, meta.head_pattern)
        params = {n: p.detach().requires_grad_() for n, p in params.items()}
    phi = params
    for step in range(steps):  # one step at a time keeps no graph between steps
        phi = inner_loop(model, phi, buffers, rates, names, x, y, 1, first_order=True, start=step)[0]
        phi = {n: p.detach().requires_grad_() for n, p in phi.items()}
        if on_step is not None:
            on_step()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(phi[name])
    norms = build_step_norms(model, meta)  # meta.per_step_bn: the statistics of the step reached
    if norms is not None and ckpt.step_norm_stats is not None:
        norms.load_state_dict(ckpt.step_norm_stats)
        norms.load_into(model, steps)


def _finetune(model: nn.Module, x: Tensor, y: Tensor, steps: int, lr: float, layers: str, head_pattern: str,
              on_step: Callable[[], Any] | None = None) -> None:
    if layers not in ("all", "head"):
        raise ModelError(f"fine-tuning layers must be 'all' or 'head', got {layers!r}")
    for name, param in model.named_parameters():  # "head": the rest frozen, so no gradient is computed for it
        param.requires_grad_(layers == "all" or is_head(name, head_pattern))
    trained = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(trained, lr=lr)
    params: dict[str, Tensor] = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    for _ in range(steps):
        optimiser.zero_grad()
        task_loss(forward(model, params, buffers, x), y).backward()
        optimiser.step()
        if on_step is not None:
            on_step()


@torch.no_grad()
def set_norm_stats(model: nn.Module, x: Tensor, policy: str) -> None:
    """BatchNorm running statistics after adaptation: `support` (those of `x`), `trained` (kept as
    they are) or `blend` (mean and variance averaged half and half between the two)."""
    if policy not in NORM_POLICIES:
        raise ModelError(f"BatchNorm statistics policy must be one of {list(NORM_POLICIES)}, got {policy!r}")
    if policy == "trained":
        return
    stats = [(m.running_mean, m.running_var) for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]
    kept = [(mean.clone(), cast(Tensor, var).clone()) for mean, var in stats]
    reestimate_norm_stats(model, x)  # in place: `stats` now holds the support's
    if policy == "blend":
        for (mean, var), (old_mean, old_var) in zip(stats, kept):
            mean.add_(old_mean).mul_(0.5)
            cast(Tensor, var).add_(old_var).mul_(0.5)


@torch.no_grad()
def reestimate_norm_stats(model: nn.Module, x: Tensor) -> None:
    """Replace BatchNorm running statistics by those of `x` (one pass, cumulative average)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
