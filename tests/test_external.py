"""External rewards: user functions in worker processes and commands, with every failure mode."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from aldsl.isolation.external import (
    ExternalError,
    ExternalItem,
    ExternalSpec,
    check_external,
    parse_reward,
    run_external,
)

FIXTURES = str(Path(__file__).parent / "fixtures")


def spec(call: str | None = None, command: str | None = None, **kw) -> ExternalSpec:
    return ExternalSpec(call=call, command=command, base_dir=FIXTURES, **kw)


def item(candidate: str, **record) -> ExternalItem:
    return ExternalItem(x="what is 2+2?", candidate=candidate, record={"answer": "4", **record})


def test_function_returning_float_scores_items_in_order():
    results = run_external(spec("external_funcs.py:exact_match"),
                           [item("4"), item("5"), item(" 4 "), item("x")])
    assert [r.score for r in results] == [1.0, 0.0, 1.0, 0.0]
    assert all(r.error is None and r.seconds >= 0 for r in results)


def test_module_form_and_progress_callback():
    seen: list[tuple[int, int]] = []
    results = run_external(spec("external_funcs:exact_match"), [item("4"), item("3")],
                           progress=lambda done, total: seen.append((done, total)))
    assert [r.score for r in results] == [1.0, 0.0]
    assert sorted(seen) == [(1, 2), (2, 2)]


def test_dict_result_carries_feedback():
    [result] = run_external(spec("external_funcs.py:length_with_feedback"), [item("abc")])
    assert result.score == pytest.approx(0.25)
    assert result.feedback == "3 characters"


def test_raising_function_gives_on_error_and_traceback():
    [result] = run_external(spec("external_funcs.py:raises", on_error=-1.0), [item("oops")])
    assert result.score == -1.0
    assert result.error.splitlines()[0] == "raised ValueError: cannot score 'oops'"
    assert "external_funcs.py" in result.error and "in raises" in result.error


def test_hanging_item_is_killed_and_later_items_still_scored():
    items = [item("hang"), item("4"), item("5"), item("4")]
    start = time.monotonic()
    results = run_external(spec("external_funcs.py:hangs_on_request", timeout=1.0, workers=1),
                           items)
    elapsed = time.monotonic() - start
    assert elapsed < 6.0
    assert results[0].score == 0.0 and results[0].error.startswith("timed out after 1 s")
    assert [r.score for r in results[1:]] == [1.0, 0.0, 1.0]
    assert all(r.error is None for r in results[1:])


def test_worker_killed_by_os_exit_or_segfault_is_replaced():
    for name, expected in (("exits", "exited with status 3"), ("segfaults", "SIGSEGV")):
        results = run_external(spec(f"external_funcs.py:{name}", workers=1), [item("a"), item("b")])
        assert [r.score for r in results] == [0.0, 0.0]
        assert all("the worker process died" in r.error and expected in r.error
                   for r in results)
    [exit_result] = run_external(spec("external_funcs.py:exits"), [item("a")])
    assert "about to exit" in exit_result.error  # stderr tail is kept
    segfault = run_external(spec("external_funcs.py:segfaults"), [item("a")])[0]
    assert "Fatal Python error" in segfault.error  # faulthandler's report


@pytest.mark.parametrize("kind", ["none", "text", "nan", "inf", "dict"])
def test_garbage_return_values_are_errors(kind):
    [result] = run_external(spec("external_funcs.py:garbage", on_error=0.5), [item("4", kind=kind)])
    assert result.score == 0.5
    assert "returned" in result.error


def test_command_prints_score_json_on_last_line():
    results = run_external(spec(command="python external_funcs.py score"),
                           [item("abcd"), item("ab")])
    assert [r.score for r in results] == [pytest.approx(0.4), pytest.approx(0.2)]
    assert results[0].feedback == "counted"


def test_command_printing_a_plain_number():
    results = run_external(spec(command="python external_funcs.py number"), [item("4"), item("1")])
    assert [r.score for r in results] == [1.0, 0.0]


def test_command_exiting_nonzero_reports_stderr():
    [result] = run_external(spec(command="python external_funcs.py fail", on_error=-2.0),
                            [item("4")])
    assert result.score == -2.0
    assert "exited with status 2" in result.error and "no answer key" in result.error


def test_hanging_command_is_killed_promptly():
    start = time.monotonic()
    results = run_external(spec(command="python external_funcs.py hang", timeout=1.0, workers=2),
                           [item("4"), item("5")])
    assert time.monotonic() - start < 4.0
    assert all(r.score == 0.0 and r.error.startswith("timed out") for r in results)


@pytest.mark.parametrize("bad, message", [
    (dict(call="no_such_module_xyz:fn"), "No module named 'no_such_module_xyz'"),
    (dict(call="external_funcs.py:missing"), "has no function 'missing'"),
    (dict(call="nowhere.py:fn"), "not found"),
    (dict(call="just_a_name"), "expected 'package.module:function'"),
    (dict(command="definitely-not-a-program-xyz --flag"), "not found on PATH"),
    (dict(command="./missing_script.sh"), "is not an executable file"),
])
def test_bad_specs_raise_external_error_up_front(bad, message):
    bad_spec = spec(**bad)
    with pytest.raises(ExternalError) as info:
        run_external(bad_spec, [item("4")])
    assert message in str(info.value)
    assert bad_spec.describe() in str(info.value)
    with pytest.raises(ExternalError):
        check_external(bad_spec)


def test_spec_needs_exactly_one_source():
    with pytest.raises(ExternalError, match="exactly one"):
        ExternalSpec()
    with pytest.raises(ExternalError, match="exactly one"):
        ExternalSpec(call="a:b", command="c")


def test_parse_reward_accepts_numbers_and_rejects_the_rest():
    assert parse_reward(3) == (3.0, None)
    assert parse_reward({"score": 0.5, "feedback": "ok"}) == (0.5, "ok")
    for bad in (None, "abc", math.nan, {"feedback": "x"}, [1.0]):
        with pytest.raises(ValueError):
            parse_reward(bad)
