"""Prompt-OIRL (``method = oirl``): choose the prompt per query by a learned binary reward.

The binary reward model (``binary(data.train, among = [...])``) is fitted offline: every candidate
prompt runs on the train split and a classifier learns P(success | query, prompt). The optimized
program replaces the prompter's template by ``per_query(REWARD)``: at inference the candidate with
the highest predicted success is used for each query, with no extra LLM call.

Compared on the held-out split against the best single prompt (chosen on dev) and a seeded random
prompt per query; on dev every candidate is also scored alone.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from aldsl.store.hashing import content_hash
from aldsl.language.check import check
from aldsl.compiler.builder import compile_checked
from aldsl.store.data import forbid_splits
from aldsl.errors import UserError
from aldsl.runtime.executor import Executor
from aldsl.language.parser import parse
from aldsl.language.pin import pin_source
from aldsl.program import CompiledProgram, compile
from aldsl.runtime.session import Session

from aldsl.optimizers.evaluation import Evaluation, evaluate, prepare_resources, seeded_subset
from aldsl.optimizers.output import recording_session, ship_artifacts, write_optimized
from aldsl.optimizers.report import OptimizeResult, Row, paired_difference, write_report
from aldsl.optimizers.settings import Job, Settings


OPTIMIZED = "optimized"


def run_oirl(job: Job) -> OptimizeResult:
    """Fit the binary reward, compare the prompts on dev, write the per-query program, report on test."""
    if job.workers > 1 or job.worker:
        raise UserError("oirl has no trials to share between workers; run it without --workers/--worker")
    compiled, s, session, folder, pinned = job.compiled, job.settings, job.session, job.folder, job.pinned
    checked = compiled.checked
    if checked is None:
        raise UserError("oirl needs the program's source (compile the .alp file, not a saved graph)")
    reward = s.reward
    among = _among(compiled, reward)
    param = _template_param(compiled)
    result = OptimizeResult(compiled.name, "oirl", s.objective, folder, s.seed, settings=s.to_json(),
                            defaults=compiled.values)
    reporter = session.reporter
    pool = seeded_subset(Executor(compiled.program_graph, session).records(s.on), s.seed, s.queries)
    chooser = f"per_query({reward})"

    def variant(replacement: str) -> CompiledProgram:
        text = pin_source(checked, pinned, {param: replacement})
        variant_checked = check(parse(text, path=checked.program.path))
        graph, space = compile_checked(variant_checked, {})
        return CompiledProgram(graph, space, variant_checked)

    with forbid_splits(s.report):
        per_query = variant(chooser)
        prepare_resources(per_query.program_graph, session)  # fits the binary reward on its train split
        model = session.reward(f"reward:{reward}", per_query.program_graph)
        result.extra["binary_metrics"] = dict(getattr(model, "metrics", {}) or {})
        dev: dict[str, Evaluation] = {}
        with reporter.task(f"oirl: {len(among)} prompts and the per-query choice on {len(pool)} {s.on} queries",
                           total=len(among) + 1) as advance:
            for name in among:
                dev[name] = evaluate(variant(name), pool, session, s.objective, split=s.on, advance=advance)
                advance(1, best=f"{max(e.mean for e in dev.values()):.3f}")
            oirl_dev = evaluate(per_query, pool, session, s.objective, split=s.on, advance=advance)
            advance(1)
        best = min(among, key=lambda n: (-dev[n].mean, dev[n].tokens_per_query, among.index(n)))
        random_dev = _random_choice(dev, among, pool, s.seed)
        default = compiled.values.get(param)
        defaults_dev = dev[default] if default in dev else evaluate(compiled, pool, session, s.objective, split=s.on)
        header = [f"Prompt-OIRL by `aldsl optimize` from {checked.program.path}: the template is chosen per query",
                  f"by the binary reward {reward!r} among {', '.join(among)} ({s.objective} = {oirl_dev.mean:.3f} on "
                  f"{len(pool)} {s.on} queries; best single prompt {best}: {dev[best].mean:.3f}). See report.md."]
        written = write_optimized(checked, pinned, folder, header, replace={param: chooser})
        fresh, store = recording_session(session)
        again = evaluate(compile(written), pool, fresh, s.objective, split=s.on)

    records = seeded_subset(Executor(compiled.program_graph, session).records(s.report), s.seed, s.report_queries)
    with reporter.task(f"report: defaults, best prompt, random prompt and per-query choice on {len(records)} "
                       f"{s.report} queries", total=None) as advance:
        defaults_test = evaluate(compiled, records, session, s.objective, split=s.report, advance=advance)
        best_test = evaluate(variant(best), records, session, s.objective, split=s.report, advance=advance)
        random_test = _random_runs(variant, among, records, session, s, advance)
        oirl_test = evaluate(compile(written), records, fresh, s.objective, split=s.report, advance=advance)

    rows = [Row.of("defaults", s.on, defaults_dev, s.seed)]
    rows += [Row.of(f"prompt {name}", s.on, dev[name], s.seed) for name in among]
    rows += [Row.of("random prompt per query", s.on, random_dev, s.seed),
             Row.of(OPTIMIZED, s.on, oirl_dev, s.seed),
             Row.of("defaults", s.report, defaults_test, s.seed),
             Row.of(f"best single prompt ({best})", s.report, best_test, s.seed),
             Row.of("random prompt per query", s.report, random_test, s.seed),
             Row.of(OPTIMIZED, s.report, oirl_test, s.seed)]
    result.rows = rows
    result.values = {param: chooser}
    result.optimized = written
    result.artifacts = ship_artifacts(store, session, folder)
    mean, lo, hi = paired_difference(best_test, oirl_test, s.seed)
    result.extra["difference"] = {"label": f"Per-query choice minus the best single prompt ({best}) on {s.report}",
                                  "mean": mean, "lo": lo, "hi": hi, "n": len(records), "split": s.report}
    result.extra["best_prompt"] = best
    result.extra["choices"] = {name: sum(1 for t in oirl_test.templates if t == name) for name in among}
    same = abs(again.mean - oirl_dev.mean) < 1e-9
    result.extra["reproduced"] = {"search": oirl_dev.mean, "file": again.mean, "same": same}
    result.notes.append(f"Prompt-OIRL: binary reward `{reward}` over {len(among)} prompts ({', '.join(among)}); "
                        f"`optimized` picks one per query. On {s.report} it chose " +
                        ", ".join(f"{n} {c}x" for n, c in result.extra["choices"].items()) + ".")
    result.extra["protocol"] = [
        f"The {s.report} split was forbidden while fitting and comparing (reading it raised an error).",
        f"The best single prompt was chosen on {s.on}; the random choice is seeded per query (seed {s.seed}).",
        f"`{written.name}` re-run from the file on {s.on}: {again.mean:.3f} "
        f"({'reproduced' if same else 'NOT reproduced'}).",
        "95% confidence intervals: percentile bootstrap over queries, 2000 resamples."]
    write_report(result)
    return result


def _template_param(compiled: CompiledProgram) -> str:
    """The search parameter of the flow's prompter template (what per_query replaces)."""
    assert compiled.checked is not None
    prompter = compiled.checked.flow.params["prompter"]
    name = f"{getattr(prompter, 'name', prompter)}.template"
    if name not in compiled.search_space:
        raise UserError(f"oirl chooses the prompter's template per query: declare it as a search, e.g. "
                        f"template = zero_shot in {{zero_shot, cot}} ({name} is fixed)")
    return name


def _among(compiled: CompiledProgram, reward: str | None) -> list[str]:
    assert compiled.checked is not None
    decl = compiled.checked.decls.get(reward or "")
    if decl is None or decl.ctor != "binary":
        raise UserError(f"oirl needs a binary reward (reward = NAME of a binary(...) declaration), got {reward!r}")
    return [getattr(a, "name", str(a)) for a in decl.params["among"]]


def _pick(ids: Sequence[str], among: Sequence[str], seed: int) -> list[str]:
    return [among[random.Random(content_hash(seed, i)).randrange(len(among))] for i in ids]


def _random_choice(dev: dict[str, Evaluation], among: list[str], pool: Sequence[dict[str, Any]], seed: int) -> Evaluation:
    """A seeded random prompt per query, read from the per-prompt runs (no new generation)."""
    ids = [str(r["id"]) for r in pool]
    picks = _pick(ids, among, seed)
    index = {name: {i: k for k, i in enumerate(dev[name].ids)} for name in among}
    return Evaluation(ids, [dev[p].scores[index[p][i]] for i, p in zip(ids, picks)],
                      [dev[p].tokens[index[p][i]] for i, p in zip(ids, picks)], templates=picks)


def _random_runs(variant: Any, among: list[str], records: Sequence[dict[str, Any]], session: Session, s: Settings,
                 advance: Any) -> Evaluation:
    """A seeded random prompt per query on ``records``: each prompt runs on the queries it drew."""
    ids = [str(r["id"]) for r in records]
    picks = _pick(ids, among, s.seed)
    parts = []
    for name in among:
        mine = [r for r, p in zip(records, picks) if p == name]
        if mine:
            ev = evaluate(variant(name), mine, session, s.objective, split=s.report, advance=advance)
            ev.templates = [name] * len(mine)
            parts.append(ev)
    return Evaluation.merge(parts, ids)
