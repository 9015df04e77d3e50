"""Checkpoints: one `torch.save`d dict per file (see docs/architecture.md), written atomically.

A checkpoint holds only tensors and plain values (str, int, float, bool, None, lists, tuples, dicts),
and is read with `torch.load(weights_only=True)`: a file handed over by someone else cannot run code
when it is opened (docs/reliability.md).
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.torch_version import TorchVersion

from landmeta.config import config_from_dict
from landmeta.errors import CheckpointError, LandmetaError
from landmeta.io import atomic_path
from landmeta.models import build_model

FORMAT = "landmeta-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("method", "task_kind", "config", "model_state", "inner_lrs", "bands", "class_names",
            "norm", "chip_size", "in_channels", "num_classes", "step")


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


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write `payload` (with the format tag added, as plain values) to `path` atomically."""
    payload = plain({"format": FORMAT, "format_version": FORMAT_VERSION, **payload})
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a checkpoint; CheckpointError if missing, corrupt or not ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(LEGACY_SAFE_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about foreign pickle protocols: the error says enough
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found:  # a reference to a function or class: what a pickle needs to run code
            raise CheckpointError(f"{path}: refused, it holds a call to {found.group(1)} (opening it could run "
                                  "code); not a landmeta checkpoint") from exc
        raise CheckpointError(f"{path}: not a readable checkpoint (UnpicklingError)") from exc
    except Exception as exc:  # torch raises many types on a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc.__class__.__name__})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a landmeta checkpoint")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {ckpt.get('format_version')} "
                              f"(this landmeta reads {FORMAT_VERSION})")
    missing = [key for key in REQUIRED if key not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    ckpt["path"] = str(path)
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]) -> nn.Module:
    """Build the checkpoint's model, load its weights, and return it in eval mode."""
    where = ckpt.get("path", "checkpoint")
    try:
        config = config_from_dict(ckpt["config"], source=where)
        model = build_model(config.model, ckpt["in_channels"], ckpt["num_classes"], ckpt["task_kind"])
        model.load_state_dict(ckpt["model_state"])
    except LandmetaError as exc:
        raise CheckpointError(f"{where}: cannot rebuild its model ({exc})") from exc
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: weights do not fit the model "
                              f"({str(exc).splitlines()[0]})") from exc
    return model.eval()


def check_fits(ckpt: dict[str, Any], bands: list[str], task_kind: str) -> None:
    """CheckpointError unless the checkpoint was made for these bands and this task kind."""
    where = ckpt.get("path", "checkpoint")
    if list(ckpt["bands"]) != list(bands):
        raise CheckpointError(f"{where}: made for bands {ckpt['bands']}, the data has {bands}")
    if ckpt["task_kind"] != task_kind:
        raise CheckpointError(f"{where}: a {ckpt['task_kind']} checkpoint, the task is {task_kind}")
