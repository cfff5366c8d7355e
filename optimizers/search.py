"""The Optuna side of ``aldsl optimize``: samplers, pruners, persistent studies and the trial budget.

A study lives in an Optuna storage: SQLite under the build folder by default, PostgreSQL or MySQL
for several machines, or a journal file on a shared file system (see :func:`storage_of`). The budget is
counted in the storage, not in the process: finished trials (complete or pruned) count across
restarts and across workers, so a resumed run only runs the missing trials and several workers on
one study split the budget exactly. A trial left RUNNING by a killed process is failed (at once
when its process is known dead on this machine, else after its heartbeat goes stale) and redone.

Each trial's sampler is seeded from the program seed and the trial's slot, so the suggestions
depend only on the seed and the trials already in the study: a resumed run suggests exactly what
an uninterrupted one would have.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import warnings
from contextlib import ExitStack, contextmanager
from datetime import datetime
from typing import Any, Callable, Iterator, Sequence

import optuna
from optuna.pruners import BasePruner, MedianPruner, NopPruner
from optuna.samplers import BaseSampler, CmaEsSampler, GridSampler, RandomSampler, TPESampler
from optuna.trial import FrozenTrial, Trial, TrialState

from aldsl.errors import UserError
from aldsl.language.text import alp_text
from aldsl.progress import Advance
from aldsl.language.space import SearchParam

SAMPLERS = ("tpe", "random", "grid", "cmaes")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
HEARTBEAT_S = 10  # a RUNNING trial whose process stopped beating for GRACE_S is failed and redone
GRACE_S = 60
GRID_LIMIT = 100_000
WORKER_ATTR = "worker"
FAILED_ATTR = "failed"  # why a trial's values cannot run (TrialFailed)


class TrialFailed(Exception):
    """Raised by ``prepare`` for a trial whose values cannot run (its fine-tuning found no data to train on,
    say): the trial fails, with the reason in its FAILED_ATTR user attribute, and the search goes on."""


# ---------------------------------------------------------------- the space
def searched(space: Sequence[SearchParam], pinned: dict[str, Any]) -> list[SearchParam]:
    """The parameters the search varies: every declared one that ``--set`` did not pin."""
    return [p for p in space if p.name not in pinned]


def check_space(params: Sequence[SearchParam], sampler: str, cost: bool) -> None:
    """Raise a UserError, before any work, when ``sampler`` cannot search ``params``."""
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
    for p in params:
        if p.choices is not None and not p.choices:
            raise UserError(f"{p.name}: the choice set is empty; list at least one value")
        if p.choices is None and not (p.low is not None and p.high is not None and p.low < p.high):
            raise UserError(f"{p.name}: the range {p.describe()} is empty; write it as [low, high] with low < high")
    if sampler == "grid":
        floats = [p.name for p in params if p.kind == "float"]
        if floats:
            raise UserError(f"sampler = grid needs a finite grid, but {', '.join(floats)} "
                            f"{'is a float range' if len(floats) == 1 else 'are float ranges'}; write "
                            "choice sets ({0.2, 0.7}) or integer ranges, or use sampler = tpe")
        size = math.prod(len(grid_values(p)) for p in params)
        if size > GRID_LIMIT:
            raise UserError(f"sampler = grid: the grid has {size} points (more than {GRID_LIMIT}); "
                            "narrow the ranges or use sampler = tpe")
    if sampler == "cmaes":
        cats = [p.name for p in params if p.kind == "categorical"]
        if cats:
            raise UserError(f"sampler = cmaes searches numbers only, but {', '.join(cats)} "
                            f"{'is a choice set' if len(cats) == 1 else 'are choice sets'}; use sampler = tpe "
                            "(it handles both), or pin them with --set NAME=VALUE")
        if cost:
            raise UserError("sampler = cmaes optimizes one objective; with cost = true use tpe, random or grid")


def grid_values(p: SearchParam) -> list[Any]:
    """The points of one parameter on a grid: its choices, or every integer of its range."""
    if p.choices is not None:
        return list(p.choices)
    return list(range(int(p.low), int(p.high) + 1))  # type: ignore[arg-type]


def grid_size(params: Sequence[SearchParam]) -> int:
    return math.prod(len(grid_values(p)) for p in params)


def pinnable(value: Any) -> Any:
    """A float as ``optimized.alp`` will write it, so the pinned program reruns exactly this trial."""
    return float(alp_text(value)) if isinstance(value, float) else value


def suggest(trial: Trial, params: Sequence[SearchParam]) -> dict[str, Any]:
    """The trial's value of every searched parameter."""
    values: dict[str, Any] = {}
    for p in params:
        if p.choices is not None:
            values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            values[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)  # type: ignore[arg-type]
        else:
            values[p.name] = pinnable(trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log))  # type: ignore[arg-type]
    return values


# ---------------------------------------------------------------- samplers and pruners
def make_sampler(name: str, params: Sequence[SearchParam], seed: int, budget: int) -> BaseSampler:
    """A seeded sampler; TPE starts with about a quarter of the budget at random (3 to 10 trials), CMA-ES
    from the program's defaults."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "random":
            return RandomSampler(seed=seed)
        if name == "grid":
            return GridSampler({p.name: grid_values(p) for p in params}, seed=seed)
        if name == "cmaes":
            return CmaEsSampler(x0={p.name: p.default for p in params}, seed=seed, n_startup_trials=1,
                                warn_independent_sampling=False)
        return TPESampler(seed=seed, n_startup_trials=min(10, max(3, budget // 4)), multivariate=True,
                          constant_liar=True)


def make_pruner(name: str, budget: int) -> BasePruner:
    """The median pruner stops a trial whose running minibatch score is below the median of earlier
    trials at the same chunk (after a few complete trials and the first chunk)."""
    if name == "none":
        return NopPruner()
    return MedianPruner(n_startup_trials=min(5, max(2, budget // 5)), n_warmup_steps=1, interval_steps=1)


# ---------------------------------------------------------------- storage
def open_study(url: str, name: str, directions: list[str], sampler: BaseSampler, pruner: BasePruner,
               fingerprint: str, program: str) -> optuna.Study:
    """Open (or create) the study; a storage that cannot be opened, or a study made by a different
    program or with different settings, is a UserError (before any model is loaded)."""
    try:
        storage = storage_of(url)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot open the study storage {redact(url)!r}: {type(e).__name__}: "
                        f"{_first_line(e).replace(url, redact(url))}. "
                        f"Use one of: {STORAGE_FORMS} (a sqlite or journal file's folder must exist and be "
                        "writable; a database server must be reachable and the database created)") from None
    try:
        with optuna_quiet():
            study = optuna.create_study(storage=storage, study_name=name, directions=directions, sampler=sampler,
                                        pruner=pruner, load_if_exists=True)
    except Exception as e:
        raise UserError(f"cannot open study {name!r} in {redact(url)!r}: {type(e).__name__}: {_first_line(e)}") from None
    if [d.name.lower() for d in study.directions] != directions:
        raise UserError(f"study {name!r} in {redact(url)} optimizes {len(study.directions)} objective(s), but this program "
                        f"asks for {len(directions)} (cost = {'true' if len(directions) > 1 else 'false'}); use "
                        "--study NEW_NAME for a new study")
    stored = study.user_attrs.get("fingerprint")
    if stored is None:
        study.set_user_attr("fingerprint", fingerprint)
        study.set_user_attr("program", program)
    elif stored != fingerprint:
        raise UserError(f"study {name!r} in {redact(url)} holds trials of a different program or different search "
                        f"settings (it was made by {study.user_attrs.get('program', '?')!r}; the program text, "
                        "--set values, objective, split, minibatch, seed, sampler, pruner or cost "
                        "changed since). Its trials would not be comparable: use --study NEW_NAME, or delete "
                        "the study to start over")
    return study


STORAGE_FORMS = ("sqlite:///path/study.db, postgresql://user:password@host:5432/db, "
                 "mysql://user:password@host:3306/db, journal:///absolute/path/study.log")
DRIVERS = {"postgresql": ("postgresql+psycopg", "psycopg", "postgres"), "postgres": ("postgresql+psycopg", "psycopg", "postgres"),
           "mysql": ("mysql+pymysql", "pymysql", "mysql")}
"""URL scheme -> (SQLAlchemy dialect+driver, the driver's module, the aldsl extra that installs it)."""


def storage_of(url: str, attempts: int = 5) -> optuna.storages.BaseStorage:
    """The Optuna storage of a URL: an RDB (sqlite, postgresql, mysql; heartbeats fail the trials of
    dead workers) or ``journal:///path`` (Optuna's JournalStorage on a file, for shared file systems
    without a database server; a relative path after ``journal:`` is taken from the working folder)."""
    scheme, sep, rest = url.partition("://")
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = url[len("journal:"):].removeprefix("//")
        if not path:
            raise UserError(f"storage {url!r} names no file; write journal:///absolute/path/study.log")
        with optuna_quiet():
            return optuna.storages.JournalStorage(JournalFileBackend(path))
    if scheme in DRIVERS and sep:
        dialect, module, extra = DRIVERS[scheme]
        try:
            __import__(module)
        except ImportError:
            raise UserError(f"storage {url.split('@')[-1]!r} needs the {module} driver: pip install "
                            f"'aldsl[{extra}]'") from None
        url = f"{dialect}://{rest}"
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}

    def connect() -> optuna.storages.RDBStorage:
        with optuna_quiet():
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S,
                                              grace_period=GRACE_S)

    for attempt in range(attempts - 1):  # workers creating one new database at once race on its tables
        try:
            return connect()
        except Exception as e:
            if not any(w in str(e) for w in ("already exists", "locked", "UNIQUE", "duplicate key")):
                raise
            time.sleep(0.5 * (attempt + 1))
    return connect()


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages, reports and logs)."""
    scheme, sep, rest = url.partition("://")
    auth, at, host = rest.rpartition("@")
    if not (sep and at and ":" in auth):
        return url
    return f"{scheme}://{auth.split(':', 1)[0]}:***@{host}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else ""


@contextmanager
def optuna_quiet() -> Iterator[None]:
    """Silence Optuna's per-trial log lines (aldsl shows progress bars instead)."""
    logger = logging.getLogger("optuna")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        logger.setLevel(level)


# ---------------------------------------------------------------- the budget loop
def live(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Trials that count toward the budget: finished, running or waiting, or failed because their values
    cannot run (TrialFailed; a trial failed by a crash is redone)."""
    return [t for t in trials if t.state != TrialState.FAIL or FAILED_ATTR in t.user_attrs]


def fail_dead_trials(study: optuna.Study) -> int:
    """Fail RUNNING trials whose worker process on this machine is gone (kill -9); returns how many.
    Workers elsewhere are covered by the storage heartbeat (failed after GRACE_S seconds)."""
    host, count = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(t.user_attrs.get(WORKER_ATTR, ""))
        w_host, _, pid = worker.rpartition(":")
        # A worker names itself within milliseconds of starting a trial; one killed in between left a
        # trial with no name and maybe no heartbeat, which the storage would never call stale.
        orphan = not worker and t.datetime_start is not None and \
            (datetime.now() - t.datetime_start).total_seconds() > GRACE_S
        if orphan or (w_host == host and pid.isdigit() and int(pid) != os.getpid() and not alive(int(pid))):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            count += 1
    optuna.storages.fail_stale_trials(study)
    return count


def alive(pid: int) -> bool:
    """Whether process ``pid`` on this machine is running (not gone, not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped by its parent is a zombie: dead for our purpose
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def run_budget(study: optuna.Study, budget: int, objective: Callable[[Trial], Any], *, sampler: Callable[[int], BaseSampler],
               advance: Advance, wait: bool, poll_s: float = 2.0, stop: Callable[[], str | None] | None = None,
               batch: int = 1, prepare: Callable[[Trial], None] | None = None,
               together: Callable[[int], Any] | None = None, deadline: float | None = None) -> int:
    """Run trials until ``budget`` trials of the study are finished; returns how many this process ran.

    ``wait``: also wait for trials other workers are running (the main process needs every trial
    finished before promotion); a search-only worker returns once the budget is handed out.
    ``sampler(slot)`` makes the sampler of the trials from that slot (the number of live trials before).
    ``advance`` moves the progress bar to the number of finished trials, with the running best score.
    ``stop()``: a reason to start no further trial (a wall-clock or token budget), asked once a trial is
    complete; the search then ends with the trials it has.
    ``batch``: trials asked at once (the sampler's constant liar keeps them apart) and run in threads;
    ``prepare(trial)`` runs for each in this thread first (suggest the values, fit what they need), and
    ``together(n)`` is the context of n trials run together; it yields ``run_all(fn, trials)``, which runs
    them in threads with their model calls merged.
    ``deadline``: the ``time.monotonic()`` by which a time budget ends; the ETA shown never passes it.
    """
    ran, shown = 0, 0
    while True:
        fail_dead_trials(study)
        trials = study.get_trials(deepcopy=False)
        done = [t for t in live(trials) if t.state.is_finished()]
        scores = [t.values[0] for t in done if t.state == TrialState.COMPLETE]
        fields = {"best": f"{max(scores):.3f}"} if scores else {}
        # the median trial times the trials left (search only; the defaults are answered from a cache)
        seconds = sorted(float(t.user_attrs["seconds"]) for t in done
                         if t.user_attrs.get("seconds") and not t.user_attrs.get("defaults"))
        if seconds and len(done) < budget:
            eta, capped = seconds[len(seconds) // 2] * (budget - len(done)), ""
            left = deadline - time.monotonic() if deadline is not None else None
            if left is not None and eta > left:
                eta, capped = max(0.0, left), " (the budget's end)"
            fields["eta"] = f"{eta / 60:.1f} min{capped}"
        advance(min(len(done), budget) - shown, **fields)
        shown = min(len(done), budget)
        if len(done) >= budget or (scores and stop is not None and stop()):
            return ran
        waiting = sum(t.state == TrialState.WAITING for t in trials)  # enqueued (the defaults): run them
        free = budget - len(live(trials)) + waiting
        if free <= 0:
            if not wait:
                return ran
            time.sleep(poll_s)
            continue
        # batches start at multiples of ``batch`` (the defaults included), so a run resumed between
        # batches asks what an uninterrupted one would
        n = min(batch - (len(live(trials)) - waiting) % batch, free)
        # trial i of the batch gets the sampler it would get asked alone: the live count before it (the
        # enqueued trials it takes first are counted already)
        slots = [len(live(trials)) + max(0, i - waiting) for i in range(n)]
        ran += _run_batch(study, budget, objective, [sampler(slot) for slot in slots], prepare, together)


def _run_batch(study: optuna.Study, budget: int, objective: Callable[[Trial], Any],
               samplers: list[BaseSampler], prepare: Callable[[Trial], None] | None,
               together: Callable[[int], Any] | None) -> int:
    """Ask one trial per sampler (as if asked one by one), run them (in threads when there are several)
    and tell their outcomes; returns how many finished.

    Ask and tell rather than ``study.optimize``: its threads (n_jobs) ask in whatever order they are
    scheduled, so the suggestions would depend on timing, and a resumed run must suggest what an
    uninterrupted one would have. The storage heartbeat is Optuna's own (as ``study.optimize`` runs it).
    """
    from optuna.storages._heartbeat import get_heartbeat_thread

    asked: list[Trial] = []
    for sampler in samplers:
        study.sampler = sampler  # a multivariate sampler draws the trial's values here...
        with warnings.catch_warnings():  # (Optuna warns that its heartbeat is meant for study.optimize)
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = study.ask()
        trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
        before = [t for t in live(study.get_trials(deepcopy=False)) if t.number < trial.number]
        if len(before) >= budget:  # another worker took the last trial of the budget first
            study.tell(trial, state=TrialState.FAIL)
            break
        asked.append(trial)
    with ExitStack() as beats:
        for trial in asked:
            beats.enter_context(get_heartbeat_thread(trial._trial_id, study._storage))
        ready: list[Trial] = []
        try:
            for sampler, trial in zip(samplers, asked):
                study.sampler = sampler  # ...and an independent one (a startup trial) when prepare suggests
                try:
                    if prepare is not None:
                        prepare(trial)
                    ready.append(trial)
                except TrialFailed as why:
                    trial.set_user_attr(FAILED_ATTR, str(why))
                    study.tell(trial, state=TrialState.FAIL)
        except BaseException as error:
            for trial in asked:
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise error
        failed = len(asked) - len(ready)  # told already: their values cannot run (TrialFailed)
        asked = ready
        if len(asked) <= 1 or together is None:  # none: another worker took the budget's last trials
            outcomes = [_outcome(objective, trial) for trial in asked]
        else:
            with together(len(asked)) as run_all:
                outcomes = run_all(lambda t: _outcome(objective, t), asked)
    error = None
    for trial, (state, value, raised) in zip(asked, outcomes):
        try:
            study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        except RuntimeError as stopped:
            # A grid sampler calls study.stop() once its grid is used up, which Optuna allows only inside
            # study.optimize; the trial is stored all the same (tell stores it in a finally), and the
            # budget (capped at the grid size) ends the search.
            if "Study.stop" not in str(stopped):
                raise
        error = error or raised
    if error is not None:
        raise error
    return failed + sum(state in FINISHED for state, _, _ in outcomes)


def _outcome(objective: Callable[[Trial], Any], trial: Trial) -> tuple[TrialState, Any, BaseException | None]:
    """What the objective made of the trial: complete with its value, pruned, or failed with the error."""
    try:
        return TrialState.COMPLETE, objective(trial), None
    except optuna.TrialPruned:
        return TrialState.PRUNED, None, None
    except BaseException as error:  # KeyboardInterrupt too: the trial is failed, then the error goes on
        return TrialState.FAIL, None, error
