"""What the sandbox's OS boundary costs per LLM-written candidate.

    python bench/sandbox.py [--n 20]

Times, per candidate, (1) a bare ``python -I`` that imports numpy (the floor: any separate
process pays it), (2) the sandbox without the boundary (``ALDSL_ALLOW_UNSANDBOXED`` path: limits
and audit hook only), (3) the sandbox with it (bubblewrap, namespaces, seccomp), each running
one call of a small function; then ``code_tests`` over n answers one by one and four at a time,
and one EUREKA score (CartPole training driven from outside). Prints the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from unittest import mock

from aldsl.isolation import boundary
from aldsl.isolation.sandbox import run_sandboxed, run_tests, run_tests_many
from aldsl.tasks import eureka

CODE = "def add(a, b):\n    return a + b\n"


def timed(fn, n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20)
    n = parser.parse_args().n
    if boundary.unavailable_reason():
        sys.exit(f"the boundary is unavailable here: {boundary.unavailable_reason()}")
    bare = timed(lambda: subprocess.run([sys.executable, "-I", "-c", "import numpy"], check=True), n)
    isolated = timed(lambda: run_sandboxed(CODE, lambda c: c.call("add", 1, 2)), n)
    with mock.patch.object(boundary, "unavailable_reason", lambda: "benchmark"), \
            mock.patch.dict("os.environ", {boundary.OPT_IN_ENV: "1"}):
        unisolated = timed(lambda: run_sandboxed(CODE, lambda c: c.call("add", 1, 2)), n)
    record = {"tests": "assert add(2, 3) == 5"}
    start = time.perf_counter()
    for _ in range(n):
        run_tests(CODE, record)
    serial = time.perf_counter() - start
    start = time.perf_counter()
    run_tests_many([CODE] * n, [record] * n)
    parallel = time.perf_counter() - start
    start = time.perf_counter()
    scored = eureka.score("cartpole", eureka.REFERENCE_REWARD, {"seed": 0})
    eureka_s = time.perf_counter() - start
    print(f"per candidate (median of {n}): bare python+numpy {bare * 1000:.0f} ms, sandbox without "
          f"boundary {unisolated * 1000:.0f} ms, with boundary {isolated * 1000:.0f} ms")
    print(f"boundary overhead: {isolated / unisolated:.2f}x the unisolated sandbox, "
          f"{isolated / bare:.2f}x a bare python process")
    print(f"code_tests over {n} answers: {serial:.2f} s one by one, {parallel:.2f} s four at a time "
          f"({serial / parallel:.2f}x)")
    print(f"one EUREKA score (65 policies x 2 rollouts + 8 test episodes): {eureka_s:.2f} s, "
          f"success {scored['score']:.3f}")


if __name__ == "__main__":
    main()
