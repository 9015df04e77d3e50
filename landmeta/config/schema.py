"""The run configuration's sections and fields, with their defaults (`Config` and its parts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from landmeta.vocab import HEAD, TaskKind, TrainMethod


@dataclass
class DataConfig:
    """What the model sees of the chip store."""

    bands: list[str] | None = None  # band names to use; None = all bands of the store
    chip_size: int | None = None  # resize chips to this size; None = the store's size
    augment: bool = True  # flips and 90-degree rotations on support/query chips
    photometric: float = 0.0  # with augment: brightness, contrast and per-band shifts of this strength
    crop_scale: float = 1.0  # with augment: random square crops of this to 1 times the side, resized back


@dataclass
class TaskConfig:
    """How few-shot tasks are drawn."""

    kind: TaskKind = "classification"
    n_way: int = 4  # classification only
    k_shot: int = 2  # support samples per class (classification) or support tiles (segmentation)
    q_query: int = 4  # query samples per class (classification) or query tiles (segmentation)
    val_tasks: int = 32  # size of the saved meta-val task list
    test_tasks: int = 200  # size of the saved meta-test task list


@dataclass
class ModelConfig:
    """Model architecture, chosen by name."""

    name: str = "conv"  # conv (paper classifier), smp-classifier, unet
    width: int = 64  # conv: channels per block
    depth: int = 4  # conv: number of blocks
    encoder: str = "resnet18"  # smp encoder for smp-classifier and unet
    encoder_depth: int = 3
    decoder_channels: list[int] = field(default_factory=lambda: [64, 32, 16])
    norm: Literal["batch", "group", "instance", "none"] = "batch"
    encoder_weights: str | None = None  # path to local weights; never a hub download


@dataclass
class MetaConfig:
    """The meta-learning method and its inner and outer loops."""

    method: TrainMethod = "maml"
    inner_steps: int = 1
    inner_lr: float = 0.4
    inner_lr_mode: Literal["fixed", "lslr", "metasgd"] = "fixed"
    test_inner_steps: int = 5  # adaptation steps at validation and test time
    first_order: bool = False
    first_order_until: int = 0  # MAML++ annealing: first order for the first N outer steps
    multi_step_loss: bool = False
    multi_step_anneal: int = 100  # outer steps over which multi-step weights anneal to the last step
    meta_batch: int = 4
    outer_lr: float = 1e-3
    grad_clip: float = 10.0
    steps: int = 200
    head_pattern: str = HEAD  # first name component of the head (also matches smp's segmentation_head)
    class_head: Literal["task", "global"] = "task"  # classification: N task-local outputs, or one per
    # store class with each task using its classes' rows (the class identities carry over regions)
    per_step_bn: bool = False  # MAML++: BatchNorm running statistics kept per inner step (meta/maml.py)
    keep_norm_stats: bool = False  # BatchNorm running statistics stay the starting network's (e.g. pretrained)


@dataclass
class TrainConfig:
    """Logging, validation, checkpoints and pretraining batches."""

    val_every: int = 50
    ckpt_every: int = 50
    early_stop_patience: int = 0  # validations without improvement; 0 = never stop early
    batch_size: int = 32  # pretraining batch size
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = False  # bf16 autocast on CUDA; pretraining and first-order methods only
    compile: bool = False  # torch.compile the model for pretraining
    init_from: str | None = None  # checkpoint whose weights start the run (e.g. MAML from pretraining)
    workers: int = 0  # DataLoader processes making the next steps' tasks ahead; 0 = in the training process


@dataclass
class EvalConfig:
    """Held-out evaluation: shots, the fine-tuning grid tuned on meta-val tasks, baselines, workers."""

    shots: list[int] = field(default_factory=lambda: [0, 1, 2, 5])
    finetune_steps: list[int] = field(default_factory=lambda: [10, 50])  # grid for pretrain and random init
    finetune_lrs: list[float] = field(default_factory=lambda: [1e-3, 1e-2])
    finetune_layers: list[Literal["all", "head"]] = field(default_factory=lambda: ["all", "head"])
    adapt_steps: list[int] | None = None  # MAML-family test-time steps tried on meta-val; None = meta.test_inner_steps
    norm_stats: Literal["support", "trained", "blend"] = "support"  # BatchNorm statistics after adaptation
    tta: bool = False  # network methods predict the mean over the 8 symmetries of each query chip
    rf_trees: int = 100  # random-forest baseline
    rf_max_pixels: int = 20000  # support pixels sampled per segmentation task for the random forest
    examples: int = 2  # tasks saved as qualitative examples for the report
    bootstrap: int = 10000  # paired-bootstrap resamples
    workers: int = 1


@dataclass
class Config:
    """A whole run: data, tasks, model, method, training and evaluation."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
