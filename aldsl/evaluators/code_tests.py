"""The code_tests evaluator: the answer's code against the record's asserts, in the sandbox."""

from __future__ import annotations

from aldsl.isolation.sandbox import extract_python, run_sandboxed

_TESTS_HARNESS = """\
def run(candidate, args):
    namespace = dict(vars(candidate))
    exec(compile(args["tests"], "tests", "exec"), namespace)
    return True
"""


def run_tests(answer: str, record: dict, field: str = "tests", timeout: float = 10.0) -> float:
    """1.0 if the code in ``answer`` passes ``record[field]`` (Python asserts run in the
    candidate's namespace, in the sandbox), else 0.0."""
    result = run_sandboxed(extract_python(answer), _TESTS_HARNESS, timeout=timeout,
                           args={"tests": str(record[field])})
    return 1.0 if result.ok else 0.0
