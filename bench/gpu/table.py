"""The device check's table: one row per measurement, printed the moment it is measured."""

from __future__ import annotations

import time
from collections.abc import Callable

Row = tuple[str, str, str]  # measurement, images/s, ratio


def images_per_second(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.1f}"


class Rows(list[Row]):
    """The table's rows, each printed as it is measured (a timeout keeps every row so far)."""

    WIDTHS = (76, 10, 48)

    def header(self) -> None:
        print(self._line(("measurement", "images/s", "ratio")))
        print(self._line(tuple("-" * w for w in self.WIDTHS)))

    def _line(self, row: tuple[str, ...]) -> str:
        return "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, self.WIDTHS, strict=True)) + " |"

    def append(self, row: Row) -> None:
        super().append(row)
        print(self._line(row), flush=True)

    def attempt(self, label: str, measure: Callable[[], float], ratio: str = "") -> float | None:
        """A row for ``measure()``'s rate, or a "failed: ..." row when it raises (one variant
        failing, e.g. ``torch.compile`` on a new GPU, is a finding, not the end of the check)."""
        try:
            rate = measure()
        except Exception as err:  # noqa: BLE001 - a failed variant is a table row
            self.append((label, f"failed: {type(err).__name__}: {str(err).splitlines()[0][:90]}", ""))
            return None
        self.append((label, images_per_second(rate), ratio))
        return rate


def timed_rate(run: Callable[[], None], images_per_call: int, seconds: float, sync: Callable[[], None]) -> float:
    """images/s of ``run`` after warm-up, over about ``seconds``."""
    for _ in range(3):
        run()
    sync()
    started = time.perf_counter()
    run()
    sync()
    calls = max(1, int(seconds / max(time.perf_counter() - started, 1e-6)))
    started = time.perf_counter()
    for _ in range(calls):
        run()
    sync()
    return calls * images_per_call / (time.perf_counter() - started)
