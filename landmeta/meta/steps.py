"""One outer step of each kind of training (MAML family, pooled pretraining), the data of every step,
and validation by test-time adaptation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from landmeta.classes import IGNORE_INDEX
from landmeta.config import Config
from landmeta.data.tasks import Task
from landmeta.data.transforms import BatchMaker
from landmeta.meta import distributed as dd
from landmeta.meta.adapt import adapt
from landmeta.meta.checkpoint import Checkpoint
from landmeta.meta.feed import MetaBatches, PooledBatches, TaskDraw, pretraining_pool
from landmeta.meta.maml import InnerRates, StepNorms, meta_step, task_loss
from landmeta.meta.run_setup import Setup
from landmeta.metrics import metric_names, task_metrics


def headline(kind: str, logits: Tensor, y: Tensor) -> float:
    """Accuracy (classification) or mIoU over present classes (segmentation) of a batch."""
    pred, truth = logits.argmax(1).cpu().numpy(), y.cpu().numpy()
    if kind == "segmentation" and not (truth != IGNORE_INDEX).any():
        return float("nan")
    return task_metrics(kind, truth, pred)[metric_names(kind)[0]]


def validate(ckpt: Checkpoint, model: nn.Module, tasks: list[Task], batches: BatchMaker,
             device: torch.device) -> float:
    """Mean headline metric over saved tasks after test-time adaptation (as at evaluation)."""
    values = []
    for task in tasks:
        t = batches.task_tensors(task)
        adapted = adapt(ckpt, model, t.x_support.to(device), t.y_support.to(device),
                        classes=task.classes)
        with torch.no_grad():
            values.append(headline(ckpt.kind, adapted(t.x_query.to(device)), t.y_query))
    return float(np.nanmean(values))


def maml_step(config: Config, setup: Setup, model: nn.Module, rates: InnerRates,
               device: torch.device, world: dd.World,
               norms: StepNorms | None = None) -> Callable[[int, list[TaskDraw]], tuple[float, float]]:
    """One outer step on this rank's tasks of the meta-batch (made by `feed.MetaBatches`)."""

    def step(index: int, draws: list[TaskDraw]) -> tuple[float, float]:
        batch = [(dd.to_device(d.tensors.x_support, device), dd.to_device(d.tensors.y_support, device),
                  dd.to_device(d.tensors.x_query, device), dd.to_device(d.tensors.y_query, device)) for d in draws]
        rows = [torch.as_tensor(d.classes, device=device) for d in draws]
        global_head = setup.kind == "classification" and config.meta.class_head == "global"
        result = meta_step(model, rates, config.meta, batch, index, rows=rows if global_head else None,
                           norms=norms)
        metric_sum, metric_count = dd.mean_over_ranks(
            [headline(setup.kind, lg, d.tensors.y_query) for lg, d in zip(result.logits, draws)], world)
        loss_sum, _ = dd.mean_over_ranks([result.loss], world)
        return loss_sum / world.size, metric_sum / metric_count if metric_count else float("nan")

    return step


def pretrain_step(model: nn.Module, kind: str, device: torch.device,
                   world: dd.World) -> Callable[[int, tuple[Tensor, Tensor]], tuple[float, float]]:
    """One step on this rank's share of the pooled batch (made by `feed.PooledBatches`); BatchNorm
    sees each rank's share, as in data-parallel training."""

    def step(index: int, batch: tuple[Tensor, Tensor]) -> tuple[float, float]:
        x, y = batch
        logits = model(dd.to_device(x, device))
        loss = task_loss(logits, dd.to_device(y, device))
        loss.backward()
        loss_sum, _ = dd.mean_over_ranks([loss.item()], world)
        metric_sum, metric_count = dd.mean_over_ranks([headline(kind, logits.detach(), y)], world)
        return loss_sum / world.size, metric_sum / metric_count if metric_count else float("nan")

    return step


def step_data(config: Config, setup: Setup, world: dd.World, maml: bool) -> Dataset:
    """The data of every outer step: task i of step s drawn from a generator seeded by (seed, s, i),
    so each rank draws only its own tasks; a pretraining batch from (seed, s)."""
    task = config.task
    if maml:
        return MetaBatches(setup.store, setup.batches, setup.kind, task.n_way, task.k_shot, task.q_query,
                           config.meta.meta_batch, config.seed, world)
    return PooledBatches(setup.batches, pretraining_pool(setup.store, setup.kind), setup.kind,
                         config.train.batch_size, config.seed, world)
