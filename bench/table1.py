"""Every row of the paper's Table 1 as an aldsl program on the embedded model, with a baseline.

    python bench/table1.py                 # the full setting: writes bench/results/table1.{md,json}
    python bench/table1.py --small         # the small setting (what `make test` runs, a few minutes)
    python bench/table1.py --rows 4 5      # only some rows, merged into the earlier results

Each row names a program in ``programs/``, the ``--set`` overrides of its small and full settings,
and how it is measured:

- ``optimize`` rows run ``aldsl optimize``: the baseline is the program's defaults, the optimized
  score is the written ``optimized.alp``, both on the held-out test split (read once, after the search);
- ``run`` rows have nothing to tune: the program as written runs on test against a baseline program
  made from it by ``--set`` (e.g. no demonstrations, one sample, one round);
- row 11 also runs Optuna TPE and random search with the same number of evaluations.

Every run starts from an empty generation cache and artifact store (the converted model is reused),
so tokens and wall time are what the row costs from scratch. The last line is
``rows=<n> improved=<k> mean_gain=<x>``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aldsl  # noqa: E402
from aldsl.backends.cache import GenerationCache  # noqa: E402
from aldsl.progress import Reporter  # noqa: E402
from aldsl.runtime.session import Session  # noqa: E402
from bench.publish import machine, write_section  # noqa: E402

RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Row:
    """One row of Table 1: the program, its paper columns, and how to run and compare it."""

    number: int
    usage: str
    program: str
    knob: str  # which knob of Eq. 1-3 the row turns (for the README)
    columns: tuple[str, str, str, str, str, str]  # theta, P_psi, T, L, K, R as aldsl sets them
    mode: str  # "optimize" or "run"
    small: dict[str, Any]
    full: dict[str, Any]
    baseline: dict[str, Any] = field(default_factory=dict)  # run rows: --set values of the baseline
    baseline_label: str = "defaults"
    queries: tuple[int, int] = (0, 0)  # run rows: test queries in the small and full setting
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # run rows: other settings run side by side


ARITH_SMALL = {"g.max_tokens": 24}
ROWS = [
    Row(1, "Supervised fine-tuning", "01_sft.alp", "theta: fine-tune on demonstrations (grid: none vs sft)",
        ("optimized (SFT)", "fixed", "1", "1", "demos", "-"), "optimize",
        small={**ARITH_SMALL, "sft_demos.steps": 2, "sft_demos.batch": 2, "sft_demos.queries": 8,
               "tune.queries": 3, "tune.report_queries": 3},
        full={"sft_demos.steps": 20, "tune.queries": 30, "tune.report_queries": 60},
        baseline_label="base model"),
    Row(2, "InverseRLignment", "02_inverse_rlignment.alp",
        "theta and L: discriminator reward from demonstrations, best-of-L (grid: finetune x L)",
        ("optimized (SFT)", "fixed", "1", "{1,4,8}", "demos", "IRL discriminator"), "optimize",
        small={**ARITH_SMALL, "sft_demos.steps": 2, "sft_demos.batch": 2, "sft_demos.queries": 8,
               "irl.queries": 4, "irl.samples": 1, "tune.queries": 2, "tune.report_queries": 2},
        full={"g.max_tokens": 64, "sft_demos.steps": 20, "irl.queries": 40, "tune.queries": 12,
              "tune.report_queries": 30},
        baseline_label="base model, L = 1"),
    Row(3, "RLHF", "03_rlhf.alp", "theta and L: Bradley-Terry reward from preferences, best-of-L, "
        "rejection-sampling fine-tuning or DPO", ("optimized (rejection FT / DPO)", "fixed", "1", "{1,4}", "-",
                                                  "BT reward"),
        "optimize",
        small={"g.max_tokens": 12, "bt.queries": 4, "bt.samples": 2, "rlhf.queries": 4, "rlhf.samples": 2,
               "rlhf.steps": 1, "prefer.queries": 4, "prefer.samples": 2, "prefer.steps": 1, "prefer.batch": 2,
               "tune.queries": 2, "tune.report_queries": 2},
        full={"g.max_tokens": 32, "bt.queries": 40, "rlhf.queries": 30, "rlhf.steps": 10, "prefer.queries": 30,
              "prefer.steps": 10, "tune.queries": 16, "tune.report_queries": 40},
        baseline_label="base model, L = 1"),
    Row(4, "Zero-shot prompting", "04_zero_shot.alp", "psi: a heuristic template (CoT) instead of the bare question",
        ("fixed", "CoT template", "1", "1", "-", "-"), "run",
        small=ARITH_SMALL, full={}, baseline={"p.template": "direct"}, baseline_label="direct (no CoT)",
        queries=(3, 60)),
    Row(5, "Few-shot prompting (ICL)", "05_few_shot.alp", "K: demonstrations picked per query (nearest, k = 4)",
        ("fixed", "direct + 4 demos", "1", "1", "4 nearest demos", "-"), "run",
        small=ARITH_SMALL, full={}, baseline={"p.demos.k": 0}, baseline_label="zero demos", queries=(3, 60)),
    Row(6, "Thought processes", "06_thought_process.alp",
        "T and L: keep the best 2 of 3 partial thoughts per round by an LLM critic (and, side by side, by a learned PRM and ORM), for 4 rounds",
        ("fixed", "CoT + 2 demos", "4", "3 (keep 2)", "2 demos", "LLM critic; learned PRM, ORM"), "run",
        small={"g.max_tokens": 12, "main.rounds": 2, "prm.queries": 4, "orm.queries": 4, "solver.max_tokens": 24},
        full={}, baseline={"main.samples": 1, "main.keep": 1}, baseline_label="one chain (L = 1)", queries=(2, 20),
        variants={"learned PRM": {"main.reward": "prm"}, "learned ORM": {"main.reward": "orm"}}),
    Row(7, "Prompt optimization (Prompt-OIRL)", "07_prompt_optimization.alp",
        "psi per query: a binary reward learned offline picks the template for each query",
        ("fixed", "optimized per query", "1", "5 prompts", "-", "binary reward"), "optimize",
        small={**ARITH_SMALL, "success.queries": 4, "oirl.queries": 2, "oirl.report_queries": 2},
        full={"g.max_tokens": 64, "success.queries": 40, "oirl.queries": 20, "oirl.report_queries": 40},
        baseline_label="zero_shot"),
    Row(8, "Reward models in RLHF", "08_reward_model.alp",
        "R: train a Bradley-Terry model; Optuna tunes its margin and learning rate",
        ("optimized (reward head)", "fixed", "1", "1", "-", "-"), "optimize",
        small={"bt.queries": 16, "bt.epochs": 50, "tune.trials": 2, "tune.queries": 4, "tune.report_queries": 4},
        full={"bt.queries": 200, "tune.queries": 60, "tune.report_queries": 120},
        baseline_label="default margin, lr"),
    Row(9, "LLMs for evaluation", "09_llm_judge.alp", "psi of a judge: agreement with the golden verdicts",
        ("fixed", "optimized (grid of 4)", "1", "1", "-", "-"), "optimize",
        small={"tune.queries": 4, "tune.report_queries": 4}, full={"tune.queries": 40, "tune.report_queries": 80},
        baseline_label="direct"),
    Row(10, "LLMs for reward design (EUREKA)", "10_reward_design.alp",
        "T: reward code improved with the scores and tracebacks of the sandboxed training runs",
        ("fixed", "write + reflect", "3", "2 (keep 2)", "-", "external (sandbox)"), "run",
        small={"g.max_tokens": 48, "main.rounds": 2, "main.samples": 1, "main.keep": 1}, full={},
        baseline={"main.rounds": 1}, baseline_label="one round", queries=(1, 0)),
    Row(11, "LLMs for Bayesian optimization (LLAMBO)", "11_bayes_opt.alp",
        "T: configurations proposed from the history of cross-validated scores",
        ("fixed", "propose + history", "5", "4 (keep 8)", "-", "external (CV)"), "run",
        small={"main.rounds": 2, "main.samples": 2}, full={}, baseline={"main.rounds": 1},
        baseline_label="one round", queries=(1, 0)),
]


@dataclass
class Outcome:
    """What one row measured (scores on the test split)."""

    row: int
    setting: str
    objective: str
    baseline: float
    optimized: float
    n: int
    tokens: int
    seconds: float
    chosen: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    machine: str = ""  # where the row ran (rows merged from earlier runs may differ)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def fresh_session(folder: Path, reporter: Reporter) -> Session:
    """An empty generation cache and artifact store in ``folder`` (the converted model stays shared)."""
    folder.mkdir(parents=True, exist_ok=True)
    return Session(reporter=reporter, cache=GenerationCache(folder / "generations.sqlite"),
                   artifacts=folder / "artifacts")


def run_row(row: Row, setting: str, out: Path, reporter: Reporter | None = None,
            extra: dict[str, Any] | None = None) -> Outcome:
    """Run one row in the ``small`` or ``full`` setting with its outputs under ``out``; ``extra``: more
    ``--set`` values (e.g. the generator on a server: ``g.backend``, ``g.base_url``, ``g.name``)."""
    from aldsl.optimizers.run import optimize

    reporter = reporter or Reporter(enabled=False)
    sets = {**(row.small if setting == "small" else row.full), **(extra or {})}
    path = ROOT / "programs" / row.program
    session = fresh_session(out / f"row{row.number:02d}", reporter)
    start = time.perf_counter()
    if row.mode == "optimize":
        result = optimize(aldsl.compile(path, sets), session=session, out_dir=out / f"row{row.number:02d}")
        report = result.settings["report"]
        tests = [r for r in result.rows if r.split == report]
        base, best = tests[0], tests[-1]
        outcome = Outcome(row.number, setting, result.objective, base.evaluation.mean, best.evaluation.mean,
                          len(best.evaluation.scores), 0, 0.0, chosen=result.values,
                          extra={"rows": {r.label: r.evaluation.mean for r in tests}})
    else:
        limit = row.queries[0 if setting == "small" else 1] or None
        program = aldsl.compile(path, sets)
        baseline = aldsl.compile(path, {**sets, **row.baseline})
        ran = program.run(split="test", limit=limit, session=session)
        base = baseline.run(split="test", limit=limit, session=session)
        objective = next(iter(ran.scores))
        outcome = Outcome(row.number, setting, objective, base.scores[objective], ran.scores[objective],
                          len(ran.traces), 0, 0.0, chosen=dict(row.baseline))
        if row.number == 11:
            outcome.extra.update(bo_baselines(program, ran))
        for label, changes in row.variants.items():  # same search, other settings (e.g. the reward R)
            before, t0 = session.stats()["generated_tokens"], time.perf_counter()
            other = aldsl.compile(path, {**sets, **changes}).run(split="test", limit=limit, session=session)
            outcome.extra.setdefault("variants", {})[label] = {
                "score": other.scores[objective], "tokens": session.stats()["generated_tokens"] - before,
                "seconds": round(time.perf_counter() - t0, 1)}
    outcome.tokens = session.stats()["generated_tokens"]
    outcome.seconds = time.perf_counter() - start
    outcome.machine = machine()
    return outcome


def bo_baselines(program: aldsl.CompiledProgram, ran: Any) -> dict[str, float]:
    """Optuna TPE and random search with as many evaluations as the LLM made, on the same tasks."""
    from aldsl.tasks.bo import baseline

    graph = program.program_graph
    rounds = sum(1 for n in graph.nodes() if n.startswith("generate_"))
    samples = graph["generate_1"]["params"]["samples"]
    budget = rounds * samples
    out: dict[str, float] = {"evaluations": budget}
    for sampler in ("tpe", "random"):
        scores = [baseline(sampler, budget, seed=int(t.record.get("seed", 0)),
                           fold_seed=int(t.record.get("seed", 0)))[-1] for t in ran.traces]
        out[sampler] = sum(scores) / len(scores)
    return out


def markdown(outcomes: list[Outcome], setting: str) -> str:
    rows = {r.number: r for r in ROWS}
    machines: dict[str, list[int]] = {}
    for o in outcomes:
        machines.setdefault(o.machine or "not recorded", []).append(o.row)
    where = (f"Machine: {next(iter(machines))}" if len(machines) == 1 else "Machines: " + "; ".join(
        f"rows {', '.join(map(str, nums))}: {m}" for m, nums in machines.items()))
    lines = [f"# Table 1 on the embedded model ({setting} setting)", "",
             f"{where}. Produced by `python bench/table1.py" + (" --small" if setting == "small" else "")
             + "`; every row from an empty generation cache and artifact store. Scores are on the held-out test "
             "split; `baseline` is the row's reference program, `aldsl` the program as written or as optimized.", "",
             "| # | usage | theta | P_psi | T | L | K | R | objective | baseline | aldsl | n test | tokens | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        r = rows[o.row]
        lines.append(f"| {r.number} | {r.usage} | " + " | ".join(r.columns) +
                     f" | {o.objective} | {o.baseline:.3f} ({r.baseline_label}) | {o.optimized:.3f} | {o.n} | "
                     f"{o.tokens} | {o.seconds:.0f} |")
    lines += ["", "Notes:", ""]
    for o in outcomes:
        r = rows[o.row]
        note = f"- Row {r.number}: {r.knob}."
        if o.chosen and r.mode == "optimize":
            note += " Chosen: " + ", ".join(f"`{k} = {v}`" for k, v in o.chosen.items()) + "."
        for label, v in o.extra.get("variants", {}).items():
            note += (f" With the {label} instead: {o.objective} {v['score']:.3f} ({v['tokens']} tokens, "
                     f"{v['seconds']:.0f} s including its fit).")
        if o.row == 11 and "tpe" in o.extra:
            note += (f" Same budget of {o.extra['evaluations']} evaluations: Optuna TPE {o.extra['tpe']:.4f}, "
                     f"random search {o.extra['random']:.4f} (best CV accuracy).")
        lines.append(note)
    return "\n".join(lines) + "\n"


def readme_table(outcomes: list[Outcome]) -> str:
    """The compact table the README shows between its ``table1`` markers."""
    rows = {r.number: r for r in ROWS}
    lines = ["| # | usage | objective (test) | baseline | aldsl | n | tokens | wall s |", "|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        r = rows[o.row]
        lines.append(f"| {r.number} | {r.usage} | {o.objective} | {o.baseline:.3f} ({r.baseline_label}) | "
                     f"{o.optimized:.3f} | {o.n} | {o.tokens} | {o.seconds:.0f} |")
    return "\n".join(lines)


def update_readme(outcomes: list[Outcome]) -> None:
    write_section(ROOT / "README.md", "table1", readme_table(outcomes), append=False)


def merged(earlier: list[Outcome], outcomes: list[Outcome]) -> list[Outcome]:
    """Earlier results with these rows replaced, in row order."""
    by_row = {o.row: o for o in earlier} | {o.row: o for o in outcomes}
    return [by_row[n] for n in sorted(by_row)]


def save(setting: str, outcomes: list[Outcome]) -> None:
    """Write bench/results/table1[_small].{md,json} (and the README table for the full setting)."""
    stem = "table1" if setting == "full" else "table1_small"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.md").write_text(markdown(outcomes, setting), encoding="utf-8")
    (RESULTS / f"{stem}.json").write_text(json.dumps([o.to_json() for o in outcomes], indent=1, default=str),
                                          encoding="utf-8")
    if setting == "full":
        update_readme(outcomes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="the small setting (tests)")
    ap.add_argument("--rows", type=int, nargs="*", help="only these rows (merged into the earlier results)")
    ap.add_argument("--out", default=str(ROOT / "build" / "table1"), help="work folder (studies, artifacts)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    setting = "small" if args.small else "full"
    reporter = Reporter(enabled=not args.quiet)
    path = RESULTS / ("table1.json" if setting == "full" else "table1_small.json")
    earlier = [Outcome(**o) for o in json.loads(path.read_text(encoding="utf-8"))] if args.rows and path.exists() else []
    outcomes: list[Outcome] = []
    for row in [r for r in ROWS if not args.rows or r.number in args.rows]:
        reporter.log(f"row {row.number}: {row.usage} ({row.program}, {setting})")
        outcome = run_row(row, setting, Path(args.out) / setting, reporter)
        reporter.log(f"row {row.number}: baseline {outcome.baseline:.3f} -> {outcome.optimized:.3f} "
                     f"({outcome.tokens} tokens, {outcome.seconds:.0f} s)")
        outcomes.append(outcome)
        save(setting, merged(earlier, outcomes))  # after every row: an interrupted run keeps what it measured
    outcomes = merged(earlier, outcomes)
    print(markdown(outcomes, setting))
    gains = [o.optimized - o.baseline for o in outcomes]
    print(f"rows={len(outcomes)} improved={sum(g > 0 for g in gains)} mean_gain={sum(gains) / len(gains):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
