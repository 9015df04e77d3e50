"""What a training run is made of: its checks against the store, its model, its checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landmeta.config import Config
from landmeta.data.store import ChipStore
from landmeta.data.transforms import BatchMaker
from landmeta.errors import CheckpointError, ConfigError
from landmeta.io import provenance
from landmeta.meta.checkpoint import Checkpoint
from landmeta.meta.maml import InnerRates, StepNorms, rate_mode
from landmeta.meta.prototypes import prototype_head
from landmeta.models import build_model
from landmeta.vocab import MAML_METHODS, Method, TaskKind


@dataclass
class Setup:
    """What a run needs from the store and the config: tensors maker, model shape."""

    store: ChipStore
    batches: BatchMaker
    kind: TaskKind
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
    """The run's model with its seeded random initialisation; ModelError for Proto-MAML on a model
    whose head cannot be set from prototypes."""
    torch.manual_seed(config.seed)
    model = build_model(config.model, setup.batches.in_channels, setup.num_classes, setup.kind,
                        chip_size=setup.batches.chip_size)
    if config.meta.method == "protomaml":
        prototype_head(model, config.meta.head_pattern)
    return model


def make_checkpoint(config: Config, setup: Setup, method: Method, model: nn.Module, rates: InnerRates | None,
                    step: int, norms: StepNorms | None = None,
                    training: dict[str, Any] | None = None) -> Checkpoint:
    """The checkpoint of `model` at `step` (with `training`: the state a resume needs)."""
    bm = setup.batches
    return Checkpoint(
        method=method, kind=setup.kind, config=config,
        model_state={k: v.detach().cpu() for k, v in model.state_dict().items()},
        inner_lrs=None if rates is None or not len(rates.rates) else
        {k: v.detach().cpu() for k, v in rates.state_dict().items()},
        step_norm_stats=None if norms is None else {k: v.detach().cpu() for k, v in norms.state_dict().items()},
        bands=tuple(bm.bands), class_names=tuple(setup.store.class_names),
        class_colors=tuple(tuple(int(v) for v in c) for c in setup.store.class_colors),  # type: ignore[misc]
        norm_mean=tuple(float(v) for v in bm.mean), norm_std=tuple(float(v) for v in bm.std),
        chip_size=bm.chip_size, store_chip_size=setup.store.chip_size,
        in_channels=bm.in_channels, num_classes=setup.num_classes,
        step=step, provenance=provenance(store=str(setup.store.path), seed=config.seed), training=training)


def random_checkpoint(config: Config, store: ChipStore) -> Checkpoint:
    """The `random` baseline: the run's model at its seeded random initialisation, untrained."""
    setup = prepare(config, store)
    return make_checkpoint(config, setup, "random", new_model(config, setup), None, 0)


def init_weights(model: nn.Module, path: str | Path, setup: Setup) -> None:
    """Start from the weights of another run's checkpoint (same model, task kind and bands);
    CheckpointError naming the file otherwise."""
    source = Checkpoint.load(path)
    source.fits(setup.kind, setup.batches.bands, data="this run (train.init_from)", exact=True)
    try:
        model.load_state_dict(source.model_state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: its weights do not fit this run's model (train.init_from): "
                              f"{str(exc).splitlines()[0]}") from exc


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda when available, else cpu; ConfigError for cuda without a device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda asked for, but no CUDA device is available")
    return torch.device(name)


def check_precision(config: Config, device: torch.device) -> None:
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
