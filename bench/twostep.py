"""Generalization: the documented recipe on a task the optimizer was not tuned on.

Two-step word problems in new phrasings with answers only (``aldsl.tasks.twostep``: no worked
solutions), the embedded model, and a program that says only what docs/optimize.md tells a new user
to write: the task, the evaluator, ``space = auto`` and a wall-clock budget. The defaults are the
zero-shot program (greedy, one sample, no demos, no fine-tuning); the report reads the held-out test
split once, after the search.

    python bench/twostep.py                 # 300 problems (180 train, 60 dev, 60 test), budget 20m
    python bench/twostep.py --budget 10m    # a shorter budget

Ends with ``zero_shot_test=<acc> optimized_test=<acc> ratio=<optimized/zero-shot>`` and writes the
table into the ``twostep`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROGRAM = """program twostep "two-step word problems in new phrasings, answers only"

data problems = jsonl("{data}", input = "question", target = "answer")
generator g = model("smollm2-135m", max_tokens = 96)
prompter p = prompt()
evaluator acc = numeric_match()
flow main = loop(problems, generator = g, prompter = p, answer = number, evaluator = acc)
optimize search = optuna(objective = acc, on = problems.dev, space = auto, budget = "{budget}")
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=300, help="problems generated (60%% train, 20%% dev, 20%% test)")
    ap.add_argument("--seed", type=int, default=11, help="seed of the problem generator")
    ap.add_argument("--budget", default="20m", help="the optimize budget")
    ap.add_argument("--out", default=str(ROOT / "build" / "bench_twostep"), help="output folder")
    ap.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args()

    import aldsl
    from aldsl.optimizers.run import optimize
    from aldsl.progress import Reporter
    from aldsl.runtime.session import Session
    from aldsl.tasks.twostep import make_twostep
    from bench.optimize import _changed, _fresh_study, _table
    from bench.publish import machine, write_section

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "twostep.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_twostep(args.problems, seed=args.seed)),
                    encoding="utf-8")
    path = out / "twostep.alp"
    path.write_text(PROGRAM.format(data=data, budget=args.budget), encoding="utf-8")
    _fresh_study(out / "twostep" / "study.db")
    start = time.perf_counter()
    result = optimize(aldsl.compile(path), session=Session(reporter=Reporter(enabled=not args.quiet)), out_dir=out)
    minutes = (time.perf_counter() - start) / 60
    zero, best = result.score("defaults", "test"), result.score("optimized", "test")
    ratio = best / zero if zero > 0 else float("inf")
    line = f"zero_shot_test={zero:.3f} optimized_test={best:.3f} ratio={ratio:.2f}"
    steps = result.extra.get("contributions") or []
    table = ["## Generalization: `space = auto` on answer-only two-step problems (`bench/twostep.py`)", "",
             f"{args.problems} problems from `aldsl.tasks.twostep` (seed {args.seed}; fields question and answer "
             "only), embedded model SmolLM2-135M-Instruct, the program of the docs' recipe "
             f"(`space = auto`, `budget = \"{args.budget}\"`); machine: {machine()}. The defaults are zero-shot.", "",
             *_table(result), "", _changed(result), "",
             "Contributions on dev: " + (", ".join(f"{s['label']} {s['delta']:+.3f}" for s in steps) or "none") + ".",
             "", f"Wall time {minutes:.1f} min; report: `{path.parent.name}/twostep/report.md`.", "",
             "```", line, "```"]
    print("\n".join(table))
    if not args.no_results:
        write_section(ROOT / "bench" / "RESULTS.md", "twostep", "\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
