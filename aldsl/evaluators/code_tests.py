"""The code_tests evaluator: the answer's code against the record's asserts. The code runs in the
sandbox (:mod:`aldsl.isolation.sandbox`); the asserts run here, against proxies of its functions,
so a candidate cannot report its own verdict."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from aldsl.isolation.sandbox import Candidate, CandidateError, extract_python, run_sandboxed


def _exception_type(kind: str | None) -> type[BaseException]:
    """The builtin exception a candidate raised (so tests can expect it), else CandidateError."""
    import builtins

    found = getattr(builtins, kind or "", None)
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return CandidateError


def _proxy(candidate: Candidate, name: str) -> Callable[..., object]:
    def call(*args: object) -> object:
        try:
            return candidate.call(name, *args)
        except CandidateError as exc:
            if exc.kind is None or _exception_type(exc.kind) is CandidateError:
                raise
            raise _exception_type(exc.kind)(str(exc)) from None
    call.__name__ = name
    return call


def code_tests_driver(tests: str) -> Callable[[Candidate], bool]:
    """A driver that runs Python ``tests`` (asserts) here, with each top-level function of the
    candidate as a proxy and each top-level value as a copy; a failed assert fails the run."""
    program = compile(tests, "tests", "exec")

    def drive(candidate: Candidate) -> bool:
        namespace: dict[str, object] = {}
        for name, kind in candidate.names.items():
            if kind == "function":
                namespace[name] = _proxy(candidate, name)
            else:
                try:
                    namespace[name] = candidate.value(name)
                except CandidateError:
                    pass  # a module or another value that is not plain data
        try:
            exec(program, namespace)  # noqa: S102  (the tests are trusted data, see the docstring)
        except CandidateError:
            raise
        except Exception as exc:  # noqa: BLE001  (an assert or a candidate exception re-raised)
            raise CandidateError(f"A test failed: {type(exc).__name__}: {exc}".rstrip(": ")) from None
        return True

    return drive


def run_tests(answer: str, record: dict, field: str = "tests", timeout: float = 10.0) -> float:
    """1.0 if the code in ``answer`` passes ``record[field]`` (Python asserts, run against the
    sandboxed candidate), else 0.0."""
    result = run_sandboxed(extract_python(answer), code_tests_driver(str(record[field])),
                           timeout=timeout)
    return 1.0 if result.ok else 0.0


def run_tests_many(answers: Sequence[str], records: Sequence[dict], field: str = "tests",
                   timeout: float = 10.0) -> list[float]:
    """:func:`run_tests` over many answers, a few sandboxes at a time (each is its own process)."""
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda pair: run_tests(pair[0], pair[1], field, timeout),
                             zip(answers, records)))
