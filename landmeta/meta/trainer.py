"""Meta-training (MAML family) and pooled supervised pretraining, with validation, checkpoints and
exact resume.

Every outer step draws its tasks (or its pretraining batch) and augmentations from a generator
seeded by (seed, step), so a resumed run sees exactly the stream an uninterrupted run would; the
model, inner rates, optimiser, scheduler, early-stopping state and python/numpy/torch RNG states
are restored from `last.pt`.

This module is the loop; its parts are beside it: `run_setup` (checks, model, checkpoints made),
`steps` (one step of each method, validation), `resume`, `signals` and `progress`.
"""

from __future__ import annotations

import csv
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from landmeta.config import Config, dump_config
from landmeta.data.store import ChipStore
from landmeta.data.tasks import load_or_create_tasks, warn_left_out
from landmeta.data.transforms import BatchMaker
from landmeta.errors import CheckpointError, OutputExistsError, TrainingError
from landmeta.io import atomic_write_json, atomic_write_text, code_version, output_lock, provenance
from landmeta.meta import distributed as dd
from landmeta.meta.checkpoint import Checkpoint
from landmeta.meta.feed import steps_data
from landmeta.meta.maml import build_rates, build_step_norms
from landmeta.meta.progress import METRICS_FIELDS, log_row, progress_bar, tensorboard
from landmeta.meta.resume import check_resumable, rng_state, set_rng_state, step_of, truncate_metrics
from landmeta.meta.run_setup import check_precision, init_weights, make_checkpoint, new_model, prepare, resolve_device
from landmeta.meta.signals import Interrupt
from landmeta.meta.steps import maml_step, pretrain_step, step_data, validate
from landmeta.vocab import MAML_METHODS

STOPS = ["done", "early-stopped", "interrupted"]  # run statuses, in order of precedence across ranks


@dataclass
class TrainResult:
    """Where a run ended: its folder, last step, best validation metric and status."""

    out: Path
    step: int
    best_val: float | None  # best validation metric (accuracy or mIoU)
    status: str  # "done", "early-stopped" or "interrupted"


def train(config: Config, data: str | Path, out: str | Path, resume: bool = False,
          progress: bool = False) -> TrainResult:
    """Train `config.meta.method` on the store `data`, writing the run folder `out`.

    Under torchrun (WORLD_SIZE > 1) every process calls this: the batch is split across ranks,
    gradients are averaged (landmeta.meta.distributed) and only rank 0 validates and writes.
    """
    world = dd.world_from_env()
    device = dd.device_for(world, resolve_device(config.train.device))
    out = Path(out)
    dd.init(world, device)
    try:
        with output_lock(out) if world.main else nullcontext():
            fresh = world.main and not resume and (not out.exists() or not any(out.iterdir()))
            try:
                return _train(config, data, out, resume, progress, world, device)
            except BaseException:
                if fresh and not (out / "last.pt").exists():
                    shutil.rmtree(out, ignore_errors=True)  # nothing to resume: leave no half run
                raise
    finally:
        dd.shutdown()


def _train(config: Config, data: str | Path, out: Path, resume: bool, progress: bool,
           world: dd.World, device: torch.device) -> TrainResult:
    store = ChipStore.open(data)
    ckpt = None
    if resume:
        ckpt = Checkpoint.load(out / "last.pt")
        check_resumable(ckpt, config)
    elif world.main and out.exists() and any(out.iterdir()):
        raise OutputExistsError(f"{out}: run folder exists and is not empty (use --resume to continue it)")
    setup = prepare(config, store)
    method, meta = config.meta.method, config.meta
    dd.check_split(meta.meta_batch, config.train.batch_size, method not in MAML_METHODS, world)
    check_precision(config, device)
    model = new_model(config, setup).to(device)
    if ckpt is None and config.train.init_from:
        init_weights(model, config.train.init_from, setup)
    rates = build_rates(model, meta).to(device) if method in MAML_METHODS else None
    norms = build_step_norms(model, meta) if method in MAML_METHODS else None
    trained = list(model.parameters()) + ([] if rates is None else list(rates.parameters()))
    optimiser = torch.optim.Adam(trained, lr=meta.outer_lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, meta.steps))
    start, best, stale = 0, None, 0
    if ckpt is not None:
        try:
            state = ckpt.training or {}
            model.load_state_dict(ckpt.model_state)
            if rates is not None and ckpt.inner_lrs is not None:
                rates.load_state_dict(ckpt.inner_lrs)
            if norms is not None:
                norms.load_state_dict(ckpt.step_norm_stats or {})
            optimiser.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start, best, stale = ckpt.step, state["best_val"], state["stale"]
            set_rng_state(state["rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{ckpt.where}: cannot resume from it ({exc.__class__.__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else 'missing state'})") from exc
        if world.main:
            truncate_metrics(out / "metrics.csv", start)
    else:
        if world.main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.yaml", dump_config(config))
            atomic_write_json(out / "run.json", {"seed": config.seed, "method": method, "data": str(store.path),
                                                 "version": code_version(), "provenance": provenance(),
                                                 "processes": world.size})
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        np.random.seed(config.seed)
    if world.main and rates is not None:
        warn_left_out(store, "train", setup.kind, config.task.n_way, config.task.k_shot, config.task.q_query)
    val_tasks = load_or_create_tasks(store, "val", setup.kind, config.task.n_way, config.task.k_shot,
                                     config.task.q_query, config.task.val_tasks, config.seed) if world.main else []
    eval_batches = BatchMaker(store, config.data.bands, config.data.chip_size, augment=False)
    forward_model = cast(nn.Module, torch.compile(model)) if config.train.compile else model
    step_fn: Callable[[int, Any], tuple[float, float]] = \
        maml_step(config, setup, model, rates, device, world, norms) if rates is not None else \
        pretrain_step(forward_model, setup.kind, device, world)
    feed = steps_data(step_data(config, setup, world, rates is not None), start, meta.steps, config.train.workers)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if config.train.amp and device.type == "cuda" \
        else nullcontext()
    board = tensorboard(out) if world.main else None
    bar = progress_bar(progress and world.main, meta.steps, start)

    def save(path: Path, step: int) -> None:
        if world.main:
            make_checkpoint(config, setup, method, model, rates, step, norms, training={
                "optimizer": optimiser.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
                "best_val": best, "stale": stale, "processes": world.size}).save(path)
        dd.barrier(world)

    status, step = "done", start
    started = time.perf_counter()
    dd.barrier(world)  # rank 0 has checked and created the run folder
    metrics_file = open(out / "metrics.csv", "a", newline="") if world.main else open(os.devnull, "w")
    with Interrupt("TORCHELASTIC_RUN_ID" in os.environ) as interrupt, metrics_file as fh:
        writer = csv.DictWriter(fh, fieldnames=METRICS_FIELDS)
        if world.main and fh.tell() == 0:
            writer.writeheader()
        for step, step_input in zip(range(start + 1, meta.steps + 1), feed):
            model.train()
            optimiser.zero_grad(set_to_none=True)
            buffers = {k: v.clone() for k, v in model.named_buffers()} if world.active else {}
            step_sets = {k: v.clone() for k, v in norms.named_buffers()} if world.active and norms else {}
            with amp:
                loss, metric = step_fn(step - 1, step_input)
            dd.reduce_gradients(trained, world)
            dd.reduce_buffers(model, buffers, world)
            if norms is not None:
                dd.reduce_buffers(norms, step_sets, world)
            norm = float(nn.utils.clip_grad_norm_(trained, meta.grad_clip))
            if not (math.isfinite(loss) and math.isfinite(norm)):
                last = out / "last.pt"
                kept = f"last good checkpoint {last} (step {step_of(last)})" if last.exists() else \
                    "no checkpoint written yet"
                what = f"loss became {loss}" if not math.isfinite(loss) else f"gradient norm became {norm}"
                raise TrainingError(f"{out}: {what} at step {step}; stopped, {kept}")
            optimiser.step()
            scheduler.step()
            row = {"step": step, "loss": loss, "train_metric": metric, "val_metric": "",
                   "lr": scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - started, 3)}
            if (step % config.train.val_every == 0 or step == meta.steps) and world.main:
                val = validate(make_checkpoint(config, setup, method, model, rates, step, norms), model,
                               val_tasks, eval_batches, device)
                row["val_metric"] = val
                if best is None or val > best:
                    best, stale = val, 0
                    make_checkpoint(config, setup, method, model, rates, step, norms,
                                    training={"best_val": best}).save(out / "best.pt")
                else:
                    stale += 1
                if config.train.early_stop_patience and stale >= config.train.early_stop_patience:
                    status = "early-stopped"
            writer.writerow(row)
            fh.flush()
            log_row(board, bar, row)
            if interrupt.flag:
                status = "interrupted"
            status = STOPS[dd.agree(STOPS.index(status), world)]  # rank 0 decides early stops
            if step % config.train.ckpt_every == 0 or step == meta.steps or status != "done":
                save(out / "last.pt", step)
            if status != "done":
                break
    if bar is not None:
        bar.close()
    if board is not None:
        board.close()
    return TrainResult(out, step, best, status)
