"""`landmeta adapt` as a library call: a checkpoint and a support folder (or vector labels over a
scene) in, an adapted checkpoint out.

The adapted checkpoint has the same format and method as its base (so `landmeta predict`,
`landmeta evaluate` and a further `landmeta adapt` read it), without the training state, plus
`adapted_from` (the base checkpoint) and `adaptation` (support folder, tiles, chips, steps, lr).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from torch import nn

from landmeta.errors import OutputExistsError
from landmeta.inference.labels import LabelSource, read_label_support
from landmeta.inference.support import SupportSet, read_support
from landmeta.io import output_lock, provenance
from landmeta.meta.adapt import adapt
from landmeta.meta.checkpoint import Checkpoint


def resolved_steps_lr(ckpt: Checkpoint, steps: int | None, lr: float | None) -> tuple[int, float | str]:
    """The steps and learning rate `adapt` will use: as given, or the method's defaults."""
    config = ckpt.config
    if ckpt.family == "maml":
        default_lr: float | str = config.meta.inner_lr if ckpt.inner_lrs is None else "learned"
        return (config.meta.test_inner_steps if steps is None else steps), (default_lr if lr is None else lr)
    return (config.eval.finetune_steps[0] if steps is None else steps), \
        (config.eval.finetune_lrs[0] if lr is None else lr)


@dataclass(frozen=True)
class AdaptOptions:
    """How `landmeta adapt` adapts: steps and learning rate (None: the checkpoint's own), how mask ids
    or label names map to its classes, and whether an existing model may be replaced."""

    steps: int | None = None
    lr: float | None = None
    class_map: Path | None = None
    overwrite: bool = False


def adapt_checkpoint(checkpoint: str | Path, support: str | Path | LabelSource, out: str | Path,
                     options: AdaptOptions = AdaptOptions(), progress: bool = False) -> dict[str, Any]:
    """Adapt `checkpoint` to the labelled tiles in `support` (a folder, or vector labels over a scene)
    and save it to `out`; returns its `adaptation`."""
    with output_lock(out):
        return _adapt_checkpoint(Path(checkpoint), support if isinstance(support, LabelSource) else Path(support),
                                 Path(out), options, progress)


def _adapt_checkpoint(checkpoint: Path, support: Path | LabelSource, out: Path, options: AdaptOptions,
                      progress: bool) -> dict[str, Any]:
    steps, lr, class_map = options.steps, options.lr, options.class_map
    if out.exists() and not options.overwrite:
        raise OutputExistsError(f"{out}: exists (use --overwrite to replace it)")
    ckpt = Checkpoint.load(checkpoint)
    labels_record: dict[str, Any] | None = None
    if isinstance(support, LabelSource):
        labelled = read_label_support(support, ckpt, class_map, progress)
        data, source = labelled.support, Path(support.labels)
        labels_record = {
            "scene": str(Path(support.scene).resolve()), "layer": support.layer,
            "class_field": support.class_field, "point_radius": labelled.point_radius,
            "features": labelled.features, "outside": labelled.outside,
            "overlap_pixels": labelled.overlap_pixels, "windows": [list(w) for w in labelled.windows],
        }
    else:
        data, source = read_support(support, ckpt, class_map, progress), support
    steps_used, lr_used = resolved_steps_lr(ckpt, steps, lr)
    from tqdm import tqdm
    base = ckpt.model()
    started = time.perf_counter()
    with tqdm(total=steps_used, desc="adapt", unit="step", disable=not progress) as bar:
        model = adapt(ckpt, base, data.x, data.y, steps, lr, classes=data.classes, on_step=bar.update)
    seconds = time.perf_counter() - started
    adaptation = {
        "support": str(source.resolve()), "tiles": data.tiles, "chips": len(data.x),
        "steps": steps_used, "lr": lr_used, "class_map": str(class_map) if class_map else None,
        "seconds": round(seconds, 3), "provenance": provenance(),
    }
    if labels_record is not None:
        adaptation["labels"] = labels_record
    changes: dict[str, Any] = {}
    if ckpt.kind == "classification":
        changes = {"num_classes": cast(nn.Linear, model.head).out_features, **_classifier_classes(ckpt, data)}
    ckpt.replace(model_state=model.state_dict(), adapted_from=str(Path(checkpoint).resolve()), adaptation=adaptation,
                 training=None, **changes).save(out)
    return adaptation


def _classifier_classes(ckpt: Checkpoint, data: SupportSet) -> dict[str, Any]:
    """An adapted classifier's outputs are the support's classes (colours kept where names match)."""
    colors = ckpt.class_colors
    names = tuple(data.class_names)
    if colors and data.classes is not None:
        return {"class_names": names, "class_colors": tuple(colors[i] for i in data.classes)}
    return {"class_names": names, "class_colors": None}
