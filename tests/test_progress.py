"""Progress reporting: live bars on a terminal, one line per start, step and end in a log."""

from __future__ import annotations

import io

from rich.console import Console

from aldsl.progress import Reporter


def test_a_log_gets_a_line_per_start_step_and_end():
    out = io.StringIO()
    reporter = Reporter(console=Console(file=out, force_terminal=False, width=200))
    with reporter.task("search: 3 trials", total=3) as advance:
        advance(0, tokens=500)
        advance(1, best="0.250")
        advance(2, best="0.500")
    lines = out.getvalue().splitlines()
    assert lines[0] == "search: 3 trials ..."
    assert lines[1].startswith("search: 3 trials: 1/3") and "best 0.250" in lines[1]
    assert lines[2].startswith("search: 3 trials: 3/3") and "best 0.500" in lines[2]
    assert lines[3].startswith("search: 3 trials: 3/3 done in") and len(lines) == 4


def test_long_counts_log_only_start_and_end():
    out = io.StringIO()
    reporter = Reporter(console=Console(file=out, force_terminal=False, width=200))
    with reporter.task("features: 500 texts", total=500) as advance:
        for _ in range(5):
            advance(100)
    assert [line.split(":")[0] for line in out.getvalue().splitlines()] == ["features", "features"]


def test_a_disabled_reporter_prints_nothing():
    out = io.StringIO()
    reporter = Reporter(enabled=False, console=Console(file=out))
    with reporter.task("x", total=2) as advance:
        advance(2)
    reporter.log("hello")
    assert out.getvalue() == ""


def test_a_log_gets_timed_lines_with_tokens_and_eta(monkeypatch):
    import aldsl.progress as progress

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    out = io.StringIO()
    reporter = Reporter(console=Console(file=out, force_terminal=False, width=200))
    with reporter.task("generate_1: 400 prompts x 1", total=400, budget=4000) as advance:
        advance(0, tokens=1000)  # a decoding step: no prompt finished yet, a quarter of the token budget
    step = out.getvalue().splitlines()[1]
    assert step.startswith("generate_1: 400 prompts x 1: 0/400  1000 tok,") and "tok/s" in step and "ETA " in step


def test_generation_reports_every_decoding_step(tiny_model_dir):
    from aldsl.backends import Decoding, GenRequest, ModelSpec, load_backend

    backend = load_backend(ModelSpec(name=str(tiny_model_dir)))
    calls: list[tuple[int, int]] = []
    outputs = backend.generate([GenRequest("a b c", (0, 1)), GenRequest("d e", (0,))],
                               Decoding(temperature=1.0, max_tokens=6, seed=3), progress=lambda n, t: calls.append((n, t)))
    steps = [t for n, t in calls if n == 0]
    assert len(steps) >= max(c.tokens for row in outputs for c in row)  # one call per step, not per batch
    assert sum(t for _, t in calls) == sum(c.tokens for row in outputs for c in row)
    assert sum(n for n, _ in calls) == 2


def test_a_task_that_knows_its_eta_shows_it_instead_of_the_computed_one():
    out = io.StringIO()
    reporter = Reporter(console=Console(file=out, force_terminal=False, width=200))
    with reporter.task("search: 30 trials", total=30) as advance:
        advance(1, tokens=100, eta="2.0 min (the budget's end)")
    step = out.getvalue().splitlines()[1]
    assert "eta 2.0 min (the budget's end)" in step and "ETA " not in step
