"""``aldsl optimize``: the entry point, and the table of methods (``METHODS``) it dispatches on.

A method is a function ``(Job) -> OptimizeResult`` (``optimizers.settings.Job``): it gets the
compiled program, the resolved settings, the session, the output folder and the pinned values,
and returns what it did, after writing ``optimized.alp`` and ``report.md`` into the folder. The
held-out split is read only after the search, once (each method forbids it while searching).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping

from aldsl.errors import UserError
from aldsl.program import CompiledProgram
from aldsl.runtime.session import Session
from aldsl.store.paths import writable_dir, writable_file
from aldsl.optimizers.oirl import run_oirl
from aldsl.optimizers.optuna_method import run_optuna
from aldsl.optimizers.report import OptimizeResult
from aldsl.optimizers.settings import Job, Settings

Method = Callable[[Job], OptimizeResult]
METHODS: dict[str, Method] = {"optuna": run_optuna, "oirl": run_oirl}
"""Every optimize constructor of the language, by name (``optuna(...)``, ``oirl(...)``)."""


def optimize(compiled: CompiledProgram, *, session: Session | None = None, out_dir: str | Path = "build",
             trials: int | None = None, storage: str | None = None, study: str | None = None, seed: int | None = None,
             workers: int = 1, worker: bool = False, pinned: Mapping[str, Any] | None = None) -> OptimizeResult:
    """Optimize ``compiled`` as its optimize declaration says; write ``OUT/<program>/``.

    ``pinned``: search values fixed by the user (``--set``), left out of the search (default: every
    value of ``compiled`` that differs from its declared default). ``workers`` > 1 starts that many
    minus one extra worker processes on the same study. ``worker``: only run trials, until the
    budget is handed out, and return (no promotion, no report). Otherwise this process is a
    coordinator: it runs trials too, waits for the last one, and then promotes and reports if it
    takes the study's promotion claim (see ``optimizers.claim``); a coordinator that finds the claim
    held returns with ``result.promoted_by`` naming the holder.
    """
    start = time.perf_counter()
    session = session or Session()
    writable_dir(Path(out_dir), "the --out folder")
    folder = writable_dir(Path(out_dir) / compiled.name, "the output folder (--out)")
    for existing in ("study.db", "optimized.alp", "report.md", "report.json"):
        writable_file(folder / existing, "the earlier result")
    settings = Settings.resolve(compiled, folder, trials, storage, study, seed)
    if pinned is None:
        defaults = compiled.search_space.defaults()
        pinned = {k: v for k, v in compiled.values.items() if defaults.get(k) != v}
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if settings.method not in METHODS:
        raise UserError(f"unknown optimize method {settings.method!r}; the methods are: {', '.join(METHODS)}")
    result = METHODS[settings.method](Job(compiled, settings, session, folder, dict(pinned), workers, worker))
    result.seconds = time.perf_counter() - start
    return result
