"""The MAML family on `torch.func.functional_call`: inner loop, learned inner rates, meta-step.

Parameters are dicts name -> tensor. The inner loop takes k SGD steps on the support set from θ,
keeping the graph (`create_graph=True`) for second-order MAML or detaching the inner gradients
for first order (dφ/dθ taken as identity). Which parameters adapt is decided by name: all
(maml, fomaml, metasgd, protomaml), the head only (anil) or the body only (boil). Proto-MAML first
sets the head from the support set's class prototypes at θ (`prototype_init`, in the graph).

BatchNorm policy: every forward pass of the inner and outer loops runs in train mode and
normalises with the statistics of its own batch (as in the original MAML). By default the running
statistics are updated only by the first support pass at θ of each task (the meta-parameters seen
on meta-train data); the passes at adapted weights are given no running statistics, so they read
and write none. At adaptation time (`landmeta.meta.adapt`) the steps also use batch statistics and
the statistics kept afterwards follow `eval.norm_stats`.

Per-step statistics (`meta.per_step_bn`, MAML++ "BNRS"): the weights after each inner step s get
their own running statistics, set s (`StepNorms`; set 0, those of θ, are the model's own buffers).
During meta-training the support pass at φ_s updates set s (s < K) and the query pass at φ_K set
K; normalisation is still by batch statistics. After s adaptation steps at test time the model
holds set min(s, K), which `eval.norm_stats: trained` (or `blend`) then uses for its predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from landmeta.classes import IGNORE_INDEX
from landmeta.config import MetaConfig
from landmeta.errors import ConfigError
from landmeta.meta.prototypes import head_input, prototype_head, prototype_rows
from landmeta.models import is_head
from landmeta.models.batchnorm import BatchNormMode
from landmeta.vocab import HEAD

Params = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]

NORM_STATS = ("running_mean", "running_var", "num_batches_tracked")  # BatchNorm buffer names


def task_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy; for segmentation (y of shape (n, H, W)) pixels equal to 255 are ignored.

    Averaged over labelled pixels; a batch with no labelled pixel gives 0, not NaN.
    """
    if y.dim() == 1:
        return F.cross_entropy(logits, y)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    total = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (y != IGNORE_INDEX).sum().clamp(min=1)


def head_rows(params: Params, head_pattern: str, rows: Tensor | None) -> Params:
    """`params` with a global classification head cut to a task's class rows (differentiable, so
    the meta-gradient reaches exactly those rows); unchanged when `rows` is None."""
    if rows is None:
        return params
    return {n: p[rows] if is_head(n, head_pattern) else p for n, p in params.items()}


def adapted_names(model: nn.Module, method: str, head_pattern: str = "head") -> list[str]:
    """Names of the parameters the inner loop changes for `method`."""
    names = [n for n, _ in model.named_parameters()]
    if method == "anil":
        names = [n for n in names if is_head(n, head_pattern)]
    elif method == "boil":
        names = [n for n in names if not is_head(n, head_pattern)]
    return names


class InnerRates(nn.Module):
    """Inner-loop learning rates: fixed (a constant), `lslr` (learned, one per parameter tensor
    and step, MAML++) or `metasgd` (learned, one per parameter element, shared across steps)."""

    def __init__(self, model: nn.Module, names: list[str], mode: str, lr: float, steps: int) -> None:
        super().__init__()
        self.mode, self.lr, self.steps = mode, lr, steps
        shapes = dict(model.named_parameters())
        self.rates = nn.ParameterDict()
        for name in names:
            key = name.replace(".", "__")
            if mode == "lslr":
                self.rates[key] = nn.Parameter(torch.full((steps,), lr, dtype=shapes[name].dtype))
            elif mode == "metasgd":
                self.rates[key] = nn.Parameter(torch.full_like(shapes[name].detach(), lr))

    def rate(self, name: str, step: int) -> Tensor | float:
        """The rate of parameter `name` at inner step `step` (steps past the trained count reuse the last)."""
        if self.mode == "fixed":
            return self.lr
        rate = self.rates[name.replace(".", "__")]
        return rate[min(step, self.steps - 1)] if self.mode == "lslr" else rate


def rate_mode(cfg: MetaConfig) -> str:
    """The inner learning-rate mode: `metasgd` for Meta-SGD, else `meta.inner_lr_mode`."""
    return "metasgd" if cfg.method == "metasgd" else cfg.inner_lr_mode


def build_rates(model: nn.Module, cfg: MetaConfig) -> InnerRates:
    """The inner learning rates of the parameters the method adapts."""
    names = adapted_names(model, cfg.method, cfg.head_pattern)
    return InnerRates(model, names, rate_mode(cfg), cfg.inner_lr, cfg.inner_steps)


def model_state(model: nn.Module) -> tuple[Params, Params]:
    """The model's parameters and buffers as dicts (the live tensors)."""
    return dict(model.named_parameters()), dict(model.named_buffers())


class StepNorms(nn.Module):
    """Per-step BatchNorm running statistics (MAML++): sets 1..K, one for the weights after each
    inner step, stored as (K, C) buffers per BatchNorm layer; set 0 is the model's own buffers.
    Every set starts as a copy of the model's statistics (those of a pretrained network when the
    run starts from one), not as zero mean and unit variance."""

    def __init__(self, model: nn.Module, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.layers = [n for n, m in model.named_modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        for name in self.layers:
            norm, key = cast(_BatchNorm, model.get_submodule(name)), name.replace(".", "__")
            assert norm.running_mean is not None and norm.running_var is not None  # tracked, so present
            assert norm.num_batches_tracked is not None
            self.register_buffer(f"{key}__mean", norm.running_mean.detach().repeat(steps, 1))
            self.register_buffer(f"{key}__var", norm.running_var.detach().repeat(steps, 1))
            self.register_buffer(f"{key}__count", norm.num_batches_tracked.new_zeros(steps))

    def _set(self, name: str, step: int) -> tuple[Tensor, Tensor, Tensor]:
        """Views of set `step` (>= 1; steps past K use set K) of layer `name`."""
        key, row = name.replace(".", "__"), min(step, self.steps) - 1
        return tuple(getattr(self, f"{key}__{part}")[row] for part in ("mean", "var", "count"))

    def at(self, buffers: Params, step: int) -> Params:
        """`buffers` with every BatchNorm's running statistics replaced by set `step`; views, so a
        train-mode pass that updates them updates the set."""
        if step == 0:
            return buffers
        out = dict(buffers)
        for name in self.layers:
            for suffix, value in zip(NORM_STATS, self._set(name, step)):
                out[f"{name}.{suffix}"] = value
        return out

    @torch.no_grad()
    def load_into(self, model: nn.Module, step: int) -> None:
        """Copy set `step` into the running statistics of `model`'s BatchNorm layers."""
        if step == 0:
            return
        for name in self.layers:
            norm = model.get_submodule(name)
            for suffix, value in zip(NORM_STATS, self._set(name, step)):
                getattr(norm, suffix).copy_(value)


def build_step_norms(model: nn.Module, cfg: MetaConfig) -> StepNorms | None:
    """The per-step statistics of `meta.per_step_bn` (None when off), on the model's device."""
    if not cfg.per_step_bn:
        return None
    norms = StepNorms(model, cfg.inner_steps)
    if not norms.layers:
        raise ConfigError("meta.per_step_bn: the model has no BatchNorm layer (model.norm must be batch)")
    return norms


def forward(model: nn.Module, params: Params, buffers: Params, x: Tensor, update_stats: bool = False,
            double_backward: bool = False) -> Tensor:
    """Run `model` with `params` and `buffers`. In train mode BatchNorm normalises with batch
    statistics and updates the running statistics in `buffers` only when `update_stats` (otherwise
    it is given none); in eval mode it normalises with those in `buffers`. `double_backward` (the
    pass's backward will itself be differentiated) selects BatchNorm's cheaper double backward."""
    if model.training and not update_stats:  # None: BatchNorm keeps no statistics (torch accepts it)
        buffers = cast(Params, {k: None if k.endswith(NORM_STATS) else v for k, v in buffers.items()})
    with BatchNormMode() if double_backward else nullcontext():
        return functional_call(model, {**params, **buffers}, (x,))


def prototype_init(model: nn.Module, params: Params, buffers: Params, x: Tensor, y: Tensor,
                   head_pattern: str = HEAD) -> Params:
    """Proto-MAML: `params` with the head set from the class prototypes of (x, y) at `params`
    (`landmeta.meta.prototypes`). The features come from a pass like the inner loop's: batch
    statistics, no running statistic read or written. Differentiable in `params`.

    The other parameters are returned as aliases (views), so that the inner loop's gradient with
    respect to them is the partial one, with the head held fixed, while the meta-gradient still
    reaches θ both directly and through the prototypes."""
    head = prototype_head(model, head_pattern)
    features = head_input(head.layer, lambda: forward(model, params, buffers, x))
    weight, bias = prototype_rows(features, y, params[head.weight], params[head.bias])
    return {**{n: p.view_as(p) for n, p in params.items()}, head.weight: weight, head.bias: bias}


def inner_loop(model: nn.Module, params: Params, buffers: Params, rates: InnerRates,
               names: list[str], x: Tensor, y: Tensor, steps: int, first_order: bool,
               update_stats: bool = False, loss_fn: LossFn = task_loss, start: int = 0,
               norms: StepNorms | None = None) -> list[Params]:
    """k SGD steps on (x, y) from `params`; returns [φ_1, ..., φ_k]. `start` is the index of the
    first step (for learned per-step rates when steps are taken one call at a time).

    `update_stats` updates the running statistics: with `norms`, those of each step's set, else the
    model's own at the first step only.

    Second order keeps the graph through every step; first order detaches the inner gradients,
    so the gradient of a loss at φ w.r.t. θ is that loss's gradient at φ.
    """
    phis: list[Params] = []
    phi = params
    for step in range(steps):
        stats = buffers if norms is None else norms.at(buffers, start + step)
        update = update_stats and (norms is not None or step == 0)
        loss = loss_fn(forward(model, phi, stats, x, update, double_backward=not first_order), y)
        grads = torch.autograd.grad(loss, [phi[n] for n in names], create_graph=not first_order)
        phi = dict(phi)
        for name, grad in zip(names, grads):
            if first_order:
                grad = grad.detach()
            phi[name] = phi[name] - rates.rate(name, start + step) * grad
        phis.append(phi)
    return phis


def step_weights(steps: int, outer_step: int, anneal: int, multi_step: bool) -> list[float]:
    """Weights of the query losses after each inner step (MAML++ multi-step loss): uniform at
    the start, annealed linearly over `anneal` outer steps to the last step alone."""
    if not multi_step or steps == 1:
        return [0.0] * (steps - 1) + [1.0]
    progress = min(1.0, outer_step / max(1, anneal))
    last = 1.0 / steps + (1.0 - 1.0 / steps) * progress
    return [(1.0 - last) / (steps - 1)] * (steps - 1) + [last]


def use_first_order(cfg: MetaConfig, outer_step: int) -> bool:
    """First order for fomaml, when `meta.first_order`, or during the first `first_order_until` steps."""
    return cfg.method == "fomaml" or cfg.first_order or outer_step < cfg.first_order_until


@dataclass
class StepResult:
    """One outer step's query loss and the logits of each task's query set."""

    loss: float  # mean weighted query loss over the task batch
    logits: list[Tensor]  # query logits at the final φ of each task (detached)


def meta_step(model: nn.Module, rates: InnerRates, cfg: MetaConfig,
              tasks: list[tuple[Tensor, Tensor, Tensor, Tensor]], outer_step: int,
              loss_fn: LossFn = task_loss, rows: list[Tensor] | None = None,
              norms: StepNorms | None = None) -> StepResult:
    """Accumulate into `.grad` of the model's and the rates' parameters the meta-gradient of the
    mean query loss over `tasks` (x_support, y_support, x_query, y_query). No optimiser step.

    `rows` (one per task) cuts a global classification head to each task's classes (Proto-MAML then
    sets those rows from the support's prototypes, `prototype_init`); `norms` holds
    per-step BatchNorm statistics (updated here, see the module docstring). With `cfg.keep_norm_stats`
    no running statistics are updated: they stay those the run started with."""
    theta, buffers = model_state(model)
    names = adapted_names(model, cfg.method, cfg.head_pattern)
    first_order = use_first_order(cfg, outer_step)
    weights = step_weights(cfg.inner_steps, outer_step, cfg.multi_step_anneal, cfg.multi_step_loss)
    total, logits_out = 0.0, []
    for index, (xs, ys, xq, yq) in enumerate(tasks):
        params = head_rows(theta, cfg.head_pattern, rows[index] if rows is not None else None)
        if cfg.method == "protomaml":
            params = prototype_init(model, params, buffers, xs, ys, cfg.head_pattern)
        phis = inner_loop(model, params, buffers, rates, names, xs, ys, cfg.inner_steps,
                          first_order, update_stats=not cfg.keep_norm_stats, loss_fn=loss_fn, norms=norms)
        loss = torch.zeros((), device=xq.device)
        for step, (weight, phi) in enumerate(zip(weights, phis), start=1):
            if weight == 0.0:
                continue
            last = norms is not None and step == len(phis)
            logits = forward(model, phi, norms.at(buffers, step) if norms is not None and last else buffers, xq,
                             update_stats=last and not cfg.keep_norm_stats)
            loss = loss + weight * loss_fn(logits, yq)
        (loss / len(tasks)).backward()
        total += loss.item() / len(tasks)
        logits_out.append(logits.detach())
    return StepResult(total, logits_out)
