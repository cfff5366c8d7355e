"""Progress bars for long work (rich), or silence when nobody is watching."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

Advance = Callable[..., None]
"""``advance(n=1, **fields)``: n more units done; fields (tokens, hits, best, ...) shown beside the bar.
Generation calls it once per decoding step with ``n=0, tokens=k``, and with n > 0 as prompts finish."""

LOG_EVERY_S = 10.0
"""Without a terminal, a line at most this often while a task advances (with tok/s and ETA)."""


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
    def task(self, description: str, total: int | None = None, budget: int | None = None) -> Iterator[Advance]:
        """A progress bar for ``total`` units; yields ``advance``. ``budget``: at most how many tokens the task
        generates (the ETA follows whichever of units and tokens is further along)."""
        if not self.enabled:
            yield lambda n=1, **fields: None
            return
        if not self.console.is_terminal:
            yield from self._lines(description, total, budget)
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
        done = 0

        def advance(n: int = 1, **fields: Any) -> None:
            nonlocal done
            done += n
            _add(totals, fields)
            assert self._progress is not None
            elapsed = time.perf_counter() - start
            info = _info(totals, elapsed, _eta(done, total, totals.get("tokens", 0), budget, elapsed))
            self._progress.update(task_id, advance=n, info=info)

        try:
            yield advance
        finally:
            self._depth -= 1
            if self._depth == 0 and self._progress is not None:
                self._progress.stop()
                self._progress = None

    def _lines(self, description: str, total: int | None, budget: int | None) -> Iterator[Advance]:
        start = time.perf_counter()
        totals: dict[str, float] = {}
        done = 0
        last = start
        self.log(f"{description} ...")

        def advance(n: int = 1, **fields: Any) -> None:
            nonlocal done, last
            done += n
            _add(totals, fields)
            now = time.perf_counter()
            # a line per step of a short count (trials, promotions), else one every LOG_EVERY_S
            if (n and total and total <= _STEPS_SHOWN) or now - last >= LOG_EVERY_S:
                last = now
                eta = _eta(done, total, totals.get("tokens", 0), budget, now - start)
                count = f"{done}/{total}" if total else f"{done}"
                self.log(f"{description}: {count}  {_info(totals, now - start, eta)}".rstrip())

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


def _eta(done: int, total: int | None, tokens: float, budget: int | None, elapsed: float) -> float | None:
    """Seconds left, from the further along of units (done/total) and tokens (tokens/budget, an upper bound)."""
    fraction = max(done / total if total else 0.0, tokens / budget if budget else 0.0)
    return elapsed * (1 - fraction) / fraction if 0 < fraction < 1 else None


def _info(totals: dict[str, Any], elapsed: float, eta: float | None = None) -> str:
    parts = []
    if "tokens" in totals:
        parts.append(f"{int(totals['tokens'])} tok, {totals['tokens'] / max(elapsed, 1e-9):.0f} tok/s")
    if eta is not None and "eta" not in totals:  # a task that knows its own ETA (the search's) says it
        parts.append(f"ETA {_clock(eta)}")
    if "hits" in totals:
        parts.append(f"cache {int(totals['hits'])} hit / {int(totals.get('misses', 0))} new")
    parts.extend(f"{k} {v}" for k, v in totals.items() if k not in _SUMMED)
    return "  ".join(parts)


def _clock(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


QUIET = Reporter(enabled=False)
