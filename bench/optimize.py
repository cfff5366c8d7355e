"""Optimization gain on arithmetic word problems with the embedded model (SmolLM2-135M-Instruct).

Searches psi (template, number of demos and how they are picked), L (samples per prompt) with the
selection rule, and theta (no fine-tuning or SFT on the train solutions), with a learned outcome
reward model (ORM) for best-of-L selection; then reports held-out test accuracy of the program's
defaults (zero-shot, greedy, one sample) and of the optimized program. Then Prompt-OIRL: a binary
reward chooses the prompt per query, against the best single prompt and a random prompt per query.

    python bench/optimize.py --quick     # under 15 minutes on 2 CPU cores (an idle machine)
    python bench/optimize.py             # the full budget
    python bench/optimize.py --quick --part oirl   # only the Prompt-OIRL comparison
    python bench/optimize.py --part throughput     # trials per hour, one at a time vs batched

An interrupted run resumes its study (``--fresh`` starts over); ``--trials N`` changes the budget.

Ends with ``default_test=<acc> optimized_test=<acc> ratio=<optimized/default>`` and writes the
tables into the ``optimize`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT / "programs" / "data" / "arith.jsonl"

SEARCH = """program arith_search "arithmetic: search psi, L and theta with a learned reward (ORM)"

data problems = jsonl("{data}", input = "question", target = "answer", demo = "solution")

finetune sft_demos = sft(problems.train, steps = {sft_steps}, lr = {sft_lr}, batch = 8)

generator g = model("smollm2-135m", temperature = 0.0 in {{0.0, 0.7}}, max_tokens = 64,
                    finetune = none in {{none, sft_demos}})

prompter p = prompt(template = zero_shot in {{zero_shot, cot, direct}},
                    demos = demos(problems.train, k = 0 in [0, 3], pick = random in {{random, nearest}}))

reward orm = outcome(problems.train, samples = 4, queries = {orm_queries}, temperature = 0.7)

evaluator acc = numeric_match()

flow main = loop(problems, generator = g, prompter = p, samples = 1 in [1, {max_samples}], reward = orm,
                 select = first in {{first, argmax, majority}}, answer = number, evaluator = acc)

optimize search = optuna(objective = acc, on = problems.dev, trials = {trials}, minibatch = {minibatch},
                         promote = 2, queries = {queries}, report_queries = {report_queries}, seed = 0)
"""

OIRL = """program arith_oirl "arithmetic: Prompt-OIRL, the prompt chosen per query by a binary reward"

data problems = jsonl("{data}", input = "question", target = "answer", demo = "solution",
                      split = {{train: {train}, dev: {dev}, test: {test}}})

generator g = model("smollm2-135m", max_tokens = 64)

prompter p = prompt(template = zero_shot in {{{among}}})

reward success = binary(problems.train, among = [{among}], features = hidden)

evaluator acc = numeric_match()

flow main = loop(problems, generator = g, prompter = p, answer = number, evaluator = acc)

optimize oirl = oirl(objective = acc, on = problems.dev, reward = success, queries = {queries},
                     report_queries = {report_queries})
"""

QUICK = dict(trials=8, minibatch=16, queries=32, report_queries=40, orm_queries=32, sft_steps=20,
             sft_lr=5e-5, max_samples=4)
FULL = dict(trials=24, minibatch=24, queries=100, report_queries=200, orm_queries=120, sft_steps=40,
            sft_lr=5e-5, max_samples=8)
OIRL_QUICK = dict(train=0.03, dev=0.03, test=0.94, queries=20, report_queries=30, among="zero_shot, cot, direct")
THROUGHPUT = """program arith_throughput "arithmetic: search throughput, trials one at a time or batched"

data problems = jsonl("{data}", input = "question", target = "answer", demo = "solution")

generator g = model("smollm2-135m", temperature = 0.7 in {{0.4, 0.7, 1.0}}, max_tokens = 48)

prompter p = prompt(template = zero_shot in {{zero_shot, cot, direct}},
                    demos = demos(problems.train, k = 0 in [0, 3], pick = random in {{random, nearest}}))

evaluator acc = numeric_match()

flow main = loop(problems, generator = g, prompter = p, samples = 1 in [1, 4], select = majority, answer = number,
                 evaluator = acc)

optimize search = optuna(objective = acc, on = problems.dev, trials = {trials}, minibatch = 8, queries = 8,
                         promote = 1, report_queries = 4, pruner = {pruner}, sampler = random, batch = {batch},
                         seed = 0)
"""
"""Throughput: random search (so both modes try exactly the same trials), minibatch 8, no generation
cache; only the batch size differs. With the median pruner (the default) a trial runs its minibatch in
4 parts of 2 queries, and which trials are stopped early depends on what finished before them."""

OIRL_FULL = dict(train=0.2, dev=0.1, test=0.7, queries=100, report_queries=200,
                 among="zero_shot, cot, plan_solve, concise, direct")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the small budget (under 15 minutes on 2 cores)")
    ap.add_argument("--part", choices=("all", "search", "oirl", "throughput"), default="all",
                    help="run only the search, the Prompt-OIRL comparison or the throughput measurement "
                         "(default: the search and Prompt-OIRL)")
    ap.add_argument("--batch", type=int, default=4, help="throughput: trials run together in the batched mode")
    ap.add_argument("--pruner", choices=("median", "none"), default="median",
                    help="throughput: the pruner of both runs (median, the default, scores a trial in 4 parts)")
    ap.add_argument("--out", default=str(ROOT / "build" / "bench_optimize"), help="output folder")
    ap.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    ap.add_argument("--trials", type=int, help="override the search's trial budget (a resumed study keeps its trials)")
    ap.add_argument("--fresh", action="store_true", help="delete an earlier study first (else an interrupted run resumes)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args()

    from aldsl.progress import Reporter
    from aldsl.runtime.session import Session

    mode = "quick" if args.quick else "full"
    out = Path(args.out) / mode
    out.mkdir(parents=True, exist_ok=True)
    session = Session(reporter=Reporter(enabled=not args.quiet))
    if args.part in ("all", "search"):
        _search(args, session, out, mode)
    if args.part in ("all", "oirl"):
        _oirl(args, session, out, mode)
    if args.part == "throughput":
        _throughput(args, out, mode)
    if not args.no_results:
        _write_results(out, mode)
    for name in ("line.txt", "throughput_line.txt"):
        if (out / name).exists():
            print((out / name).read_text(encoding="utf-8").strip())
    return 0


def _search(args: argparse.Namespace, session, out: Path, mode: str) -> None:
    import aldsl
    from aldsl.optimizers.run import optimize

    start = time.perf_counter()
    path = out / "arith_search.alp"
    path.write_text(SEARCH.format(data=DATA, **(QUICK if args.quick else FULL)), encoding="utf-8")
    if args.fresh:
        _fresh_study(out / "arith_search" / "study.db")
    result = optimize(aldsl.compile(path), session=session, out_dir=out, trials=args.trials)
    table = [f"### Search over psi, L and theta with a learned ORM ({mode})", "", *_table(result), "",
             _changed(result), "",
             f"Wall time {(time.perf_counter() - start) / 60:.1f} min ({result.ran} trials run by this invocation); "
             f"report: `{_shown(result.report)}`.", ""]
    print("\n".join(table))
    (out / "search.md").write_text("\n".join(table), encoding="utf-8")
    default, best = result.score("defaults", "test"), result.score("optimized", "test")
    ratio = best / default if default > 0 else float("inf")
    (out / "line.txt").write_text(f"default_test={default:.3f} optimized_test={best:.3f} ratio={ratio:.2f}\n",
                                  encoding="utf-8")


def _oirl(args: argparse.Namespace, session, out: Path, mode: str) -> None:
    import aldsl
    from aldsl.optimizers.run import optimize

    start = time.perf_counter()
    path = out / "arith_oirl.alp"
    path.write_text(OIRL.format(data=DATA, **(OIRL_QUICK if args.quick else OIRL_FULL)), encoding="utf-8")
    result = optimize(aldsl.compile(path), session=session, out_dir=out)
    metrics = ", ".join(f"{k} {v}" for k, v in result.extra.get("binary_metrics", {}).items())
    d = result.extra["difference"]
    table = [f"### Prompt-OIRL ({mode})", "", *_table(result), "",
             f"{d['label']}: {d['mean']:+.3f} (95% CI [{d['lo']:+.3f}, {d['hi']:+.3f}]). "
             f"Choices on {d['split']}: " + ", ".join(f"{k} {v}" for k, v in result.extra["choices"].items()) + ".",
             f"Binary reward model: {metrics}.", "", f"Wall time {(time.perf_counter() - start) / 60:.1f} min.", ""]
    print("\n".join(table))
    (out / "oirl.md").write_text("\n".join(table), encoding="utf-8")


def _throughput(args: argparse.Namespace, out: Path, mode: str) -> None:
    """Trials per hour of the search phase with trials run one at a time and ``--batch`` at a time."""
    import optuna

    import aldsl
    from aldsl.optimizers.run import optimize
    from aldsl.progress import Reporter
    from aldsl.runtime.executor import Executor
    from aldsl.runtime.session import Session

    trials = args.trials or (8 if args.quick else 16)
    session = Session(reporter=Reporter(enabled=not args.quiet), use_cache=False)  # every trial generates
    rates, rows = {}, []
    for batch in (1, args.batch):
        path = out / f"arith_throughput_b{batch}.alp"
        path.write_text(THROUGHPUT.format(data=DATA, trials=trials, batch=batch, pruner=args.pruner).replace(
            "arith_throughput", f"arith_throughput_b{batch}"), encoding="utf-8")
        prog = aldsl.compile(path)
        Executor(prog.program_graph, session).run(Executor(prog.program_graph).records("train")[:1])  # load the model
        _fresh_study(out / prog.name / "study.db")
        result = optimize(prog, session=session, out_dir=out)
        study = optuna.load_study(study_name=result.study, storage=result.storage)
        done = [t for t in study.trials if t.datetime_complete is not None]
        hours = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds() / 3600
        tokens = sum(sum(t.user_attrs.get("tokens") or []) for t in done)
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in done)
        rates[batch] = len(done) / hours
        rows.append(f"| {batch} | {len(done)} ({pruned} pruned) | {hours * 60:.1f} | {rates[batch]:.0f} | "
                    f"{tokens / hours / 3600:.1f} |")
    ratio = rates[args.batch] / rates[1]
    table = [f"### Search throughput at minibatch 8, pruner {args.pruner} ({mode})", "",
             "Random sampler (both runs try exactly the same trials), no generation cache; search phase only "
             "(first trial start to last trial end), the model loaded beforehand."
             + (" A pruned trial's tokens are not recorded, so tok/s counts complete trials only."
                if args.pruner == "median" else ""), "",
             "| trials run together | trials | minutes | trials/hour | generated tok/s |", "|---|---|---|---|---|",
             *rows, "", f"Batched ({args.batch} at a time) over one at a time: {ratio:.2f}x trials per hour.", ""]
    print("\n".join(table))
    (out / f"throughput_{args.pruner}.md").write_text("\n".join(table), encoding="utf-8")
    (out / "throughput_line.txt").write_text(
        f"trials_per_hour_1={rates[1]:.0f} trials_per_hour_{args.batch}={rates[args.batch]:.0f} ratio={ratio:.2f}\n",
        encoding="utf-8")


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (``--out`` may point elsewhere)."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _fresh_study(db: Path) -> None:
    """Measure one search from scratch (the generation cache may still be warm)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def _table(result) -> list[str]:
    lines = ["| program | split | queries | accuracy | 95% CI | tokens/query |", "|---|---|---|---|---|---|"]
    for r in result.rows:
        e = r.evaluation
        lines.append(f"| {r.label} | {r.split} | {len(e.scores)} | {e.mean:.3f} | [{r.ci[0]:.3f}, {r.ci[1]:.3f}] | "
                     f"{e.tokens_per_query:.1f} |")
    return lines


def _changed(result) -> str:
    changed = {k: v for k, v in result.values.items() if result.defaults.get(k) != v}
    d = result.extra.get("difference")
    diff = f" {d['label']}: {d['mean']:+.3f} (95% CI [{d['lo']:+.3f}, {d['hi']:+.3f}])." if d else ""
    return "Optimized values: " + (", ".join(f"`{k} = {v}`" for k, v in changed.items()) or "the defaults") + "." + diff


def _write_results(out: Path, mode: str) -> None:
    """Put this mode's tables (those produced so far) into bench/RESULTS.md: the search and Prompt-OIRL
    in the ``optimize`` section, the throughput runs in the ``search_throughput`` section."""
    from bench.publish import machine, write_section

    results = ROOT / "bench" / "RESULTS.md"
    flag = " --quick" if mode == "quick" else ""
    parts = [(out / name).read_text(encoding="utf-8") for name in ("search.md", "oirl.md") if (out / name).exists()]
    if parts:
        line = (out / "line.txt").read_text(encoding="utf-8").strip() if (out / "line.txt").exists() else ""
        write_section(results, "optimize", "\n".join([
            f"## Optimization (`bench/optimize.py{flag}`)", "",
            "Arithmetic word problems (`programs/data/arith.jsonl`: 1, 2 and 3 steps), embedded model "
            f"SmolLM2-135M-Instruct; machine: {machine()}. Test rows are the held-out split, read once after the "
            "search.", "", *parts, *(["```", line, "```"] if line else [])]))
    runs = [(out / f"throughput_{p}.md").read_text(encoding="utf-8") for p in ("none", "median")
            if (out / f"throughput_{p}.md").exists()]
    if runs:
        write_section(results, "search_throughput", "\n".join([
            f"## Search throughput (`bench/optimize.py{flag} --part throughput`)", "",
            f"Embedded model SmolLM2-135M-Instruct on the arithmetic problems; machine: {machine()}.", "", *runs]))


if __name__ == "__main__":
    sys.exit(main())
