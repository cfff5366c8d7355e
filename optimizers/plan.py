"""``aldsl optimize --plan``: measure, before searching, what the search will cost.

The program's defaults run on a few queries of the search split (never the held-out one) to
measure seconds and generated tokens per query on this machine; the estimate scales them by the
search space's L, the trial count and minibatch, the fits the space can reach (sampling for
trained rewards and fine-tunings) and the later phases (promotion, the knobs' contributions and the
report, counted by :meth:`Settings.later_queries` as the search's budget check counts them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aldsl.program import CompiledProgram
from aldsl.runtime.session import Session
from aldsl.store.data import forbid_splits
from aldsl.optimizers import contributions
from aldsl.optimizers.evaluation import evaluate, seeded_subset
from aldsl.optimizers.settings import Settings

PROBE = 4  # queries measured


@dataclass
class Plan:
    seconds_per_query: float
    tokens_per_second: float
    trial_s: float
    fits_s: float
    tail_s: float
    total_s: float
    lines: list[str]


def plan(compiled: CompiledProgram, settings: Settings, session: Session) -> Plan:
    """Measure the defaults on ``PROBE`` queries of the search split and estimate the run."""
    s = settings
    with forbid_splits(s.report):
        from aldsl.runtime.executor import Executor

        pool = seeded_subset(Executor(compiled.program_graph, session).records(s.on), s.seed, s.queries)
        probe = pool[:PROBE]
        evaluate(compiled, probe[:1], session, s.objective, split=s.on)  # load the model: not timed
        start = time.perf_counter()
        ev = evaluate(compiled, probe, session, s.objective, split=s.on)
        seconds = time.perf_counter() - start
    per_query = seconds / max(1, len(probe))
    tokens = sum(ev.tokens)
    space = compiled.search_space
    samples = _largest(space, f"{compiled.checked.flow.name}.samples") if compiled.checked else 1
    mean_l = (1 + samples) / 2  # the sampler spreads L over its range
    minibatch = min(s.minibatch or len(pool), len(pool))
    trial_s = per_query * minibatch * mean_l
    fits_s, fit_lines = _fits(compiled, per_query)
    # the later phases as the search's budget check prices them: every later program at the largest L
    later, report = s.later_queries(len(pool), minibatch, contributions.groups(compiled.checked, space.names))
    tail_s = per_query * (samples * later + report)
    total = trial_s * s.trials + fits_s + tail_s
    lines = [f"measured: {len(probe)} {s.on} queries of the defaults in {seconds:.1f} s "
             f"({per_query:.2f} s/query, {tokens / max(seconds, 1e-9):.1f} tokens/s)",
             f"a trial: {minibatch} queries x L up to {samples} (mean {mean_l:g}): about {_m(trial_s)}" +
             (f" alone; {s.batch} run together share the model's batches, which is faster per trial"
              if s.batch > 1 else ""),
             *fit_lines,
             f"promotion ({s.promote} trials on {len(pool)} queries), contributions and the report: about "
             f"{_m(tail_s)}",
             f"whole run ({s.trials} trials): about {_m(total)}"
             + (f"; budget {_m(s.budget_s)}: the search stops before passing it" if s.budget_s else "")]
    return Plan(per_query, tokens / max(seconds, 1e-9), trial_s, fits_s, tail_s, total, lines)


def _largest(space: Any, name: str) -> int:
    if name not in space:
        return 1
    p = space[name]
    return int(max(p.choices) if p.choices is not None else p.high)


def _fits(compiled: CompiledProgram, per_query: float) -> tuple[float, list[str]]:
    """Sampling cost of the trained rewards and fine-tunings a setting of the space can use (training
    itself is not measured: it adds to these)."""
    checked = compiled.checked
    if checked is None:
        return 0.0, []
    total, lines = 0.0, []
    for d in checked.decls.values():
        if d.kind not in ("reward", "finetune") or d.ctor in ("critic", "external", "implicit", "sft"):
            continue
        queries = d.params.get("queries") or 32
        samples = d.params.get("samples") or 1
        cost = per_query * queries * samples
        total += cost
        lines.append(f"fit {d.name} ({d.ctor}): {queries} queries x {samples} samples: about {_m(cost)} of "
                     "sampling, plus training")
    for d in checked.decls.values():
        if d.kind == "finetune" and d.ctor == "sft":
            lines.append(f"fit {d.name} (sft): {d.params.get('steps')} steps (training only; one per prompt format "
                         "the search tries)")
    return total, lines


def _m(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"
