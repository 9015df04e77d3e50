"""Meta-training (MAML family) and pooled supervised pretraining, with validation, checkpoints and
exact resume.

Every outer step draws its tasks (or its pretraining batch) and augmentations from a generator
seeded by (seed, step), so a resumed run sees exactly the stream an uninterrupted run would; the
model, inner rates, optimiser, scheduler, early-stopping state and python/numpy/torch RNG states
are restored from `last.pt`.
"""

from __future__ import annotations

import csv
import math
import os
import random
import shutil
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from landmeta.config import Config, config_from_dict, config_to_dict, dump_config
from landmeta.data.store import ChipStore
from landmeta.data.tasks import Task, load_or_create_tasks
from landmeta.data.transforms import BatchMaker
from landmeta.errors import CheckpointError, ConfigError, OutputExistsError, TrainingError
from landmeta.io import atomic_write_json, atomic_write_text, code_version, output_lock, provenance
from landmeta.meta import distributed as dd
from landmeta.meta.adapt import adapt
from landmeta.meta.checkpoint import load_checkpoint, save_checkpoint
from landmeta.meta.feed import MetaBatches, PooledBatches, TaskDraw, pretraining_pool, steps_data
from landmeta.meta.maml import InnerRates, StepNorms, build_rates, build_step_norms, meta_step, rate_mode, task_loss
from landmeta.metrics import metric_names, task_metrics
from landmeta.models import build_model
from landmeta.vocab import MAML_METHODS

METRICS_FIELDS = ["step", "loss", "train_metric", "val_metric", "lr", "seconds"]
STOPS = ["done", "early-stopped", "interrupted"]  # run statuses, in order of precedence across ranks
RESUMABLE_CHANGES = ("train.", "meta.steps", "eval.")  # config keys a resumed run may change


@dataclass
class TrainResult:
    out: Path
    step: int
    best_val: float | None  # best validation metric (accuracy or mIoU)
    status: str  # "done", "early-stopped" or "interrupted"


@dataclass
class Setup:
    """What a run needs from the store and the config: tensors maker, model shape."""

    store: ChipStore
    batches: BatchMaker
    kind: str
    num_classes: int


def prepare(config: Config, store: ChipStore) -> Setup:
    """Check the config against the store; ConfigError/StoreError naming what does not fit."""
    kind, method = config.task.kind, config.meta.method
    if kind not in store.kinds:
        raise ConfigError(f"{store.path}: the store has no {kind} data (kinds: {store.kinds}); "
                          f"set task.kind")
    batches = BatchMaker(store, config.data.bands, config.data.chip_size, augment=config.data.augment,
                         photometric=config.data.photometric, crop_scale=config.data.crop_scale)
    if kind == "classification" and not 2 <= config.task.n_way <= store.num_classes:
        raise ConfigError(f"{store.path}: task.n_way={config.task.n_way} does not fit the store's "
                          f"{store.num_classes} classes")
    if method in MAML_METHODS and config.meta.inner_steps < 1:
        raise ConfigError(f"meta.inner_steps must be >= 1 for {method}, got {config.meta.inner_steps}")
    global_head = kind == "classification" and config.meta.class_head == "global"
    if global_head and method in MAML_METHODS and rate_mode(config.meta) == "metasgd":
        raise ConfigError("meta.class_head=global does not combine with per-parameter (Meta-SGD) rates; "
                          "use inner_lr_mode fixed or lslr")
    pooled = kind == "segmentation" or method == "pretrain" or global_head
    return Setup(store, batches, kind, store.num_classes if pooled else config.task.n_way)


def new_model(config: Config, setup: Setup) -> nn.Module:
    """The run's model with its seeded random initialisation."""
    torch.manual_seed(config.seed)
    return build_model(config.model, setup.batches.in_channels, setup.num_classes, setup.kind,
                       chip_size=setup.batches.chip_size)


def checkpoint_payload(config: Config, setup: Setup, method: str, model: nn.Module,
                       rates: InnerRates | None, step: int, norms: StepNorms | None = None,
                       **extra: Any) -> dict[str, Any]:
    """A checkpoint dict (docs/architecture.md) for `model` at `step`."""
    bm = setup.batches
    return {
        "method": method, "task_kind": setup.kind, "config": config_to_dict(config),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "inner_lrs": None if rates is None or not len(rates.rates) else
        {k: v.detach().cpu() for k, v in rates.state_dict().items()},
        "step_norm_stats": None if norms is None else {k: v.detach().cpu() for k, v in norms.state_dict().items()},
        "bands": list(bm.bands), "class_names": list(setup.store.class_names),
        "class_colors": [list(c) for c in setup.store.class_colors],
        "norm": {"mean": [float(v) for v in bm.mean], "std": [float(v) for v in bm.std]},
        "chip_size": bm.chip_size, "store_chip_size": setup.store.chip_size,
        "in_channels": bm.in_channels, "num_classes": setup.num_classes,
        "step": step, "provenance": provenance(store=str(setup.store.path), seed=config.seed), **extra,
    }


def random_checkpoint(config: Config, store: ChipStore) -> dict[str, Any]:
    """The `random` baseline: the run's model at its seeded random initialisation, untrained."""
    setup = prepare(config, store)
    return checkpoint_payload(config, setup, "random", new_model(config, setup), None, 0)


def init_weights(model: nn.Module, path: str | Path, setup: Setup) -> None:
    """Start from the weights of another run's checkpoint (same model, task kind and bands);
    CheckpointError naming the file otherwise."""
    source = load_checkpoint(path)
    if source["task_kind"] != setup.kind or list(source["bands"]) != list(setup.batches.bands):
        raise CheckpointError(f"{path}: a {source['task_kind']} checkpoint on bands {source['bands']} cannot "
                              f"start a {setup.kind} run on {setup.batches.bands} (train.init_from)")
    try:
        model.load_state_dict(source["model_state"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: its weights do not fit this run's model (train.init_from): "
                              f"{str(exc).splitlines()[0]}") from exc


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda asked for, but no CUDA device is available")
    return torch.device(name)


def _check_precision(config: Config, device: torch.device) -> None:
    """ConfigError for train.amp or train.compile where they are not validated: mixed precision only for
    pretraining and first-order methods on CUDA; compilation only for the pretraining forward pass."""
    method = config.meta.method
    first_order = method == "fomaml" or (config.meta.first_order and method in MAML_METHODS)
    if config.train.amp and device.type == "cuda" and not (method == "pretrain" or first_order):
        raise ConfigError(f"train.amp is validated only for pretrain and first-order methods, not {method} "
                          f"(set meta.first_order=true or train.amp=false)")
    if config.train.compile and method != "pretrain":
        raise ConfigError(f"train.compile applies to pretraining only (the MAML family runs the model "
                          f"through torch.func.functional_call), not {method}")


def headline(kind: str, logits: Tensor, y: Tensor) -> float:
    """Accuracy (classification) or mIoU over present classes (segmentation) of a batch."""
    pred, truth = logits.argmax(1).cpu().numpy(), y.cpu().numpy()
    if kind == "segmentation" and not (truth != 255).any():
        return float("nan")
    return task_metrics(kind, truth, pred)[metric_names(kind)[0]]


def validate(ckpt: dict[str, Any], model: nn.Module, tasks: list[Task], batches: BatchMaker,
             device: torch.device) -> float:
    """Mean headline metric over saved tasks after test-time adaptation (as at evaluation)."""
    values = []
    for task in tasks:
        t = batches.task_tensors(task)
        adapted = adapt(ckpt, model, t.x_support.to(device), t.y_support.to(device),
                        classes=task.classes)
        with torch.no_grad():
            values.append(headline(ckpt["task_kind"], adapted(t.x_query.to(device)), t.y_query))
    return float(np.nanmean(values))


class _Interrupt:
    """Turns SIGINT (Ctrl-C) and SIGTERM into a flag checked after each step, so the run saves
    `last.pt` and stops. A second signal stops at once in a single process; under torchrun it is
    ignored, since torchrun forwards every signal it gets and kills the processes itself after its
    shutdown timeout (TORCH_ELASTIC_SHUTDOWN_TIMEOUT, 30 s)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, launched: bool) -> None:
        self.flag = False
        self.launched = launched
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupt:
        try:
            self.previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        except ValueError:  # not the main thread: leave the signals alone
            self.previous = {}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.flag and not self.launched:
            raise KeyboardInterrupt
        self.flag = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _rng_state() -> dict[str, Any]:
    """Every generator's state as tensors and plain values (what a checkpoint may hold)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": (name, keys.tolist(), pos, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_resumable(ckpt: dict[str, Any], config: Config) -> None:
    """CheckpointError if `config` differs from the run's in anything but train.*, eval.*, meta.steps
    (options added since the run was made count with their defaults)."""
    old = _flatten(config_to_dict(config_from_dict(ckpt["config"], source=str(ckpt["path"]))))
    new = _flatten(config_to_dict(config))
    changed = [k for k in sorted(set(old) | set(new))
               if old.get(k) != new.get(k) and not k.startswith(RESUMABLE_CHANGES)]
    if changed:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:3])
        raise CheckpointError(f"{ckpt['path']}: the run was made with another config ({shown})")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


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
        ckpt = load_checkpoint(out / "last.pt")
        _check_resumable(ckpt, config)
    elif world.main and out.exists() and any(out.iterdir()):
        raise OutputExistsError(f"{out}: run folder exists and is not empty (use --resume to continue it)")
    setup = prepare(config, store)
    method, meta = config.meta.method, config.meta
    dd.check_split(meta.meta_batch, config.train.batch_size, method not in MAML_METHODS, world)
    _check_precision(config, device)
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
            model.load_state_dict(ckpt["model_state"])
            if rates is not None and ckpt["inner_lrs"] is not None:
                rates.load_state_dict(ckpt["inner_lrs"])
            if norms is not None:
                norms.load_state_dict(ckpt["step_norm_stats"])
            optimiser.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            start, best, stale = ckpt["step"], ckpt["best_val"], ckpt["stale"]
            _set_rng_state(ckpt["rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{ckpt['path']}: cannot resume from it ({exc.__class__.__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else 'missing state'})") from exc
        if world.main:
            _truncate_metrics(out / "metrics.csv", start)
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
    val_tasks = load_or_create_tasks(store, "val", setup.kind, config.task.n_way, config.task.k_shot,
                                     config.task.q_query, config.task.val_tasks, config.seed) if world.main else []
    eval_batches = BatchMaker(store, config.data.bands, config.data.chip_size, augment=False)
    forward_model = torch.compile(model) if config.train.compile else model
    step_fn = _maml_step(config, setup, model, rates, device, world, norms) if rates is not None else \
        _pretrain_step(forward_model, setup.kind, device, world)
    feed = steps_data(_step_data(config, setup, world, rates is not None), start, meta.steps, config.train.workers)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if config.train.amp and device.type == "cuda" \
        else nullcontext()
    board = _tensorboard(out) if world.main else None
    bar = _bar(progress and world.main, meta.steps, start)

    def save(path: Path, step: int) -> None:
        if world.main:
            save_checkpoint(path, checkpoint_payload(
                config, setup, method, model, rates, step, norms, optimizer=optimiser.state_dict(),
                scheduler=scheduler.state_dict(), rng=_rng_state(), best_val=best, stale=stale,
                processes=world.size))
        dd.barrier(world)

    status, step = "done", start
    started = time.perf_counter()
    dd.barrier(world)  # rank 0 has checked and created the run folder
    metrics_file = open(out / "metrics.csv", "a", newline="") if world.main else open(os.devnull, "w")
    with _Interrupt("TORCHELASTIC_RUN_ID" in os.environ) as interrupt, metrics_file as fh:
        writer = csv.DictWriter(fh, fieldnames=METRICS_FIELDS)
        if world.main and fh.tell() == 0:
            writer.writeheader()
        for step, data in zip(range(start + 1, meta.steps + 1), feed):
            model.train()
            optimiser.zero_grad(set_to_none=True)
            buffers = {k: v.clone() for k, v in model.named_buffers()} if world.active else {}
            step_sets = {k: v.clone() for k, v in norms.named_buffers()} if world.active and norms else {}
            with amp:
                loss, metric = step_fn(step - 1, data)
            dd.reduce_gradients(trained, world)
            dd.reduce_buffers(model, buffers, world)
            if norms is not None:
                dd.reduce_buffers(norms, step_sets, world)
            norm = float(nn.utils.clip_grad_norm_(trained, meta.grad_clip))
            if not (math.isfinite(loss) and math.isfinite(norm)):
                last = out / "last.pt"
                kept = f"last good checkpoint {last} (step {_step_of(last)})" if last.exists() else \
                    "no checkpoint written yet"
                what = f"loss became {loss}" if not math.isfinite(loss) else f"gradient norm became {norm}"
                raise TrainingError(f"{out}: {what} at step {step}; stopped, {kept}")
            optimiser.step()
            scheduler.step()
            row = {"step": step, "loss": loss, "train_metric": metric, "val_metric": "",
                   "lr": scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - started, 3)}
            if (step % config.train.val_every == 0 or step == meta.steps) and world.main:
                val = validate(checkpoint_payload(config, setup, method, model, rates, step, norms), model,
                               val_tasks, eval_batches, device)
                row["val_metric"] = val
                if best is None or val > best:
                    best, stale = val, 0
                    save_checkpoint(out / "best.pt", checkpoint_payload(config, setup, method, model, rates,
                                                                        step, norms, best_val=best))
                else:
                    stale += 1
                if config.train.early_stop_patience and stale >= config.train.early_stop_patience:
                    status = "early-stopped"
            writer.writerow(row)
            fh.flush()
            _log(board, bar, row)
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


def _maml_step(config: Config, setup: Setup, model: nn.Module, rates: InnerRates,
               device: torch.device, world: dd.World,
               norms: StepNorms | None = None) -> Callable[[int, list[TaskDraw]], tuple[float, float]]:
    """One outer step on this rank's tasks of the meta-batch (made by `feed.MetaBatches`)."""

    def step(index: int, draws: list[TaskDraw]) -> tuple[float, float]:
        batch = [tuple(dd.to_device(v, device) for v in (d.tensors.x_support, d.tensors.y_support,
                                                         d.tensors.x_query, d.tensors.y_query)) for d in draws]
        rows = [torch.as_tensor(d.classes, device=device) for d in draws]
        global_head = setup.kind == "classification" and config.meta.class_head == "global"
        result = meta_step(model, rates, config.meta, batch, index, rows=rows if global_head else None,
                           norms=norms)
        metric_sum, metric_count = dd.mean_over_ranks(
            [headline(setup.kind, lg, d.tensors.y_query) for lg, d in zip(result.logits, draws)], world)
        loss_sum, _ = dd.mean_over_ranks([result.loss], world)
        return loss_sum / world.size, metric_sum / metric_count if metric_count else float("nan")

    return step


def _pretrain_step(model: nn.Module, kind: str, device: torch.device,
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


def _step_data(config: Config, setup: Setup, world: dd.World, maml: bool) -> Dataset:
    """The data of every outer step: task i of step s drawn from a generator seeded by (seed, s, i),
    so each rank draws only its own tasks; a pretraining batch from (seed, s)."""
    task = config.task
    if maml:
        return MetaBatches(setup.store, setup.batches, setup.kind, task.n_way, task.k_shot, task.q_query,
                           config.meta.meta_batch, config.seed, world)
    return PooledBatches(setup.batches, pretraining_pool(setup.store, setup.kind), setup.kind,
                         config.train.batch_size, config.seed, world)


def _step_of(path: Path) -> int | str:
    try:
        return load_checkpoint(path)["step"]
    except CheckpointError:
        return "unreadable"


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the metrics rows up to `step` (a resumed run rewrites the later ones)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= step]
    lines = [",".join(METRICS_FIELDS)] + [",".join(r[f] for f in METRICS_FIELDS) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _bar(progress: bool, total: int, start: int) -> Any:
    if not progress:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=start, desc="train", unit="step")


def _log(board: Any, bar: Any, row: dict[str, Any]) -> None:
    if board is not None:
        for key in ("loss", "train_metric", "val_metric", "lr"):
            if row[key] != "":
                board.add_scalar(key, row[key], row["step"])
    if bar is not None:
        shown = {"loss": f"{row['loss']:.3f}", "metric": f"{row['train_metric']:.3f}"}
        if row["val_metric"] != "":
            shown["val"] = f"{row['val_metric']:.3f}"
        bar.set_postfix(shown, refresh=False)
        bar.update(1)
