"""The methods an evaluation compares: each checkpoint's own (MAML family, pretrain), random init, the
random forest on band values (rf), and on each checkpoint's features the nearest-class-mean (ncm)
classifiers and the random forest on band values plus those features (rff); where checkpoints come
from; the grids tuned on meta-val."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from landmeta.config import Config, config_to_dict
from landmeta.data.store import ChipStore
from landmeta.errors import CheckpointError, ModelError
from landmeta.meta.checkpoint import Checkpoint
from landmeta.meta.prototypes import prototype_head
from landmeta.vocab import TRAIN_METHODS

CHECKPOINT_NAMES = ("best.pt", "last.pt")  # what `landmeta train` writes into a run folder
TUNED_FAMILIES = ("maml", "pretrain", "random")  # methods with settings chosen on meta-val
UNTUNED_FAMILIES = ("rf", "ncm", "rff")  # scored on meta-val (for the choice of method) with one setting
FEATURE_FAMILIES = ("ncm", "rff")  # baselines on a checkpoint's head inputs (`baselines.head_inputs`)


@dataclass
class Method:
    """One evaluated method: its family (maml, pretrain, random, rf, ncm, rff) and, for networks, a model."""

    name: str
    family: str
    ckpt: Checkpoint | None = None
    model: nn.Module | None = None
    zero_shot: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def checkpoint(self) -> Checkpoint:
        """The checkpoint of a network method (every family but rf)."""
        assert self.ckpt is not None, f"{self.name} is not a network"
        return self.ckpt

    @property
    def network(self) -> nn.Module:
        """The trained network of a checkpoint's own method or of a baseline on its features."""
        assert self.model is not None, f"{self.name} has no trained network"
        return self.model


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's best.pt (else last.pt); CheckpointError naming the path otherwise."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"{path}: no checkpoint or run folder here")
    for name in CHECKPOINT_NAMES:
        if (path / name).is_file():
            return path / name
    raise CheckpointError(f"{path}: run folder without a checkpoint ({' or '.join(CHECKPOINT_NAMES)})")


def tuning_grid(config: Config, family: str = "pretrain") -> list[dict[str, Any]]:
    """The candidates tried on meta-val: test-time inner steps for the MAML family (`eval.adapt_steps`;
    none given: the checkpoint's `meta.test_inner_steps` alone), fine-tuning steps × lr × layers for
    pretrain or random init, one empty setting for the untuned baselines (`UNTUNED_FAMILIES`).

    For pretraining, 0 steps (no fine-tuning: the network as trained, its head cut to the task's
    classes) is one candidate, without learning rate or layers. A random-init network is
    always trained, and in all its layers (its random features are worth nothing alone)."""
    cfg = config.eval
    if family in UNTUNED_FAMILIES:
        return [{}]
    if family == "maml":
        return [{"steps": s} for s in cfg.adapt_steps] if cfg.adapt_steps else [{"steps": None}]
    grid: list[dict[str, Any]] = [{"steps": s, "lr": lr, "layers": layers}
            for s, lr, layers in itertools.product(cfg.finetune_steps, cfg.finetune_lrs, cfg.finetune_layers)]
    if family == "random":
        grid = [hp for hp in grid if hp["steps"] > 0 and hp["layers"] == "all"]
        return grid or [{"steps": max(cfg.finetune_steps), "lr": max(cfg.finetune_lrs), "layers": "all"}]
    zero = [{"steps": 0, "lr": None, "layers": None}] if 0 in cfg.finetune_steps else []
    return zero + [hp for hp in grid if hp["steps"] != 0]


def load_methods(checkpoints: list[str], store: ChipStore, kind: str, seed: int) -> list[Method]:
    """The checkpoints' methods plus random init, random forest, and nearest class means and random
    forests on each checkpoint's features, in report order."""
    runs: list[Method] = []
    for path in checkpoints:
        ckpt = Checkpoint.load(path)
        ckpt.fits(kind, store.bands, store.class_names, data=f"the store {store.path}")
        family = ckpt.family
        if family == "random":
            raise CheckpointError(f"{path}: method {ckpt.method!r} cannot be evaluated here "
                                  f"(expected one of {list(TRAIN_METHODS)})")
        name: str = ckpt.method
        if any(m.name == name for m in runs):
            name = f"{name}-{Path(path).parent.name if Path(path).parent.name else len(runs)}"
        model = ckpt.model()
        if ckpt.method == "protomaml":
            try:
                prototype_head(model, ckpt.config.meta.head_pattern)
            except ModelError as exc:
                raise CheckpointError(f"{path}: {exc}") from exc
        # a Proto-MAML classifier sets every row of its head from the support: its own rows are never trained
        zero = (family == "pretrain" or (ckpt.global_class_head and ckpt.method != "protomaml")
                or (kind == "segmentation" and ckpt.num_classes == store.num_classes))
        runs.append(Method(name, family, ckpt, model, zero_shot=zero,
                           info={"family": family, "checkpoint": str(path), "checkpoint_method": ckpt.method,
                                 "step": ckpt.step, "provenance": ckpt.provenance,
                                 "config": config_to_dict(ckpt.config)}))
    if not runs:
        raise CheckpointError("no checkpoint given (--runs)")
    first = runs[0].checkpoint
    for m in runs[1:]:
        for key in ("bands", "chip_size"):
            if getattr(m.checkpoint, key) != getattr(first, key):
                raise CheckpointError(f"{m.checkpoint.where}: {key} {getattr(m.checkpoint, key)} differ from {first.where}'s "
                                      f"{getattr(first, key)}")
        if not (np.allclose(m.checkpoint.norm_mean, first.norm_mean) and np.allclose(m.checkpoint.norm_std, first.norm_std)):
            raise CheckpointError(f"{m.checkpoint.where}: normalisation statistics differ from {first.where}'s "
                                  "(trained on another store)")
    base = next((m for m in runs if m.family == "pretrain"), runs[0])
    methods = list(runs)
    methods.append(Method("random", "random", base.checkpoint.replace(method="random"),
                          info={"family": "random", "architecture_of": base.checkpoint.where}))
    methods.append(Method("rf", "rf", info={"family": "rf"}))
    methods += [Method(f"{family}-{m.name}", family, m.checkpoint, m.model,
                       info={"family": family, "features_of": m.checkpoint.where})
                for family in FEATURE_FAMILIES for m in runs]
    return methods


def check_heads(methods: list[Method], kind: str, n_way: int | None, tasks: str) -> None:
    """CheckpointError for a MAML-family classifier whose task-local head does not have `n_way` outputs."""
    for m in methods:
        if (kind == "classification" and m.family == "maml" and m.ckpt is not None
                and not m.ckpt.global_class_head and m.ckpt.num_classes != n_way):
            raise CheckpointError(f"{m.ckpt.where}: a {m.ckpt.num_classes}-way classifier; {tasks}")
