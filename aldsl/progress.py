"""Progress bars for long work (rich), or silence when nobody is watching."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

Advance = Callable[..., None]
"""``advance(n=1, **fields)``: n more units done; fields (tokens, hits, best, ...) shown beside the bar."""


class Reporter:
    """Shows one live progress bar per running task, or nothing when ``enabled`` is False; when the
    output is not a terminal (a log file, CI), one line as each task starts and one as it ends."""

    def __init__(self, enabled: bool = True, console: Console | None = None):
        self.enabled = enabled
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self._progress: Progress | None = None
        self._depth = 0

    def log(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, markup=False)

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Advance]:
        """A progress bar for ``total`` units; yields ``advance``."""
        if not self.enabled:
            yield lambda n=1, **fields: None
            return
        if not self.console.is_terminal:
            yield from self._lines(description, total)
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                console=self.console, transient=False, refresh_per_second=4,
            )
            self._progress.start()
        self._depth += 1
        task_id = self._progress.add_task(description, total=total, info="")
        start = time.perf_counter()
        totals: dict[str, float] = {}

        def advance(n: int = 1, **fields: Any) -> None:
            _add(totals, fields)
            assert self._progress is not None
            self._progress.update(task_id, advance=n, info=_info(totals, time.perf_counter() - start))

        try:
            yield advance
        finally:
            self._depth -= 1
            if self._depth == 0 and self._progress is not None:
                self._progress.stop()
                self._progress = None

    def _lines(self, description: str, total: int | None) -> Iterator[Advance]:
        start = time.perf_counter()
        totals: dict[str, float] = {}
        done = 0
        self.log(f"{description} ...")

        def advance(n: int = 1, **fields: Any) -> None:
            nonlocal done
            done += n
            _add(totals, fields)
            if n and total and total <= _STEPS_SHOWN:  # a line per step of a short count (trials, promotions)
                info = _info(totals, time.perf_counter() - start)
                self.log(f"{description}: {done}/{total}  {info}".rstrip())

        yield advance
        elapsed = time.perf_counter() - start
        count = f"{done}/{total} " if total else ""
        self.log(f"{description}: {count}done in {elapsed:.0f} s  {_info(totals, elapsed)}".rstrip())


_SUMMED = {"tokens", "hits", "misses"}
_STEPS_SHOWN = 100


def _add(totals: dict[str, Any], fields: dict[str, Any]) -> None:
    """Fold an advance's fields into the task's totals: counters add up, other fields replace."""
    for k, v in fields.items():
        totals[k] = totals.get(k, 0) + v if isinstance(v, (int, float)) and k in _SUMMED else v


def _info(totals: dict[str, Any], elapsed: float) -> str:
    parts = []
    if "tokens" in totals:
        parts.append(f"{totals['tokens'] / max(elapsed, 1e-9):.0f} tok/s")
    if "hits" in totals:
        parts.append(f"cache {int(totals['hits'])} hit / {int(totals.get('misses', 0))} new")
    parts.extend(f"{k} {v}" for k, v in totals.items() if k not in _SUMMED)
    return "  ".join(parts)


QUIET = Reporter(enabled=False)
