"""Progress for long work: a live bar with rate and ETA on a terminal, periodic lines elsewhere."""

from __future__ import annotations

import sys
import time

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress as RichProgress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def _rate(n: float, seconds: float, unit: str) -> str:
    per_s = n / seconds if seconds > 0 else 0.0
    return f"{per_s / 1000:.1f}k {unit}/s" if per_s >= 1000 else f"{per_s:.1f} {unit}/s"


class Progress:
    """``with Progress("loading", total=n, unit="triplets") as p: p.advance(k)``."""

    def __init__(self, description: str, total: float | None = None, unit: str = "rows",
                 enabled: bool = True, log_every: float = 5.0):
        self.description, self.total, self.unit = description, total, unit
        self.enabled, self.log_every = enabled, log_every
        self.done = 0.0
        self.status = ""
        self._live = enabled and sys.stderr.isatty()
        self._rich: RichProgress | None = None
        self._start = self._last_log = time.perf_counter()

    def __enter__(self) -> "Progress":
        if self._live:
            self._rich = RichProgress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), TextColumn("{task.fields[status]}"), transient=False,
            )
            self._rich.start()
            self._task = self._rich.add_task(self.description, total=self.total, rate="", status="")
        return self

    def set_status(self, text: str) -> None:
        """Extra text after the rate: e.g. the loss terms of a training run."""
        self.status = text
        if self._rich is not None:
            self._rich.update(self._task, status=text)

    def advance(self, n: float = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if self._rich is not None:
            self._rich.update(self._task, advance=n, rate=_rate(self.done, now - self._start, self.unit))
        elif self.enabled and now - self._last_log >= self.log_every:
            self._last_log = now
            print(self.line(now), file=sys.stderr, flush=True)

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.perf_counter()) - self._start
        text = f"{self.description}: {self.done:,.0f}"
        if self.total:
            text += f"/{self.total:,.0f} ({100 * self.done / self.total:.0f}%)"
        text += f" {self.unit}, {_rate(self.done, elapsed, self.unit)}"
        if self.total and self.done:
            text += f", ETA {max(0.0, elapsed * (self.total - self.done) / self.done):.0f}s"
        return f"{text} {self.status}".rstrip()

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()
