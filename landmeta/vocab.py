"""The words every layer shares, each defined once: task kinds, region splits and method names.

They are `Literal` types, so a type checker sees a misspelt kind or method; the tuples beside them
are what code iterates over and what error messages list. Values are checked once at the edge
(config loading, checkpoint loading, CLI choices).
"""

from __future__ import annotations

from typing import Literal, get_args

TaskKind = Literal["classification", "segmentation"]
KINDS: tuple[TaskKind, ...] = get_args(TaskKind)

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = get_args(Split)

MamlMethod = Literal["maml", "fomaml", "metasgd", "anil", "boil", "protomaml"]  # MAML family: a learned initialisation
MAML_METHODS: tuple[MamlMethod, ...] = get_args(MamlMethod)
TrainMethod = Literal[MamlMethod, "pretrain"]  # what `landmeta train` runs (meta.method)
TRAIN_METHODS: tuple[TrainMethod, ...] = get_args(TrainMethod)
Method = Literal[TrainMethod, "random"]  # what a checkpoint was made by ("random": untrained, seeded init)
METHODS: tuple[Method, ...] = get_args(Method)

HEAD = "head"  # name of a model's last layer (`segmentation_head` in an smp U-Net); `meta.head_pattern`
