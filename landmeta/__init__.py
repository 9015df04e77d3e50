"""landmeta: few-shot land-cover mapping by meta-learning over geographic regions.

The library API a notebook needs, one call per command (each loaded on first use, so importing
landmeta stays light):

    import landmeta
    landmeta.preprocess("sen12ms", root, "data/s", landmeta.PreprocessOptions())
    landmeta.train(landmeta.load_config("configs/sen12ms-rgb.yaml"), "data/s", "runs/maml")
    landmeta.evaluate("data/s", ["runs/maml", "runs/pretrain"], "results/r", config)
    landmeta.adapt("runs/maml/best.pt", "support/", "models/region.pt", landmeta.AdaptOptions(steps=10))
    landmeta.predict(landmeta.Checkpoint.load("models/region.pt"), "scene.tif", "maps/",
                     landmeta.PredictOptions())
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {  # public name -> (module, attribute)
    "preprocess": ("landmeta.data.preprocess", "preprocess"),
    "PreprocessOptions": ("landmeta.data.preprocess", "PreprocessOptions"),
    "train": ("landmeta.meta.trainer", "train"),
    "evaluate": ("landmeta.evaluation.protocol", "evaluate"),
    "adapt": ("landmeta.inference.adaptation", "adapt_checkpoint"),
    "AdaptOptions": ("landmeta.inference.adaptation", "AdaptOptions"),
    "LabelSource": ("landmeta.inference.labels", "LabelSource"),
    "predict": ("landmeta.inference.mapping", "predict_maps"),
    "PredictOptions": ("landmeta.inference.mapping", "PredictOptions"),
    "Checkpoint": ("landmeta.meta.checkpoint", "Checkpoint"),
    "Config": ("landmeta.config", "Config"),
    "load_config": ("landmeta.config", "load_config"),
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'landmeta' has no attribute {name!r}")
    module, attribute = _API[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
