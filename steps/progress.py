"""Progress lines for long work: done/total and throughput every ~30 s, then a final line."""

from __future__ import annotations

import sys
import time


def log(message: str) -> None:
    print(f"[spot-batch] {message}", file=sys.stdout, flush=True)


class Progress:
    def __init__(self, label: str, total: int, interval_s: float = 30.0) -> None:
        self.label = label
        self.total = total
        self.interval_s = interval_s
        self.done = 0
        self.started = time.monotonic()
        self._last_report = self.started

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def rate(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._last_report >= self.interval_s:
            self._last_report = now
            log(f"{self.label}: {self.done}/{self.total} images, {self.rate():.1f} images/s")

    def finish(self, extra: str = "") -> None:
        suffix = f", {extra}" if extra else ""
        log(
            f"{self.label}: finished {self.done}/{self.total} images in {self.elapsed_s:.1f} s "
            f"({self.rate():.1f} images/s){suffix}"
        )
