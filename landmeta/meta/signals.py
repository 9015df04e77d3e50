"""Ctrl-C and SIGTERM during training: finish the step, save `last.pt`, stop."""

from __future__ import annotations

import signal
from typing import Any


class Interrupt:
    """Turns SIGINT (Ctrl-C) and SIGTERM into a flag checked after each step, so the run saves
    `last.pt` and stops. A second signal stops at once in a single process; under torchrun it is
    ignored, since torchrun forwards every signal it gets and kills the processes itself after its
    shutdown timeout (TORCH_ELASTIC_SHUTDOWN_TIMEOUT, 30 s)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, launched: bool) -> None:
        self.flag = False
        self.launched = launched
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupt:
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
