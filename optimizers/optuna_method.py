"""The optuna method (Eq. 2-3 against the evaluator E):

1. Check everything that can be checked without a model: the search space against the sampler,
   the splits, the storage and the study (a study made by a different program is refused).
2. Search, with the report split forbidden (``forbid_splits``): every trial is a concrete program
   scored on the same seeded dev minibatch, in chunks so the median pruner can stop hopeless trials;
   the program's defaults are the first trial; generations are cached, so repeated work is free.
3. Promote the best ``promote`` trials (by minibatch score; with ``cost``, the minibatch Pareto
   front too) to the full dev split; the best there wins (ties: fewer tokens per query).
4. Write ``optimized.alp`` and re-run it from the file on dev (it must reproduce the score).
5. Only then read the report split: the defaults and the optimized program, once each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.trial import Trial, TrialState

from aldsl.errors import NothingToLearn, UserError
from aldsl.runtime.executor import Executor
from aldsl.store.data import forbid_splits
from aldsl.store.hashing import content_hash
from aldsl.optimizers import claim, search
from aldsl.optimizers import contributions
from aldsl.optimizers.evaluation import (Evaluation, evaluate, evaluate_together, prepare_resources, running_together,
                                         seeded_subset)
from aldsl.optimizers.output import recording_session, ship_artifacts, write_optimized
from aldsl.optimizers.report import OptimizeResult, Row, paired_difference, write_report
from aldsl.optimizers.settings import Job

CHUNKS = 4  # minibatch parts scored in turn, so the pruner can stop a trial after the second


def run_optuna(job: Job) -> OptimizeResult:
    """Search the program's declared space with Optuna; promote, write, reproduce, report."""
    return OptunaSearch(job).run()


class OptunaSearch:
    """One optuna-method optimization."""

    def __init__(self, job: Job):
        self.compiled, self.s, self.session, self.folder = job.compiled, job.settings, job.session, job.folder
        self.pinned, self.workers, self.worker = job.pinned, job.workers, job.worker
        self.params = search.searched(self.compiled.search_space, self.pinned)
        self.reporter = self.session.reporter
        self._start = time.monotonic()  # the time budget counts from here
        self._sharing = 1  # trials running together now (their time is shared)
        self._defaults_dev: Evaluation | None = None  # measured before the search (with a time budget)
        self._batch_gain = 1.0  # seconds per query of a full-dev batch over a minibatch's, measured then
        self._stopped: tuple[float, float] | None = None  # when the time budget stopped the search, the estimate

    # ---- the whole run
    def run(self) -> OptimizeResult:
        s = self.s
        search.check_space(self.params, s.sampler, s.cost)
        if self.workers > 1 and (self.compiled.checked is None or self.compiled.checked.program.path == "<string>"):
            raise UserError("--workers needs a program file (the workers compile it themselves)")
        pool = seeded_subset(self._records(s.on), s.seed, s.queries)
        minibatch = pool[:s.minibatch] if 0 < s.minibatch < len(pool) else pool
        result = OptimizeResult(self.compiled.name, "optuna", s.objective, self.folder, s.seed,
                                settings=s.to_json(), defaults=self.compiled.values)
        if not self.params:
            return self._no_search(result, pool)
        budget = s.trials
        if s.sampler == "grid" and search.grid_size(self.params) < budget:
            budget = search.grid_size(self.params)
            result.notes.append(f"The grid has {budget} points, so {budget} trials ran, not {s.trials}.")
        self.folder.mkdir(parents=True, exist_ok=True)
        study = search.open_study(s.storage, s.study, ["maximize", "minimize"] if s.cost else ["maximize"],
                                  self._sampler(0, budget), search.make_pruner(s.pruner, budget),
                                  self._fingerprint(minibatch), self.compiled.name)
        result.study, result.storage, result.budget = s.study, search.redact(s.storage), budget
        procs: list[subprocess.Popen[bytes]] = []
        held: claim.Claim | None = None
        try:
            with forbid_splits(s.report), search.optuna_quiet():
                if not study.get_trials(deepcopy=False) and s.sampler != "grid":
                    defaults = {p.name: p.default for p in self.params}
                    study.enqueue_trial(defaults, user_attrs={"defaults": True}, skip_if_exists=True)
                    start = self._auto_start(defaults)
                    if start and budget > 1:
                        study.enqueue_trial(start, user_attrs={"auto_start": True}, skip_if_exists=True)
                        result.notes.append("space = auto: trial 0 is the defaults, trial 1 the recipe the data "
                                            "suggests (the proposed fine-tuning, then best of 4 by majority); the "
                                            "sampler chooses the rest.")
                self._measure_defaults(pool, minibatch)
                procs = self._spawn_workers(budget)
                with self.reporter.task(f"search: {budget} trials, {len(minibatch)} {s.on} queries each "
                                        f"({s.sampler}, pruner {s.pruner})", total=budget) as advance:
                    result.ran = search.run_budget(
                        study, budget, self._objective(minibatch, advance),
                        sampler=lambda slot: self._sampler(slot, budget), advance=advance, wait=not self.worker,
                        stop=self._stop(study, len(minibatch), len(pool), result), batch=s.batch,
                        prepare=self._prepare, together=partial(self._together, advance),
                        deadline=self._start + s.budget_s if s.budget_s is not None else None)
                self._join(procs, result)
                taken = None if self.worker else claim.take(study)
                if not isinstance(taken, claim.Claim):
                    result.trials = _trial_rows(study, {}, None)
                    result.promoted_by = taken
                    return result
                held = taken
                full, best = self._promote(study, pool, minibatch, result)
                defaults_dev = self._defaults_on(pool, study, full)
                result.extra["contributions"] = self._contributions(pool, defaults_dev, full[best.number],
                                                                    result.values)
                written = self._write(best, full[best.number], result)
                reproduced = self._reproduce(written, pool)
            result.trials = _trial_rows(study, full, best.number)
            result.extra["pareto"] = _pareto(study) if s.cost else []
            self._report_phase(result, defaults_dev, full[best.number], written, reproduced, pool)
            if self._stopped is not None:
                took = time.monotonic() - self._stopped[0]
                result.notes.append(f"Budget: the rest took {_duration(took)}; the check had estimated "
                                    f"{_duration(self._stopped[1])}.")
            write_report(result, study, f"{self.compiled.checked.flow.name}.samples" if self.compiled.checked else None)
            study.set_user_attr("promoted", {"trial": best.number, "values": result.values,
                                             s.on: full[best.number].mean, "holder": claim.holder_name(),
                                             "report": str(result.report)})
            held.release(ok=True)
            held = None
        finally:
            if held is not None:
                held.release(ok=False)
            for p in procs:
                if p.poll() is None:
                    p.terminate()
        return result

    # ---- pieces
    def _auto_start(self, defaults: dict[str, Any]) -> dict[str, Any] | None:
        """space = auto: the recipe the data suggests (aldsl.language.auto.recipe), tried second."""
        from aldsl.language.auto import recipe

        checked = self.compiled.checked
        if self.s.space != "auto" or checked is None:
            return None
        start = {**defaults, **{k: v for k, v in recipe(checked, [p.name for p in self.params]).items()}}
        return start if start != defaults else None

    def _stop(self, study: optuna.Study, minibatch: int, pool: int, result: OptimizeResult) -> Callable[[], str | None]:
        """The budget check between trials: stop when the next trial plus promotion, the contributions and
        the report would pass ``budget`` seconds, or when the trials have generated ``budget`` tokens."""
        s = self.s

        def stop() -> str | None:
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            reason = None
            if s.budget_tokens is not None:
                used = sum(sum(t.user_attrs.get("tokens") or []) for t in complete)
                if used >= s.budget_tokens:
                    reason = f"the token budget ({s.budget_tokens}) was spent: the trials generated {used} tokens"
            if s.budget_s is not None:
                tail = self._tail_seconds(complete, minibatch, pool)
                elapsed = time.monotonic() - self._start
                if elapsed + tail > s.budget_s:
                    self._stopped = (time.monotonic(), tail)
                    reason = (f"the time budget ({_duration(s.budget_s)}) would be passed: {_duration(elapsed)} "
                              f"spent, about {_duration(tail)} more for a trial, promotion and the report")
            if reason:
                result.notes.append(f"Budget: the search stopped after {len(complete)} complete trials (of "
                                    f"trials = {s.trials}): {reason}.")
            return reason

        return stop

    def _tail_seconds(self, complete: list[optuna.trial.FrozenTrial], minibatch: int, pool: int) -> float:
        """What the rest would cost: the next trials as the trials so far took (median, with their fits), then
        the queries of the later phases (promotion runs the best trials on the queries beyond the minibatch, a
        partial program per knob group measures the knobs' contributions on dev, the report runs the defaults
        and the winner) at the dearest trial's seconds per query, without its fits, scaled by the gain of a
        full-dev batch over a minibatch (measured on the defaults before the search: ``_measure_defaults``)."""
        s = self.s
        # the defaults trial is answered from the cache of _measure_defaults (or loaded the model): not timed
        timed = [t for t in complete if t.user_attrs.get("seconds") and not t.user_attrs.get("defaults")]
        if not timed:
            return 0.0

        def per_query(t: optuna.trial.FrozenTrial) -> float:  # fits left out
            spent = t.user_attrs["seconds"] - t.user_attrs.get("fit_seconds", 0.0)
            return spent / max(1, len(t.user_attrs.get("scores") or [])) * self._batch_gain

        # the leader can change with the next trial: every later program is priced as the dearest trial so far
        dearest = max(per_query(t) for t in timed)
        defaults_s = self._defaults_dev.seconds / max(1, len(self._defaults_dev.scores)) if self._defaults_dev \
            else dearest
        queries, report = s.later_queries(pool, minibatch, contributions.groups(self.compiled.checked,
                                                                                [p.name for p in self.params]))
        return s.batch * _median([t.user_attrs["seconds"] for t in timed]) + queries * dearest + report * defaults_s

    def _measure_defaults(self, pool: list[dict[str, Any]], minibatch: list[dict[str, Any]]) -> None:
        """With a time budget: run the defaults on all of dev before the search (the report needs them anyway),
        the queries beyond the minibatch first (with the model's loading: a pessimistic gain), then the
        minibatch, so the budget check knows how much faster a full-dev batch runs than a minibatch."""
        rest = pool[len(minibatch):]
        if self.s.budget_s is None or self.worker or not rest:
            return
        with self.reporter.task(f"defaults on all {len(pool)} {self.s.on} queries (to price the budget)",
                                total=None) as advance:
            parts = [evaluate(self.compiled, part, self.session, self.s.objective, split=self.s.on, advance=advance)
                     for part in (rest, minibatch)]
        big, small = (p.seconds / max(1, len(p.scores)) for p in parts)
        # a bigger batch cannot be more than its size times cheaper per query; a minibatch that took under a
        # second is noise (no gain then)
        if parts[1].seconds >= 1.0:
            self._batch_gain = min(1.0, max(len(minibatch) / len(rest), big / small))
        self._defaults_dev = Evaluation.merge(parts, [r["id"] for r in pool])

    def _records(self, split: str) -> list[dict[str, Any]]:
        return Executor(self.compiled.program_graph, self.session).records(split)

    def _sampler(self, slot: int, budget: int) -> optuna.samplers.BaseSampler:
        # a grid sampler shuffles its grid by its seed, so its seed must not change between slots
        seed = self.s.seed if self.s.sampler == "grid" else int(content_hash(self.s.seed, slot)[:8], 16)
        return search.make_sampler(self.s.sampler, self.params, seed, budget)

    def _fingerprint(self, minibatch: list[dict[str, Any]]) -> str:
        """What makes two trials comparable: the program without its optimize declaration, the pinned
        values, the minibatch and the settings that change a trial's score."""
        checked = self.compiled.checked
        text = checked.program.source if checked else self.compiled.to_json()
        if checked and checked.optimize is not None:
            decl = next(d for d in checked.program.decls if d.kind == "optimize")
            lines = text.split("\n")
            text = "\n".join(lines[: decl.pos.line - 1] + lines[decl.pos.end_line:])
        s = self.s
        overrides = sorted(checked.overrides.items()) if checked else []
        return content_hash(text, sorted(self.pinned.items()), overrides, s.objective, s.on, s.seed, s.sampler,
                            s.pruner, s.cost, CHUNKS, [r["id"] for r in minibatch])

    def _objective(self, minibatch: list[dict[str, Any]], advance: Any):
        s = self.s
        prune = s.pruner != "none" and not s.cost
        chunks = min(CHUNKS, max(1, len(minibatch) // 2)) if prune else 1

        def objective(trial: Trial) -> Any:
            values = trial.user_attrs["values"]
            earlier = _same_values(trial)
            if earlier is not None:  # the sampler repeated itself: reuse the scores
                for key in ("scores", "tokens", "tokens_per_query", "seconds"):
                    trial.set_user_attr(key, earlier.user_attrs.get(key))
                trial.set_user_attr("repeats", earlier.number)
                return earlier.values if s.cost else earlier.values[0]
            program = self.compiled.with_params(values)

            def on_chunk(step: int, so_far: Evaluation) -> None:
                trial.set_user_attr("tokens_per_query", so_far.tokens_per_query)
                trial.set_user_attr("queries_scored", len(so_far.scores))
                advance(0, trial=f"#{trial.number} part {step + 1}/{chunks}")
                if prune and step + 1 < chunks:
                    trial.report(so_far.mean, step)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"{so_far.mean:.3f} after {len(so_far.scores)} queries")

            ev = evaluate(program, minibatch, self.session, s.objective, split=s.on, advance=advance, chunks=chunks,
                          on_chunk=on_chunk)
            fit = trial.user_attrs.get("fit_seconds", 0.0) + ev.fit_seconds
            trial.set_user_attr("scores", ev.scores)
            trial.set_user_attr("tokens", ev.tokens)
            # the trial's share of the clock: its fits, and its run divided among the trials run with it
            trial.set_user_attr("seconds", fit + (ev.seconds - ev.fit_seconds) / self._sharing)
            trial.set_user_attr("fit_seconds", fit)
            return (ev.mean, ev.tokens_per_query) if s.cost else ev.mean

        return objective

    def _prepare(self, trial: Trial) -> None:
        """Before a trial runs (in this thread, one trial after another): its values, and the rewards,
        fine-tunings and models they need, so that trials run together only generate and score."""
        values = {**self.pinned, **search.suggest(trial, self.params)}
        trial.set_user_attr("values", values)
        if _same_values(trial) is not None:
            return
        start = time.perf_counter()
        try:
            prepare_resources(self.compiled.with_params(values).program_graph, self.session)
        except NothingToLearn as err:
            raise search.TrialFailed(str(err)) from err
        trial.set_user_attr("fit_seconds", time.perf_counter() - start)

    @contextmanager
    def _together(self, advance: Any, n: int) -> Iterator[Callable[..., list[Any]]]:
        """``n`` trials in threads (their time is shared): see evaluation.running_together."""
        self._sharing = n
        try:
            with running_together(self.session, n, advance) as run_all:
                yield run_all
        finally:
            self._sharing = 1

    def _spawn_workers(self, budget: int) -> list[subprocess.Popen[bytes]]:
        if self.workers <= 1:
            return []
        assert self.compiled.checked is not None
        cmd = [sys.executable, "-m", "aldsl.cli", "optimize", self.compiled.checked.program.path, "--worker",
               "--quiet", "--storage", self.s.storage, "--study", self.s.study, "--trials", str(budget),
               "--seed", str(self.s.seed), "--out", str(self.folder.parent)]
        for k, v in {**self.compiled.checked.overrides, **self.pinned}.items():
            cmd += ["--set", f"{k}={json.dumps(v)}"]
        threads = str(max(1, (os.cpu_count() or 1) // self.workers))
        env = {**os.environ, "OMP_NUM_THREADS": threads}
        self.reporter.log(f"started {self.workers - 1} extra search worker(s) on study {self.s.study!r}")
        return [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                for _ in range(self.workers - 1)]

    def _join(self, procs: list[subprocess.Popen[bytes]], result: OptimizeResult) -> None:
        for p in procs:
            _, err = p.communicate()
            if p.returncode != 0:
                tail = err.decode(errors="replace").strip().splitlines()[-3:]
                result.notes.append(f"A search worker exited with status {p.returncode} ({' '.join(tail)}); "
                                    "its unfinished trial was redone here.")

    def _promote(self, study: optuna.Study, pool: list[dict[str, Any]], minibatch: list[dict[str, Any]],
                 result: OptimizeResult) -> tuple[dict[int, Evaluation], optuna.trial.FrozenTrial]:
        s = self.s
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                  if search.FAILED_ATTR in t.user_attrs]
        result.notes += [f"Trial {t.number} failed, the search went on: {t.user_attrs[search.FAILED_ATTR]}"
                         for t in failed]
        if not complete:
            reasons = sorted({t.user_attrs[search.FAILED_ATTR] for t in failed})
            raise UserError(f"all {len(study.trials)} trials of study {s.study!r} were pruned or failed; "
                            "nothing to promote (try pruner = none or a larger minibatch)" +
                            "".join(f"; {r}" for r in reasons))
        distinct = [t for t in complete if "repeats" not in t.user_attrs]
        ranked = sorted(distinct, key=lambda t: (-t.values[0], _tokens(t), t.number))
        chosen = ranked[:s.promote]
        if s.cost:
            chosen += [t for t in study.best_trials if t not in chosen and "repeats" not in t.user_attrs]
        pool_key = content_hash([r["id"] for r in pool])
        full: dict[int, Evaluation] = {}
        whole = len(minibatch) == len(pool)
        with self.reporter.task(f"promotion: {len(chosen)} best trials on all {len(pool)} {s.on} queries",
                                total=len(chosen)) as advance:
            for t in chosen:
                stored = study.user_attrs.get(f"full:{t.number}")
                if whole:
                    full[t.number] = Evaluation([r["id"] for r in minibatch], t.user_attrs["scores"],
                                                t.user_attrs["tokens"], t.user_attrs.get("seconds", 0.0))
                elif stored and stored.get("pool") == pool_key:
                    full[t.number] = Evaluation([r["id"] for r in pool], stored["scores"], stored["tokens"],
                                                stored["seconds"])
                else:
                    program = self.compiled.with_params(t.user_attrs["values"])
                    ev = evaluate(program, pool, self.session, s.objective, split=s.on, advance=advance)
                    study.set_user_attr(f"full:{t.number}", {"pool": pool_key, "scores": ev.scores,
                                                              "tokens": ev.tokens, "seconds": ev.seconds})
                    full[t.number] = ev
                best_so_far = max(e.mean for e in full.values())
                advance(1, best=f"{best_so_far:.3f}")
        best_number = min(full, key=lambda n: (-full[n].mean, full[n].tokens_per_query, n))
        best = next(t for t in complete if t.number == best_number)
        result.values = dict(best.user_attrs["values"])
        scope = "the whole" if whole else f"a {len(minibatch)}-query minibatch of the"
        result.notes.append(
            f"Search: {len(study.trials)} trials in study `{s.study}` ({s.sampler} sampler, pruner {s.pruner}) on "
            f"{scope} {len(pool)}-query {s.on} split; {len(chosen)} promoted to the full {s.on} split; best: "
            f"trial {best.number}.")
        return full, best

    def _defaults(self) -> dict[str, Any]:
        """The program's values of every searched parameter, with the pinned ones."""
        return {**{p.name: p.default for p in self.params}, **self.pinned}

    def _defaults_on(self, pool: list[dict[str, Any]], study: optuna.Study, full: dict[int, Evaluation]) -> Evaluation:
        if self._defaults_dev is not None:
            return self._defaults_dev
        defaults = self._defaults()
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.number in full and t.user_attrs.get("values") == defaults:
                return full[t.number]
        with self.reporter.task(f"defaults on all {len(pool)} {self.s.on} queries", total=None) as advance:
            return evaluate(self.compiled, pool, self.session, self.s.objective, split=self.s.on, advance=advance)

    def _contributions(self, pool: list[dict[str, Any]], defaults_dev: Evaluation, best_dev: Evaluation,
                       values: dict[str, Any]) -> list[dict[str, Any]]:
        """Each changed group of knobs added to the defaults in turn, scored on dev (see contributions)."""
        checked = self.compiled.checked
        if checked is None:
            return []
        defaults = self._defaults()
        path = contributions.steps(defaults, values, checked)
        middle = [self.compiled.with_params(v) for _, _, v in path[:-1]]
        if middle:
            with self.reporter.task(f"contributions: {len(middle)} partial program(s) on {len(pool)} {self.s.on} "
                                    "queries", total=None) as advance:
                evaluations = evaluate_together(middle, pool, self.session, self.s.objective, split=self.s.on,
                                                advance=advance)
        else:
            evaluations = []
        scores = [defaults_dev.mean, *(e.mean for e in evaluations), best_dev.mean]
        return [{"group": group, "label": contributions.GROUPS[group], "changed": part, "score": scores[i + 1],
                 "delta": scores[i + 1] - scores[i], "n": len(pool), "split": self.s.on}
                for i, (group, part, _) in enumerate(path)]

    def _write(self, best: optuna.trial.FrozenTrial, dev: Evaluation, result: OptimizeResult) -> Path:
        assert self.compiled.checked is not None
        header = [f"Optimized by `aldsl optimize` from {self.compiled.checked.program.path}: trial {best.number} "
                  f"of study {self.s.study!r}",
                  f"({self.s.objective} = {dev.mean:.3f} on all {len(dev.scores)} {self.s.on} queries). Every "
                  "searched value is pinned; see report.md beside this file."]
        path = write_optimized(self.compiled.checked, result.values, self.folder, header)
        result.optimized = path
        return path

    def _reproduce(self, written: Path, pool: list[dict[str, Any]]) -> Evaluation:
        """Run the written file on dev in a fresh session (resources from their artifacts)."""
        from aldsl.program import compile

        self.fresh, self.store = recording_session(self.session)
        with self.reporter.task(f"checking {written.name} on {self.s.on}", total=None) as advance:
            return evaluate(compile(written), pool, self.fresh, self.s.objective, split=self.s.on, advance=advance)

    def _report_phase(self, result: OptimizeResult, defaults_dev: Evaluation, best_dev: Evaluation, written: Path,
                      again: Evaluation, pool: list[dict[str, Any]]) -> None:
        from aldsl.program import compile

        s = self.s
        records = seeded_subset(self._records(s.report), s.seed, s.report_queries)
        with self.reporter.task(f"report: defaults and optimized on {len(records)} {s.report} queries",
                                total=None) as advance:
            defaults_test = evaluate(self.compiled, records, self.session, s.objective, split=s.report, advance=advance)
            optimized_test = evaluate(compile(written), records, self.fresh, s.objective, split=s.report, advance=advance)
        result.rows = [Row.of("defaults", s.on, defaults_dev, s.seed), Row.of("optimized", s.on, best_dev, s.seed),
                       Row.of("defaults", s.report, defaults_test, s.seed),
                       Row.of("optimized", s.report, optimized_test, s.seed)]
        mean, lo, hi = paired_difference(defaults_test, optimized_test, s.seed)
        result.extra["difference"] = {"label": f"Optimized minus defaults on {s.report}", "mean": mean, "lo": lo,
                                      "hi": hi, "n": len(records), "split": s.report}
        result.artifacts = ship_artifacts(self.store, self.session, self.folder)
        same = abs(again.mean - best_dev.mean) < 1e-9
        result.extra["reproduced"] = {"search": best_dev.mean, "file": again.mean, "same": same}
        result.extra["protocol"] = [
            f"The {s.report} split was forbidden while searching (reading it raised an error); it was read once "
            "afterwards, for this table.",
            f"`{written.name}` re-run from the file on {s.on}: {again.mean:.3f} (search: {best_dev.mean:.3f}; "
            f"{'reproduced' if same else 'NOT reproduced'}).",
            f"Queries: {len(pool)} of {s.on}" + (f" (capped by queries = {s.queries})" if s.queries else "") +
            f", {len(records)} of {s.report}" + (f" (report_queries = {s.report_queries})" if s.report_queries else "") +
            f"; seeded subsets (seed {s.seed}), the same for every variant.",
            "95% confidence intervals: percentile bootstrap over queries, 2000 resamples."]
        if not same:
            result.notes.append(f"Warning: {written.name} gave {again.mean:.3f} on {s.on}, the search "
                                f"{best_dev.mean:.3f}.")

    def _no_search(self, result: OptimizeResult, pool: list[dict[str, Any]]) -> OptimizeResult:
        """A program with nothing to search: say so, evaluate it as is."""
        s = self.s
        self.reporter.log(f"{self.compiled.name}: nothing to search (no search space, or every value pinned); "
                          "evaluating the program as is")
        result.notes.append("The program declares no search space (or every value was pinned): it was evaluated "
                            "as is.")
        with forbid_splits(s.report), self.reporter.task(f"the program on {len(pool)} {s.on} queries",
                                                         total=None) as advance:
            dev = evaluate(self.compiled, pool, self.session, s.objective, split=s.on, advance=advance)
        records = seeded_subset(self._records(s.report), s.seed, s.report_queries)
        with self.reporter.task(f"the program on {len(records)} {s.report} queries", total=None) as advance:
            test = evaluate(self.compiled, records, self.session, s.objective, split=s.report, advance=advance)
        result.rows = [Row.of("as written", s.on, dev, s.seed), Row.of("as written", s.report, test, s.seed)]
        result.values = dict(self.compiled.values)
        if self.compiled.checked is not None:
            result.optimized = write_optimized(self.compiled.checked, result.values, self.folder,
                                               ["Written by `aldsl optimize`: the program had nothing to search."])
        write_report(result)
        return result


def _same_values(trial: Trial) -> optuna.trial.FrozenTrial | None:
    """A complete earlier trial with the same values as ``trial`` (whose scores it can reuse), if any."""
    values = trial.user_attrs["values"]
    return next((t for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if t.user_attrs.get("values") == values), None)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2] if xs else 0.0


def _tokens(t: optuna.trial.FrozenTrial) -> float:
    return float(t.user_attrs.get("tokens_per_query", 0.0))


def _trial_rows(study: optuna.Study, full: dict[int, Evaluation], best: int | None) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            score = t.values[0] if t.values else (max(t.intermediate_values.items())[1] if t.intermediate_values else None)
        else:
            score = None
        rows.append({"number": t.number, "state": t.state.name, "score": score, "tokens": t.user_attrs.get("tokens_per_query"),
                     "full": full[t.number].mean if t.number in full else None, "values": t.user_attrs.get("values", {}),
                     "worker": t.user_attrs.get(search.WORKER_ATTR), "seconds": t.user_attrs.get("seconds"),
                     "best": t.number == best})
    return rows


def _pareto(study: optuna.Study) -> list[dict[str, Any]]:
    return [{"number": t.number, "score": t.values[0], "tokens": t.values[1], "values": t.user_attrs.get("values", {})}
            for t in sorted(study.best_trials, key=lambda t: t.values[1])]
