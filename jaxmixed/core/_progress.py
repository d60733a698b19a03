"""Progress reports for long loops (training epochs, chunks of many fits)."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """tqdm when installed, else one line per report; silent for the first second."""

    def __init__(self, total: int, unit: str, verbose: bool):
        self.verbose, self.start, self.bar = verbose, time.perf_counter(), None
        if verbose:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, unit=unit, delay=1.0, leave=False)
        self.unit, self.total, self.done = unit, total, 0

    def update(self, n: int, **info: float) -> None:
        self.done += n
        if not self.verbose:
            return
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in info.items()}, refresh=False)
        elif time.perf_counter() - self.start > 1.0:
            text = " ".join(f"{k}={v:.4g}" for k, v in info.items())
            print(f"{self.unit} {self.done}/{self.total} {text}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
