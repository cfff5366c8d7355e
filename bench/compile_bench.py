"""Parse+check time and whole-compile time (parse, check, graph) against the number of rounds T.

    python bench/compile_bench.py

Prints one row per T in 1, 10, 100, 1000 and the time per node; the last line says whether the
time grows linearly with the number of nodes (per-node time at T = 1000 within 3x of T = 10).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aldsl
from aldsl.language.check import check
from aldsl.language.parser import parse

PROGRAM = """program bench "compile benchmark"
data d = jsonl("data.jsonl", input = "q", target = "a", demo = "s")
generator g = model("smollm2-135m", temperature = 0.7 in [0.1, 1.2], max_tokens = 32)
prompter p = prompt(template = cot in {cot, zero_shot, plan_solve}, demos = demos(d.train, k = 2 in [0, 4]),
                    followup = feedback)
reward crit = critic()
evaluator acc = numeric_match()
flow main = loop(d, generator = g, prompter = p, rounds = ROUNDS, samples = 4 in [1, 16], keep = 2,
                 reward = crit, select = argmax, answer = number, evaluator = acc)
optimize o = optuna(objective = acc, on = d.dev, trials = 10)
"""


def measure(rounds: int, folder: Path, repeats: int) -> tuple[float, float, int]:
    path = folder / f"t{rounds}.alp"
    path.write_text(PROGRAM.replace("ROUNDS", str(rounds)))
    parse_times, compile_times = [], []
    nodes = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        program = parse(path.read_text(), str(path))
        check(program)
        t1 = time.perf_counter()
        compiled = aldsl.compile(path)  # parse + check + graph construction
        t2 = time.perf_counter()
        parse_times.append(t1 - t0)
        compile_times.append(t2 - t1)
        nodes = compiled.graph.number_of_nodes()
    return statistics.median(parse_times), statistics.median(compile_times), nodes


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "data.jsonl").write_text(json.dumps({"q": "1 + 1", "a": "2", "s": "1 + 1 = 2"}) + "\n")
        measure(1, folder, 1)  # warm up the parser
        rows = []
        print(f"{'T':>6} {'nodes':>7} {'parse+check ms':>15} {'compile ms':>11} {'compile us/node':>16}")
        for rounds in (1, 10, 100, 1000):
            parse_s, compile_s, nodes = measure(rounds, folder, 5 if rounds < 1000 else 3)
            rows.append((rounds, nodes, compile_s))
            print(f"{rounds:>6} {nodes:>7} {parse_s * 1e3:>15.2f} {compile_s * 1e3:>11.2f} "
                  f"{compile_s / nodes * 1e6:>16.1f}")
    per_node = {r: c / n for r, n, c in rows}
    ratio = per_node[1000] / per_node[10]
    linear = ratio < 3.0
    print(f"per-node compile time T=1000 vs T=10: {ratio:.2f}x -> {'linear' if linear else 'NOT linear'} in nodes")
    return 0 if linear else 1


if __name__ == "__main__":
    sys.exit(main())
