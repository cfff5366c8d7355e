"""Learned reward models for best-of-L on arithmetic with the embedded model (SmolLM2-135M-Instruct).

Fits ORM (also as a generative verifier), PRM, discriminator and Bradley-Terry rewards on the train
split (never reading test), then samples L candidates per held-out test problem at temperature 0.8
and compares the golden accuracy of the first sample, majority vote, best-of-L by each reward
(argmax) and its weighted vote (the answer with the largest sum of softmax(reward) weights) against
the oracle pass@L. Also
reports Bradley-Terry pairwise accuracy on held-out pairs for two preference tasks: arithmetic
(`programs/data/prefs_arith.jsonl`) and positive reviews (pairs of the generator's own samples
ranked by VADER).

    python bench/rewards.py --quick     # a few minutes on an idle 2-core machine
    python bench/rewards.py             # the full run (200 test problems, L = 8)

Generations are cached on disk, so reruns are cheap. Ends with
``first=<acc> majority=<acc> best_learned=<acc> pass@L=<acc> gap_captured=<fraction>`` and writes
the table into the ``rewards`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT / "programs" / "data"
FAMILIES = {"orm": "ORM (outcome)", "prm": "PRM (process)", "irl": "discriminator (IRL)", "bt": "Bradley-Terry"}
BACKBONES = {"": "head on frozen features", "_lm": "LM backbone"}
LEARNED = {f"{name}{suffix}": f"{label}, {BACKBONES[suffix]}" for name, label in FAMILIES.items() for suffix in BACKBONES}
LEARNED["orm_gen"] = f"{FAMILIES['orm']}, LM backbone, generative verifier"

ARITH = """program rewards_arith "best-of-L on arithmetic with learned rewards"

data problems = jsonl("{data}/arith.jsonl", input = "question", target = "answer", demo = "solution")

generator g = model("smollm2-135m", temperature = 0.8, max_tokens = {max_tokens}, stop = ["\\n\\n"])

prompter p = prompt(template = zero_shot, demos = demos(problems.train, k = 2))

evaluator acc = numeric_match()

reward orm = outcome(problems.train, samples = {train_samples}, queries = {train_queries}{head})
reward prm = process(problems.train, samples = 2, rollouts = {rollouts}, queries = {prm_queries}{head})
reward irl = discriminator(problems.train, positives = {positives}, samples = 2, queries = {train_queries}{head})
reward bt  = bradley_terry(problems.train, annotator = acc, samples = {train_samples}, queries = {train_queries}{head})
reward orm_lm = outcome(problems.train, samples = {train_samples}, queries = {train_queries}{lm})
reward prm_lm = process(problems.train, samples = 2, rollouts = {rollouts}, queries = {prm_queries}{lm})
reward irl_lm = discriminator(problems.train, positives = {positives}, samples = 2, queries = {train_queries}{lm})
reward bt_lm  = bradley_terry(problems.train, annotator = acc, samples = {train_samples}, queries = {train_queries}{lm})
reward orm_gen = outcome(problems.train, samples = {train_samples}, queries = {train_queries}{lm_last}, verifier = generative)

flow main = loop(problems, generator = g, prompter = p, samples = {L},
                 reward = orm in {{orm, prm, irl, bt, orm_lm, prm_lm, irl_lm, bt_lm, orm_gen}},
                 select = first in {{first, majority, argmax, weighted_vote}}, answer = number, evaluator = acc)
"""

PREFS = """program rewards_prefs "Bradley-Terry on arithmetic preference pairs"

data prefs = jsonl("{data}/prefs_arith.jsonl", input = "prompt", target = "chosen")

reward bt = bradley_terry(prefs.train, queries = {pref_queries}{head})

generator pair = candidates(["chosen", "rejected"])

prompter p = prompt(template = direct, chat = false)

evaluator pairwise = exact_match(field = "chosen")

flow main = loop(prefs, generator = pair, prompter = p, samples = 2, reward = bt, select = argmax,
                 evaluator = pairwise)
"""

REVIEWS = """program rewards_reviews "Bradley-Terry on positive reviews ranked by VADER"

data reviews = jsonl("{data}/reviews.jsonl", input = "prompt", target = none)

evaluator positive = sentiment(target = positive)

reward bt = bradley_terry(reviews.train, annotator = positive, samples = 4, queries = {review_queries}{head})

generator g = model("smollm2-135m", temperature = 0.8, max_tokens = 48)

prompter p = prompt(template = direct)

flow main = loop(reviews, generator = g, prompter = p, samples = 4, reward = bt, select = argmax, evaluator = positive)
"""


@dataclass(frozen=True)
class Budget:
    test: int  # test problems (the split has 200)
    L: int
    train_queries: int
    train_samples: int
    prm_queries: int
    rollouts: int
    pref_queries: int
    review_queries: int
    review_test: int
    max_tokens: int = 80
    positives: str = "sft"


FULL = Budget(test=200, L=8, train_queries=360, train_samples=8, prm_queries=160, rollouts=4, pref_queries=0,
              review_queries=120, review_test=60)
QUICK = Budget(test=40, L=4, train_queries=80, train_samples=4, prm_queries=32, rollouts=2, pref_queries=0,
               review_queries=32, review_test=20, positives="demos")
HEAD = ", tune = head, epochs = {epochs}, lr = {lr}"
LM = ", tune = top, layers = {layers}, value = {value}, epochs = {lm_epochs}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the small budget (a few minutes)")
    ap.add_argument("--out", default=str(ROOT / "build" / "bench_rewards"), help="folder for the generated programs")
    ap.add_argument("--epochs", type=int, default=300, help="epochs of every reward head")
    ap.add_argument("--lr", type=float, default=3e-3, help="learning rate of every reward head")
    ap.add_argument("--layers", type=int, default=4, help="top LM layers trained by the LM-backbone rewards")
    ap.add_argument("--lm-epochs", type=int, default=2, help="passes over the data of the LM-backbone rewards")
    ap.add_argument("--value", default="last", choices=("last", "tokens"), help="loss of the LM ORM and discriminator")
    ap.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--budget", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="change fields of the chosen budget, e.g. --budget train_queries=120 positives=demos")
    args = ap.parse_args()

    from aldsl.progress import Reporter
    from aldsl.runtime.session import Session

    budget = QUICK if args.quick else FULL
    mode = "quick" if args.quick else "full"
    if args.budget:
        changes = dict(item.split("=", 1) for item in args.budget)
        budget = replace(budget, **{k: type(getattr(budget, k))(v) for k, v in changes.items()})
        mode += " (" + ", ".join(args.budget) + ")"
    out = Path(args.out) / mode.split()[0]
    out.mkdir(parents=True, exist_ok=True)
    session = Session(reporter=Reporter(enabled=not args.quiet))
    head = HEAD.format(epochs=args.epochs, lr=args.lr)
    lm = LM.format(layers=args.layers, value=args.value, lm_epochs=args.lm_epochs)
    start = time.perf_counter()
    arith, prefs, reviews = write_programs(out, budget, head, lm)
    best_of_l, fit_info = selection(arith, budget, session)
    pairwise = [preference_pairs(prefs, session), review_pairs(reviews, budget, session)]

    first, majority, oracle = (best_of_l[k] for k in ("first sample", "majority vote", f"oracle pass@{budget.L}"))
    best_name = max((label for label in best_of_l if label.startswith(tuple(FAMILIES.values()))), key=best_of_l.get)
    best = best_of_l[best_name]
    gap = (best - first) / (oracle - first) if oracle > first else float("nan")
    line = (f"first={first:.3f} majority={majority:.3f} best_learned={best:.3f} pass@L={oracle:.3f} "
            f"gap_captured={gap:.2f}")
    seconds = time.perf_counter() - start
    tables = _tables(budget, best_of_l, fit_info, pairwise, best_name, gap, seconds, mode, args)
    print("\n".join(tables))
    if not args.no_results:
        _write_results(tables, line, mode)
    print(line)
    return 0


# ---------------------------------------------------------------- best-of-L on arithmetic
def selection(path: Path, budget: Budget, session) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Fit every learned reward on train, then test accuracy of each selection rule on the same L samples.

    ``fit_info[label]`` holds the reward's held-out metrics and fit seconds (argmax rows) and, for every
    row, the paired difference to majority vote over the test queries with its 95% bootstrap interval."""
    import aldsl
    from aldsl.evaluators import evaluate
    from aldsl.ops.answers import extract
    from aldsl.runtime.executor import Executor
    from aldsl.store.data import forbid_splits

    compiled = aldsl.compile(path)
    fitted: dict[str, dict[str, Any]] = {}
    with forbid_splits("test"):
        for name in LEARNED:
            t0 = time.perf_counter()
            model = session.reward(f"reward:{name}", fit_graph(compiled, name))
            fitted[name] = {"metrics": dict(model.metrics), "seconds": time.perf_counter() - t0}
            session.reporter.log(f"{name}: {model.metrics} ({fitted[name]['seconds']:.0f} s)")
    records = Executor(compiled.program_graph, session).records("test", budget.test)
    # Every rule selects among the same L cached samples per query, so each reward scores them once (in
    # its argmax run) and the other rules are applied to those scores with the flow's own select().
    base = Executor(compiled.program_graph, session).run(records, split="test")
    spec = compiled.program_graph.spec("evaluate").evaluators[0]
    answers = [[extract("number", c.text, None) for c in t.candidates] for t in base.traces]
    flat = evaluate(spec, [a for q in answers for a in q], [t.record for t in base.traces for _ in t.candidates],
                    session, compiled.program_graph)
    correct = [flat[i:i + budget.L] for i in range(0, len(flat), budget.L)]
    candidates: dict[str, Any] = {"answers": answers, "correct": correct, "rewards": {}}
    per_query = {"first sample": _chosen("first", answers, correct, None),
                 "majority vote": _chosen("majority", answers, correct, None)}
    fit_info: dict[str, dict[str, Any]] = {"first sample": {}, "majority vote": {}}
    voted = {}
    for name, label in LEARNED.items():
        variant = compiled.with_params({"main.reward": name, "main.select": "argmax"})
        result = Executor(variant.program_graph, session).run(records, split="test")
        rewards = [[c.reward for c in t.candidates] for t in result.traces]
        candidates["rewards"][name] = rewards
        per_query[label] = _chosen("argmax", answers, correct, rewards)
        if per_query[label] != result.per_query("acc"):
            raise RuntimeError(f"{name}: select() on the stored rewards disagrees with the flow's argmax run")
        voted[f"{label}, weighted vote"] = _chosen("weighted_vote", answers, correct, rewards)
        fit_info[label] = dict(fitted[name])
    per_query.update(voted)
    fit_info.update({label: {} for label in voted})
    (path.parent / "test_candidates.json").write_text(json.dumps(candidates), encoding="utf-8")
    results = {label: sum(q) / len(q) for label, q in per_query.items()}
    for label in results:
        fit_info[label]["vs_majority"] = paired_ci(per_query[label], per_query["majority vote"])
    results[f"oracle pass@{budget.L}"] = sum(max(q) for q in correct) / len(correct)
    results["mean sample accuracy"] = sum(flat) / len(flat)
    return results, fit_info


def _chosen(rule: str, answers: list[list[str]], correct: list[list[float]],
            rewards: list[list[float | None]] | None) -> list[float]:
    """The golden score of the candidate ``rule`` selects for each query."""
    from aldsl.ops.select import select

    rewards = rewards or [[None] * len(a) for a in answers]
    return [c[select(rule, a, r)] for a, c, r in zip(answers, correct, rewards)]


def paired_ci(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Mean of a - b over the same queries and its 95% bootstrap interval (scipy, seeded)."""
    import numpy as np
    from scipy.stats import bootstrap

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if not d.any():
        return 0.0, 0.0, 0.0
    ci = bootstrap((d,), np.mean, n_resamples=2000, confidence_level=0.95, method="percentile",
                   random_state=np.random.default_rng(0)).confidence_interval
    return float(d.mean()), float(ci.low), float(ci.high)


def fit_graph(compiled, name: str):
    """The graph reward ``name`` is fitted from: a reward is in the graph only where a selection reads
    it (not under the program's default select = first)."""
    return compiled.with_params({"main.reward": name, "main.select": "argmax"}).program_graph


# ---------------------------------------------------------------- Bradley-Terry pairwise accuracy
def preference_pairs(path: Path, session) -> dict[str, Any]:
    """BT on prefs_arith train pairs; pairwise accuracy on its test pairs (read after fitting)."""
    import aldsl
    from aldsl.store.data import forbid_splits
    from aldsl.runtime.executor import Executor

    compiled = aldsl.compile(path)
    with forbid_splits("test"):
        model = session.reward("reward:bt", compiled.program_graph)
    test = Executor(compiled.program_graph, session).records("test")
    accuracy = _pairwise(model, [(r["x"], r["chosen"], r["rejected"]) for r in test])
    return {"task": "arithmetic (prefs_arith.jsonl: correct vs. wrong solution)", "train": model.metrics,
            "test_pairs": len(test), "test_accuracy": accuracy}


def review_pairs(path: Path, budget: Budget, session) -> dict[str, Any]:
    """BT on self-made VADER-ranked pairs of review samples; accuracy on pairs made the same way on test."""
    import aldsl
    from aldsl.evaluators import evaluate
    from aldsl.ops.sampling import sample
    from aldsl.runtime.executor import Executor
    from aldsl.store.data import forbid_splits

    compiled = aldsl.compile(path)
    graph = compiled.program_graph
    with forbid_splits("test"):
        model = session.reward("reward:bt", graph)
    spec = graph.spec("reward:bt")
    test = Executor(graph, session).records("test", budget.review_test)
    thoughts = sample(session, graph, spec.prompter, spec.generator, test, spec["samples"], spec["temperature"])
    pairs = []
    for record, ts in zip(test, thoughts):
        scores = evaluate(spec.annotator, [t.strip() for t in ts], [record] * len(ts), session, graph)
        best, worst = max(range(len(ts)), key=scores.__getitem__), min(range(len(ts)), key=scores.__getitem__)
        if scores[best] > scores[worst]:
            pairs.append((record["x"], ts[best], ts[worst]))
    return {"task": "positive reviews (own samples, best vs. worst by VADER)", "train": model.metrics,
            "test_pairs": len(pairs), "test_accuracy": _pairwise(model, pairs)}


def _pairwise(model, pairs: list[tuple[str, str, str]]) -> float:
    from aldsl.rewards import RewardItem

    chosen = model.score([RewardItem(x, c) for x, c, _ in pairs])
    rejected = model.score([RewardItem(x, r) for x, _, r in pairs])
    wins = [1.0 if a.score > b.score else 0.5 if a.score == b.score else 0.0 for a, b in zip(chosen, rejected)]
    return sum(wins) / len(wins) if wins else float("nan")


# ---------------------------------------------------------------- output
def _tables(budget: Budget, best_of_l: dict[str, float], fit_info: dict[str, dict[str, Any]],
            pairwise: list[dict[str, Any]], best_name: str, gap: float, seconds: float, mode: str,
            args: argparse.Namespace) -> list[str]:
    rows = ["| selection | test accuracy | vs. majority vote (95% CI) | held-out metrics of the reward (train split) "
            "| fit (s) |", "|---|---|---|---|---|"]
    for label, acc in best_of_l.items():
        info = fit_info.get(label, {})
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in info.get("metrics", {}).items()
                            if isinstance(v, float) and math.isfinite(v))
        vs = info.get("vs_majority")
        delta = f"{vs[0]:+.3f} [{vs[1]:+.3f}, {vs[2]:+.3f}]" if vs and label != "majority vote" else ""
        fit_s = f"{info['seconds']:.0f}" if "seconds" in info else ""
        rows.append(f"| {label} | {acc:.3f} | {delta} | {metrics} | {fit_s} |")
    pair_rows = ["| task | BT held-out pairs (train split) | pairwise accuracy | test pairs | test pairwise accuracy |",
                 "|---|---|---|---|---|"]
    for p in pairwise:
        pair_rows.append(f"| {p['task']} | {p['train'].get('held_out_pairs', 0)} | "
                         f"{p['train'].get('pairwise_accuracy', float('nan')):.3f} | {p['test_pairs']} | "
                         f"{p['test_accuracy']:.3f} |")
    captured = (f"it captures {gap:.0%} of the gap between the first sample and pass@{budget.L}." if math.isfinite(gap)
                else f"pass@{budget.L} is no better than the first sample: no gap to capture.")
    return [f"### Best-of-{budget.L} selection on {budget.test} held-out arithmetic problems ({mode})", "",
            f"L = {budget.L} samples per problem at temperature 0.8 (2 random train demos, zero-shot template, "
            f"max_tokens {budget.max_tokens}). Rewards are trained on the train split only: ORM and Bradley-Terry on "
            f"{budget.train_samples} samples of each of {budget.train_queries} train problems (BT pairs: a correct "
            f"against an incorrect sample by the golden check), PRM on 2 solutions of {budget.prm_queries} problems "
            f"with {budget.rollouts} rollouts per step, the discriminator on positives = {budget.positives} vs. 2 base "
            f"samples of {budget.train_queries} problems. Each family twice: a head (64-unit MLP on the generator's "
            f"mean-pooled hidden states, {args.epochs} epochs at lr {args.lr}) and an LM backbone (the generator's "
            f"top {args.layers} layers and a value head fine-tuned over cached lower-layer states, {args.lm_epochs} "
            f"passes, loss on the {args.value} token(s)); the ORM also as a generative verifier (the same, but the "
            f"text goes on with a yes/no question and the head starts as the LM's own Yes minus No output rows). A "
            f"reward selects by argmax, or by weighted vote: the answer "
            f"whose candidates have the largest sum of softmax(reward) weights. Paired differences to majority vote "
            f"over the same test queries, 95% percentile bootstrap.", "", *rows, "",
            f"Best learned reward: {best_name}; {captured}", "", "### Bradley-Terry pairwise accuracy on held-out pairs",
            "", *pair_rows, "",
            f"Wall time {seconds / 60:.1f} min.", ""]


def write_programs(out: Path, budget: Budget, head: str, lm: str) -> tuple[Path, Path, Path]:
    """The arithmetic, preference-pair and review programs of this budget, written into ``out``."""
    # the generative verifier reads one answer after the text: its loss is on the last token whatever --value says
    values = {**budget.__dict__, "data": DATA, "head": head, "lm": lm,
              "lm_last": lm.replace("value = tokens", "value = last")}
    return tuple(_write(out / f"{name}.alp", text.format(**values))  # type: ignore[return-value]
                 for name, text in (("arith", ARITH), ("prefs", PREFS), ("reviews", REVIEWS)))


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _write_results(tables: list[str], line: str, mode: str) -> None:
    from bench.publish import machine, write_section

    flags = (" --quick" if mode.startswith("quick") else "") + (f" --budget {mode.split('(', 1)[1][:-1].replace(',', '')}"
                                                                  if "(" in mode else "")
    write_section(ROOT / "bench" / "RESULTS.md", "rewards", "\n".join([
        f"## Learned reward models (`bench/rewards.py{flags}`)", "",
        f"Embedded model SmolLM2-135M-Instruct; machine: {machine()}.", "", *tables, "```", line, "```"]))


if __name__ == "__main__":
    sys.exit(main())
