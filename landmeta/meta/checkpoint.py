"""Checkpoints: what a `.pt` file of landmeta holds (`Checkpoint`), and how it is read and written.

On disk a checkpoint is one `torch.save`d dict of tensors and plain values (str, int, float, bool,
None, lists, tuples, dicts; docs/architecture.md lists the keys), written atomically and read with
`torch.load(weights_only=True)`: a file handed over by someone else cannot run code when it is
opened (docs/reliability.md). In memory it is a frozen, typed `Checkpoint`; the dict exists only
in `Checkpoint.load` and `Checkpoint.save`.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
from torch import Tensor, nn
from torch.torch_version import TorchVersion

from landmeta.config import Config, config_from_dict, config_to_dict
from landmeta.errors import CheckpointError, LandmetaError
from landmeta.io import atomic_path
from landmeta.models import build_model
from landmeta.vocab import KINDS, MAML_METHODS, METHODS, Method, TaskKind

FORMAT = "landmeta-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("method", "task_kind", "config", "model_state", "inner_lrs", "bands", "class_names",
            "norm", "chip_size", "in_channels", "num_classes", "step")
TRAINING_KEYS = ("optimizer", "scheduler", "rng", "best_val", "stale", "processes")  # `last.pt`/`best.pt` only


@dataclass(frozen=True)
class Checkpoint:
    """A trained (or adapted, or untrained `random`) model with everything needed to use it again."""

    method: Method
    kind: TaskKind
    config: Config  # the run's whole configuration
    model_state: dict[str, Tensor]
    bands: tuple[str, ...]  # input bands, in channel order
    class_names: tuple[str, ...]  # of the store (trained) or of the support set (an adapted classifier)
    class_colors: tuple[tuple[int, int, int], ...] | None
    norm_mean: tuple[float, ...]  # per-band input normalisation (train regions of the store)
    norm_std: tuple[float, ...]
    chip_size: int  # side of the model's input
    store_chip_size: int  # side of the store's chips it was trained on (resized to chip_size)
    in_channels: int
    num_classes: int  # model outputs
    step: int  # outer steps trained
    inner_lrs: dict[str, Tensor] | None = None  # learned inner rates (lslr, Meta-SGD)
    step_norm_stats: dict[str, Tensor] | None = None  # BatchNorm statistics per inner step (meta.per_step_bn)
    provenance: dict[str, Any] = field(default_factory=dict)
    adapted_from: str | None = None  # the base checkpoint of an adapted one
    adaptation: dict[str, Any] | None = None  # support, steps, lr, ... of `landmeta adapt`
    training: dict[str, Any] | None = None  # resume state: optimiser, scheduler, RNG, best_val, stale
    path: Path | None = field(default=None, compare=False)  # the file it was read from

    @property
    def where(self) -> str:
        """The file, for messages."""
        return str(self.path) if self.path is not None else "checkpoint"

    @property
    def family(self) -> str:
        """`maml` (any MAML-family method), `pretrain` or `random`."""
        return "maml" if self.method in MAML_METHODS else self.method

    @property
    def global_class_head(self) -> bool:
        """A classifier with one output per store class: pretrained, or MAML with `meta.class_head: global`."""
        return self.kind == "classification" and (
            self.method == "pretrain" or (self.family == "maml" and self.config.meta.class_head == "global"))

    def fits(self, kind: str, bands: Sequence[str], classes: Sequence[str] | None = None,
             data: str = "the data", exact: bool = False) -> None:
        """CheckpointError unless the checkpoint suits data of this task kind with these `bands` (its own
        bands among them, picked by name; `exact`: the same bands in the same order) and, when given,
        these `classes`. `data` names the data in the message."""
        if self.kind != kind:
            raise CheckpointError(f"{self.where}: a {self.kind} checkpoint; {data} is for {kind}")
        missing = [b for b in self.bands if b not in bands]
        if missing or (exact and list(self.bands) != list(bands)):
            raise CheckpointError(f"{self.where}: made for bands {list(self.bands)}; {data} has {list(bands)}")
        if classes is not None and list(self.class_names) != list(classes):
            raise CheckpointError(f"{self.where}: classes {list(self.class_names)} do not match {data}'s "
                                  f"{list(classes)}")

    def model(self) -> nn.Module:
        """The checkpoint's model with its weights, in eval mode."""
        try:
            model = build_model(self.config.model, self.in_channels, self.num_classes, self.kind)
            model.load_state_dict(self.model_state)
        except LandmetaError as exc:
            raise CheckpointError(f"{self.where}: cannot rebuild its model ({exc})") from exc
        except RuntimeError as exc:
            raise CheckpointError(f"{self.where}: weights do not fit the model "
                                  f"({str(exc).splitlines()[0]})") from exc
        return model.eval()

    def replace(self, **changes: Any) -> Checkpoint:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The on-disk dict (plain values and tensors), keys as documented in docs/architecture.md."""
        record: dict[str, Any] = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "method": self.method, "task_kind": self.kind, "config": config_to_dict(self.config),
            "model_state": self.model_state, "inner_lrs": self.inner_lrs, "step_norm_stats": self.step_norm_stats,
            "bands": list(self.bands), "class_names": list(self.class_names),
            "class_colors": None if self.class_colors is None else [list(c) for c in self.class_colors],
            "norm": {"mean": list(self.norm_mean), "std": list(self.norm_std)},
            "chip_size": self.chip_size, "store_chip_size": self.store_chip_size,
            "in_channels": self.in_channels, "num_classes": self.num_classes, "step": self.step,
            "provenance": self.provenance,
        }
        if self.adapted_from is not None:
            record["adapted_from"] = self.adapted_from
            record["adaptation"] = self.adaptation
        return plain(record | (self.training or {}))

    @classmethod
    def from_dict(cls, record: dict[str, Any], path: Path | None = None) -> Checkpoint:
        """Check and type a checkpoint dict; CheckpointError naming the file and what is wrong."""
        where = str(path) if path is not None else "checkpoint"
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise CheckpointError(f"{where}: not a landmeta checkpoint")
        if record.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{where}: checkpoint format version {record.get('format_version')} "
                                  f"(this landmeta reads {FORMAT_VERSION})")
        missing = [key for key in REQUIRED if key not in record]
        if missing:
            raise CheckpointError(f"{where}: checkpoint lacks {', '.join(missing)}")
        if record["method"] not in METHODS or record["task_kind"] not in KINDS:
            raise CheckpointError(f"{where}: unknown method {record['method']!r} or task kind "
                                  f"{record['task_kind']!r} (methods: {', '.join(get_args(Method))})")
        try:
            config = config_from_dict(record["config"], source=f"{where} (its config)")
        except LandmetaError as exc:
            raise CheckpointError(str(exc)) from exc
        colors = record.get("class_colors")
        training = {k: record[k] for k in TRAINING_KEYS if k in record}
        try:
            return cls(
                method=record["method"], kind=record["task_kind"], config=config,
                model_state=dict(record["model_state"]),
                bands=tuple(str(b) for b in record["bands"]),
                class_names=tuple(str(n) for n in record["class_names"]),
                class_colors=tuple(tuple(int(v) for v in c) for c in colors) if colors else None,  # type: ignore[misc]
                norm_mean=tuple(float(v) for v in record["norm"]["mean"]),
                norm_std=tuple(float(v) for v in record["norm"]["std"]),
                chip_size=int(record["chip_size"]),
                store_chip_size=_store_chip_size(record),
                in_channels=int(record["in_channels"]), num_classes=int(record["num_classes"]),
                step=int(record["step"]), inner_lrs=record["inner_lrs"],
                step_norm_stats=record.get("step_norm_stats"), provenance=dict(record.get("provenance") or {}),
                adapted_from=record.get("adapted_from"), adaptation=record.get("adaptation"),
                training=training or None, path=path)
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{where}: a malformed checkpoint ({exc.__class__.__name__}: {exc})") from exc

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        """Read a checkpoint without running code; CheckpointError if missing, corrupt, refused or not ours."""
        path = Path(path)
        return cls.from_dict(_read(path), path)

    def save(self, path: str | Path) -> None:
        """Write the checkpoint to `path` atomically."""
        with atomic_path(path) as tmp:
            torch.save(self.to_dict(), tmp)


def _store_chip_size(record: dict[str, Any]) -> int:
    """Side of the chips the model was trained from: the record's `store_chip_size`; in checkpoints
    older than that key, the chip size in its training store's manifest (when that store is still
    there), else `chip_size` (native resolution)."""
    if record.get("store_chip_size"):
        return int(record["store_chip_size"])
    store = (record.get("provenance") or {}).get("store")
    manifest = Path(store) / "manifest.json" if store else None
    if manifest is not None and manifest.is_file():
        try:
            return int(json.loads(manifest.read_text())["chip_size"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return int(record["chip_size"])


# Classes that checkpoints written before plain-value saving may hold (a version string, the numpy
# random state); each only rebuilds data. Nothing else outside torch's own weights-only set loads.
LEGACY_SAFE_GLOBALS = [TorchVersion, np.ndarray, np.dtype, np.dtypes.UInt32DType,
                       np._core.multiarray._reconstruct]  # type: ignore[attr-defined]


def plain(value: Any) -> Any:
    """`value` as tensors and plain Python values only, what a weights-only load accepts."""
    if value is None or isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, np.generic):
        return value.item()
    for kind in (bool, int, float, str):  # subclasses too, e.g. torch's version string
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint")


def _read(path: Path) -> Any:
    """The stored dict, by a weights-only load; CheckpointError naming the file otherwise."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(LEGACY_SAFE_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about foreign pickle protocols: the error says enough
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found:  # a reference to a function or class: what a pickle needs to run code
            raise CheckpointError(f"{path}: refused, it holds a call to {found.group(1)} (opening it could run "
                                  "code); not a landmeta checkpoint") from exc
        raise CheckpointError(f"{path}: not a readable checkpoint (UnpicklingError)") from exc
    except Exception as exc:  # torch raises many types on a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc.__class__.__name__})") from exc
