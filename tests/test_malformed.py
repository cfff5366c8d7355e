"""Malformed programs: each gets its specific message at the right line and column."""

from __future__ import annotations

import pytest

from aldsl.language.diagnostics import AlpError
from aldsl.language.parser import parse
from aldsl.language.check import check

HEADER = 'program t "test"\ndata d = jsonl("data.jsonl", input = "q", target = "a")\n'
GEN = 'generator g = model("smollm2-135m")\n'
PROMPT = "prompter p = prompt(template = cot)\n"
EVAL = "evaluator acc = exact_match()\n"
FLOW = "flow main = loop(d, generator = g, prompter = p, evaluator = acc)\n"
VALID = HEADER + GEN + PROMPT + EVAL + FLOW
OPT = "optimize o = optuna(objective = acc, on = d.dev)\n"


def variant(old: str, new: str, base: str = VALID) -> str:
    assert old in base, old
    return base.replace(old, new, 1)


# (id, source, expected message fragment, the text the caret must point at (first occurrence) or None)
CASES = [
    ("no-header", "data d = jsonl(\"x\")\n", "a program starts with `program NAME`", "data"),
    ("empty", "", "empty program", None),
    ("kind-typo", variant(GEN, 'generater g = model("x")\n'), "unknown declaration kind 'generater'", "generater"),
    ("kind-unknown", variant(GEN, 'model g = model("x")\n'), "unknown declaration kind 'model'", "model g"),
    ("ctor-typo", variant(GEN, 'generator g = modle("x")\n'), "unknown generator constructor 'modle'", "modle"),
    ("param-typo", variant(GEN, 'generator g = model("x", temprature = 0.5)\n'),
     "model() has no parameter 'temprature'", "temprature"),
    ("duplicate-name", variant(PROMPT, PROMPT + 'prompter p = prompt(template = direct)\n'),
     "'p' is already declared", "p = prompt(template = direct)"),
    ("unknown-ref", variant("prompter = p", "prompter = q", ), "unknown prompter 'q'", "q,"),
    ("wrong-kind-ref", variant("prompter = p", "prompter = g"), "'g' is a generator, expected a prompter", "g, eval"),
    ("samples-zero", variant("evaluator = acc)", "evaluator = acc, samples = 0)"), "'samples' must be at least 1",
     "0)"),
    ("temperature-negative", variant(GEN, 'generator g = model("x", temperature = -1)\n'),
     "'temperature' must be at least 0", "-1"),
    ("top-p-zero", variant(GEN, 'generator g = model("x", top_p = 0)\n'), "'top_p' must be above 0", "0)"),
    ("range-inverted", variant(GEN, 'generator g = model("x", temperature = 0.5 in [1.2, 0.1])\n'),
     "empty range: low 1.2 must be below high 0.1", "[1.2"),
    ("default-outside", variant(GEN, 'generator g = model("x", temperature = 2.0 in [0.1, 1.2])\n'),
     "default 2.0 is outside the range", "2.0"),
    ("log-range-zero", variant(GEN, 'generator g = model("x", temperature = 0.5 in log[0, 1])\n'),
     "a log range needs a low bound above 0", "0, 1]"),
    ("choice-default-missing", variant(PROMPT, "prompter p = prompt(template = cot in {direct, zero_shot})\n"),
     "default cot is not one of the choices", "cot in"),
    ("choice-duplicate", variant(PROMPT, "prompter p = prompt(template = cot in {cot, cot})\n"),
     "the choice set repeats cot", "{cot, cot}"),
    ("search-not-allowed", variant(GEN, 'generator g = model("x", stop = ["a"] in {["a"], ["b"]})\n'),
     "'stop' of model() cannot be searched", '["a"] in'),
    ("missing-required", variant(FLOW, "flow main = loop(d, generator = g, prompter = p)\n"),
     "loop() needs 'evaluator'", "loop("),
    ("missing-file", variant('"data.jsonl"', '"nope.jsonl"'), "file not found: nope.jsonl", '"nope.jsonl"'),
    ("fractions-sum", variant('target = "a")', 'target = "a", split = {train: 0.5, test: 0.2})'),
     "split fractions sum to 0.7, not 1", "{train: 0.5"),
    ("fraction-zero", variant('target = "a")', 'target = "a", split = {train: 1.0, test: 0})'),
     "the fraction of split 'test' must be a number in (0, 1]", "0})"),
    ("demos-from-test", variant(PROMPT, "prompter p = prompt(template = cot, demos = demos(d.test, k = 2))\n"),
     "uses the held-out split d.test", "demos(d.test"),
    ("optimize-on-test", VALID + "optimize o = optuna(objective = acc, on = d.test)\n",
     "uses the held-out split d.test", "d.test)"),
    ("objective-not-in-flow", VALID + "evaluator em = exact_match()\noptimize o = optuna(objective = em, on = d.dev)\n",
     "the objective 'em' is not an evaluator of the flow", "em, on"),
    ("argmax-without-reward", variant("evaluator = acc)", "evaluator = acc, select = argmax)"),
     "select = argmax needs a reward", "argmax)"),
    ("rounds-without-followup", variant(PROMPT, "prompter p = prompt(template = cot, followup = none)\n",
                                        variant("evaluator = acc)", "evaluator = acc, rounds = 3)")),
     "rounds > 1 needs a followup in the prompter", "3)"),
    ("unterminated-string", variant(GEN, 'generator g = model("smollm2\n'), "unterminated string", '"smollm2'),
    ("unknown-escape", variant(GEN, 'generator g = model("a\\qb")\n'), "unknown escape '\\q'", "\\q"),
    ("missing-comma", variant(GEN, 'generator g = model("x" temperature = 1)\n'), "unexpected 'temperature'",
     "temperature"),
    ("missing-equals", variant(GEN, 'generator g model("x")\n'), "unexpected 'model'", 'model("x")'),
    ("unclosed-paren", HEADER + 'generator g = model("x", temperature = 1\n', "the file ends too early", None),
    ("float-for-int", variant("evaluator = acc)", "evaluator = acc, samples = 2.5)"),
     "'samples' must be an integer, not 2.5", "2.5"),
    ("string-for-number", variant(GEN, 'generator g = model("x", temperature = "hot")\n'),
     "expected a number for 'temperature'", '"hot"'),
    ("bad-enum", variant("evaluator = acc)", "evaluator = acc, select = majorty)"),
     "'majorty' is not a valid select", "majorty"),
    ("positional-after-keyword", variant(GEN, 'generator g = model(temperature = 1, "x")\n'),
     "a positional argument cannot follow keyword arguments", '"x")'),
    ("too-many-positional", variant(GEN, 'generator g = model("x", "y")\n'),
     "model() takes 1 positional argument(s)", '"y"'),
    ("two-flows", VALID + "flow other = loop(d, generator = g, prompter = p, evaluator = acc)\n",
     "a program has exactly one flow", "flow other"),
    ("two-optimize", VALID + OPT + OPT.replace("optimize o", "optimize o2"),
     "a program has at most one optimize declaration", "optimize o2"),
    ("no-flow", HEADER + GEN + PROMPT + EVAL, "the program has no flow", None),
    ("per-query-not-binary", variant(PROMPT, "reward c = critic()\nprompter p = prompt(template = per_query(c))\n"),
     "per_query needs a binary reward model, 'c' is critic", "per_query(c)"),
    ("iterative-untrainable", VALID + "reward crit = critic()\nfinetune it = iterative(d.train, reward = crit)\n",
     "'crit' (critic) is not trainable", "crit)"),
    ("external-both", VALID + 'reward r = external(call = "m:f", command = "x")\n',
     "external() needs exactly one of call", "reward r"),
    ("external-neither", VALID + "reward r = external()\n", "external() needs exactly one of call", "reward r"),
    ("unknown-split", variant(PROMPT, "prompter p = prompt(template = cot, demos = demos(d.validation))\n"),
     "data 'd' has no split 'validation'", "demos(d.validation"),
    ("range-on-choice-param", variant(PROMPT, "prompter p = prompt(template = cot in [1, 2])\n"),
     "a range [lo, hi] needs a number", "[1, 2]"),
    ("nested-search", variant(GEN, 'generator g = model("x", stop = ["a" in {"a", "b"}])\n'),
     "expected a list of strings for 'stop'", '["a" in'),
    ("search-without-default", variant(GEN, 'generator g = model("x", temperature = in [0.1, 1])\n'),
     "a search needs a default value before 'in'", "[0.1"),
    ("binary-one-template", VALID + "reward b = binary(d.train, among = [cot])\n",
     "among needs at least two templates", "[cot]"),
    ("infinite-number", variant(GEN, 'generator g = model("x", temperature = 1e400)\n'),
     "'temperature' must be finite", "1e400"),
    ("nul-byte", VALID + "\x00", "the file contains a NUL byte", None),
    ("unknown-evaluator-in-list", variant("evaluator = acc)", "evaluator = [acc, nope])"),
     "unknown evaluator 'nope'", "nope"),
    ("demos-k-negative", variant(PROMPT, "prompter p = prompt(template = cot, demos = demos(d.train, k = -1))\n"),
     "'k' must be at least 0", "-1))"),
    ("empty-choice-set", variant(PROMPT, "prompter p = prompt(template = cot in {})\n"), "unexpected '}'", "})"),
    ("keyword-given-twice", variant(GEN, 'generator g = model("x", seed = 1, seed = 2)\n'), "'seed' is given twice",
     "seed = 2"),
    ("bool-for-number", variant(GEN, 'generator g = model("x", max_tokens = true)\n'),
     "expected an integer for 'max_tokens'", "true"),
    ("int-range-bad-bound", variant("evaluator = acc)", "evaluator = acc, samples = 2 in [1, 8.5])"),
     "'samples' must be an integer, not 8.5", "8.5"),
    ("unknown-model", variant(GEN, 'generator g = model("gpt-9")\n'), "generator 'g': Unknown model 'gpt-9'",
     '"gpt-9"'),
    ("report-other-data", HEADER + 'data e = jsonl("data.jsonl", input = "q", target = "a")\n' + GEN + PROMPT + EVAL
     + FLOW + "optimize o = optuna(objective = acc, on = e.dev)\n",
     "'on' must be a split of the flow's data 'd'", "e.dev"),
]


@pytest.fixture
def program_dir(tmp_path, monkeypatch):
    (tmp_path / "data.jsonl").write_text('{"q": "1 + 1", "a": "2"}\n')
    return tmp_path


def _locate(source: str, at: str) -> tuple[int, int]:
    i = source.index(at)
    line = source[:i].count("\n") + 1
    col = i - (source.rfind("\n", 0, i) + 1) + 1
    return line, col


def test_valid_base_program_checks(program_dir):
    check(parse(VALID, str(program_dir / "t.alp")))


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name,source,message,at", CASES, ids=[c[0] for c in CASES])
def test_malformed(program_dir, name, source, message, at):
    path = str(program_dir / "t.alp")
    with pytest.raises(AlpError) as info:
        check(parse(source, path))
    err = info.value
    messages = [d.message for d in err.diagnostics]
    match = next((d for d in err.diagnostics if message in d.message), None)
    assert match is not None, f"{message!r} not in {messages}"
    rendered = err.render()
    assert rendered.startswith(path + ":") and "Traceback" not in rendered
    if at is not None:
        assert match.pos is not None
        assert (match.pos.line, match.pos.col) == _locate(source, at), rendered
        assert "^" in rendered


def test_all_errors_are_reported_at_once(program_dir):
    source = variant(GEN, 'generator g = model("x", temperature = -1, top_p = 0)\n')
    with pytest.raises(AlpError) as info:
        check(parse(source, str(program_dir / "t.alp")))
    assert len(info.value.diagnostics) == 2


def test_rendering_shows_line_caret_and_hint(program_dir):
    source = variant(GEN, 'generator g = model("x", temprature = 0.5)\n')
    with pytest.raises(AlpError) as info:
        check(parse(source, str(program_dir / "t.alp")))
    text = info.value.render()
    assert "t.alp:3:26: error: model() has no parameter 'temprature'" in text
    assert '   3 | generator g = model("x", temprature = 0.5)' in text
    assert "^^^^^^^^^^" in text
    assert "hint: did you mean 'temperature'?" in text
