"""What a run reports while it trains: `metrics.csv` rows, TensorBoard scalars, the progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

METRICS_FIELDS = ["step", "loss", "train_metric", "val_metric", "lr", "seconds"]


def tensorboard(out: Path) -> Any:
    """A TensorBoard writer in `out/tensorboard`, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(out / "tensorboard"))


def progress_bar(progress: bool, total: int, start: int) -> Any:
    """A tqdm bar over the outer steps, or None without `progress`."""
    if not progress:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=start, desc="train", unit="step")


def log_row(board: Any, bar: Any, row: dict[str, Any]) -> None:
    """Show one metrics row on TensorBoard and the progress bar."""
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
