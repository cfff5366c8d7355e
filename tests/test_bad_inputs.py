"""A table of bad inputs at the command line: every one exits 2 with a message that names the
place (file:line:col, the field or the path) and says what to do; never a traceback, never
"internal error"."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from aldsl.cli import main

ROOT = Path(__file__).resolve().parent.parent
DATA = 'data d = jsonl("data.jsonl", input = "question", target = "answer")\n'
GEN = 'generator g = model("TINY", max_tokens = 4)\n'
PROMPT = "prompter p = prompt(template = cot)\n"
EVAL = "evaluator acc = exact_match()\n"
FLOW = "flow main = loop(d, generator = g, prompter = p, evaluator = acc)\n"
OPT = "optimize o = optuna(objective = acc, on = d.dev, trials = 2, queries = 2, report_queries = 2)\n"
VALID = 'program t "bad inputs"\n' + DATA + GEN + PROMPT + EVAL + FLOW


def swap(old: str, new: str, base: str = VALID) -> str:
    assert old in base, old
    return base.replace(old, new, 1)


def add(text: str, base: str = VALID) -> str:
    return base + text


FLOW_WITH = "flow main = loop(d, generator = g, prompter = p, evaluator = acc, {})\n"
# (id, program source (None: the valid one), CLI args after the command's file, expected fragment)
PROGRAMS: list[tuple[str, str, str]] = [
    # the ten that used to end in "internal error", and aldsl check's new checks
    ("data-is-folder", swap('"data.jsonl"', '"afolder"'), "is a folder, jsonl() reads one file"),
    ("fake-gguf", swap('"TINY"', '"fake.gguf"'), "is not a GGUF file"),
    ("gguf-folder", swap('"TINY"', '"afolder.gguf"'), "is a folder, not a file"),
    ("answer-regex", swap(FLOW, FLOW_WITH.format('answer = regex("[")')), "invalid regular expression '['"),
    ("answer-choice-empty", swap(FLOW, FLOW_WITH.format("answer = choice([])")), "choice([]) has no options"),
    ("device-tpu", swap("max_tokens = 4)", 'max_tokens = 4, device = "tpu:99")'), "device 'tpu:99'"),
    ("device-cuda-x", swap("max_tokens = 4)", 'max_tokens = 4, device = "cuda:x")'), "device 'cuda:x'"),
    ("stop-empty", swap("max_tokens = 4)", 'max_tokens = 4, stop = ["\\n", ""])'), "empty stop string"),
    ("slot-undefined", swap(PROMPT, 'template tt = text("Q: {x} {questoin}")\nprompter p = prompt(template = tt)\n'),
     "the slot {questoin}"),
    ("slot-in-demo", swap(PROMPT, 'template tt = text("{x}", demo = "{nope}")\nprompter p = prompt(template = tt)\n'),
     "the slot {nope}"),
    ("evaluator-regex", swap(EVAL, 'evaluator acc = regex("(")\n'), "invalid regular expression '('"),
    ("evaluator-regex-repeat", swap(EVAL, 'evaluator acc = regex("*a")\n'), "nothing to repeat"),
    ("external-no-module", swap(EVAL, 'evaluator acc = external(call = "no_such_module_x:f")\n'),
     "no module named 'no_such_module_x'"),
    ("external-no-function", swap(EVAL, 'evaluator acc = external(call = "json:no_such_fn")\n'),
     "defines no 'no_such_fn'"),
    ("external-file-no-function", swap(EVAL, 'evaluator acc = external(call = "score.py:missing")\n'),
     "defines no 'missing'"),
    ("external-no-file", swap(EVAL, 'evaluator acc = external(call = "nothere.py:f")\n'), "not found"),
    ("external-bad-call", swap(EVAL, 'evaluator acc = external(call = "justaname")\n'), "expected 'package.module:function'"),
    ("external-not-executable", swap(EVAL, 'evaluator acc = external(command = "./plain.txt")\n'),
     "is not an executable file"),
    ("external-no-program", swap(EVAL, 'evaluator acc = external(command = "no-such-program-x --go")\n'),
     "not found on PATH"),
    ("external-both", swap(EVAL, 'evaluator acc = external(call = "json:dumps", command = "true")\n'),
     "exactly one of call"),
    ("external-neither", swap(EVAL, "evaluator acc = external()\n"), "exactly one of call"),
    ("external-reward-no-module", add('reward r = external(call = "nope_mod_y:f")\n',
                                      swap(FLOW, FLOW_WITH.format("reward = r"))), "no module named 'nope_mod_y'"),
    ("external-empty-command", swap(EVAL, 'evaluator acc = external(command = "")\n'), "the command is empty"),
    ("external-unbalanced-quote", swap(EVAL, 'evaluator acc = external(command = "echo \\"hi")\n'),
     "cannot split the command line"),
    # syntax
    ("no-header", DATA + GEN, "a program starts with `program NAME`"),
    ("empty", "", "empty program"),
    ("only-comment", "# nothing\n", "expected 'program'"),
    ("nul-byte", 'program t "x"\n\x00\n', "NUL byte"),
    ("unclosed-paren", swap(FLOW, "flow main = loop(d, generator = g\n"), "error"),
    ("unclosed-string", swap(GEN, 'generator g = model("TINY)\n'), "error"),
    ("stray-token", add("@@@\n"), "error"),
    ("missing-equals", swap(GEN, 'generator g model("TINY")\n'), "error"),
    ("double-comma", swap("max_tokens = 4)", "max_tokens = 4,,)"), "error"),
    ("header-no-name", "program\n" + DATA, "error"),
    # names and kinds
    ("kind-typo", swap(GEN, 'generater g = model("TINY")\n'), "unknown declaration kind 'generater'"),
    ("ctor-typo", swap(GEN, 'generator g = modle("TINY")\n'), "unknown generator constructor 'modle'"),
    ("param-typo", swap("max_tokens = 4)", "max_tokens = 4, temprature = 0.5)"), "no parameter 'temprature'"),
    ("duplicate-name", add('prompter p = prompt(template = direct)\n'), "'p' is already declared"),
    ("unknown-ref", swap("prompter = p,", "prompter = q,"), "unknown prompter 'q'"),
    ("wrong-kind-ref", swap("prompter = p,", "prompter = g,"), "'g' is a generator, expected a prompter"),
    ("unknown-template", swap(PROMPT, "prompter p = prompt(template = cott)\n"), "unknown template 'cott'"),
    ("no-flow", swap(FLOW, ""), "the program has no flow"),
    ("two-flows", add(FLOW.replace("main", "other")), "exactly one flow"),
    ("two-optimizers", add(OPT + OPT.replace("optimize o", "optimize o2")), "at most one optimize"),
    ("param-twice", swap("max_tokens = 4)", "max_tokens = 4, max_tokens = 5)"), "'max_tokens' is given twice"),
    ("positional-after-keyword", swap('model("TINY", max_tokens = 4)', 'model(max_tokens = 4, "TINY")'),
     "positional argument cannot follow"),
    ("too-many-positional", swap('model("TINY", max_tokens = 4)', 'model("TINY", "again")'),
     "positional argument"),
    ("missing-required", swap(FLOW, "flow main = loop(d, generator = g, prompter = p)\n"), "needs 'evaluator'"),
    # values
    ("samples-zero", swap(FLOW, FLOW_WITH.format("samples = 0")), "'samples' must be at least 1"),
    ("rounds-huge", swap(FLOW, FLOW_WITH.format("rounds = 100000000")), "'rounds' must be at most"),
    ("temperature-negative", swap("max_tokens = 4)", "max_tokens = 4, temperature = -1)"), "at least 0"),
    ("temperature-string", swap("max_tokens = 4)", 'max_tokens = 4, temperature = "hot")'), "temperature"),
    ("top-p-zero", swap("max_tokens = 4)", "max_tokens = 4, top_p = 0)"), "'top_p' must be above 0"),
    ("max-tokens-float", swap("max_tokens = 4)", "max_tokens = 4.5)"), "must be an integer"),
    ("max-tokens-zero", swap("max_tokens = 4)", "max_tokens = 0)"), "at least 1"),
    ("infinite-number", swap("max_tokens = 4)", "max_tokens = 4, temperature = 1e999)"), "finite"),
    ("huge-number", swap("max_tokens = 4)", "max_tokens = 99999999999999999999)"), "too large"),
    ("bool-as-number", swap("max_tokens = 4)", "max_tokens = true)"), "max_tokens"),
    ("stop-not-list", swap("max_tokens = 4)", 'max_tokens = 4, stop = "x")'), "list of strings"),
    ("enum-typo", swap(FLOW, FLOW_WITH.format("select = argmx")), "'argmx' is not a valid select"),
    ("backend-typo", swap("max_tokens = 4)", "max_tokens = 4, backend = vlm)"), "not a valid backend"),
    ("dtype-typo", swap("max_tokens = 4)", "max_tokens = 4, dtype = float8)"), "not a valid dtype"),
    ("answer-kind-typo", swap(FLOW, FLOW_WITH.format("answer = numbr")), "answer"),
    ("range-inverted", swap("max_tokens = 4)", "max_tokens = 4, temperature = 0.5 in [1.2, 0.1])"), "empty range"),
    ("default-outside", swap("max_tokens = 4)", "max_tokens = 4, temperature = 2.0 in [0.1, 1.2])"),
     "outside the range"),
    ("log-range-zero", swap("max_tokens = 4)", "max_tokens = 4, temperature = 0.5 in log[0, 1])"),
     "log range needs a low bound above 0"),
    ("choice-default-missing", swap(PROMPT, "prompter p = prompt(template = cot in {direct, zero_shot})\n"),
     "default cot is not one of the choices"),
    ("choice-duplicate", swap(PROMPT, "prompter p = prompt(template = cot in {cot, cot})\n"), "repeats cot"),
    ("search-not-allowed", swap("max_tokens = 4)", 'max_tokens = 4, stop = ["a"] in {["a"], ["b"]})'),
     "cannot be searched"),
    ("range-of-strings", swap(PROMPT, "prompter p = prompt(template = cot in [1, 2])\n"), "range"),
    ("nested-search", swap(PROMPT, "prompter p = prompt(demos = demos(d.train, k = 1 in [0, 2] in [0, 3]))\n"),
     "error"),
    ("demos-k-negative", swap(PROMPT, "prompter p = prompt(demos = demos(d.train, k = -1))\n"), "'k' must be"),
    ("demos-unknown-split", swap(PROMPT, "prompter p = prompt(demos = demos(d.trian))\n"), "has no split 'trian'"),
    ("demos-held-out", swap(PROMPT, "prompter p = prompt(demos = demos(d.test))\n"), "held-out split"),
    ("demos-not-split", swap(PROMPT, "prompter p = prompt(demos = demos(d))\n"), "expected a split"),
    # data
    ("missing-file", swap('"data.jsonl"', '"nope.jsonl"'), "file not found: nope.jsonl"),
    ("fractions-sum", swap('target = "answer")', 'target = "answer", split = {train: 0.5, test: 0.2})'),
     "split fractions sum to 0.7"),
    ("fraction-zero", swap('target = "answer")', 'target = "answer", split = {train: 1.0, test: 0})'),
     "must be a number in (0, 1]"),
    ("hf-disk-on-file", swap('jsonl("data.jsonl"', 'hf_disk("data.jsonl"'), "is a file, hf_disk() reads the folder"),
    ("csv-folder", swap('jsonl("data.jsonl"', 'csv("afolder"'), "is a folder, csv() reads one file"),
    # whole-program rules
    ("argmax-without-reward", swap(FLOW, FLOW_WITH.format("select = argmax")), "needs a reward"),
    ("rounds-without-followup", swap(PROMPT, "prompter p = prompt(template = cot, followup = none)\n",
                                     swap(FLOW, FLOW_WITH.format("rounds = 2"))), "needs a followup"),
    ("objective-not-evaluator", add(OPT.replace("objective = acc", "objective = other")
                                    + "evaluator other = contains()\n"), "is not an evaluator of the flow"),
    ("optimize-on-test", add(OPT.replace("d.dev", "d.test")), "held-out split"),
    ("model-unknown", swap('"TINY"', '"no-such-model-zz"'), "Unknown model 'no-such-model-zz'"),
    ("model-folder-no-config", swap('"TINY"', '"afolder"'), "has no config.json"),
]

CLI: list[tuple[str, list[str], str]] = [
    ("check-missing-file", ["check", "nope.alp"], "no such file"),
    ("check-folder", ["check", "afolder"], "is a folder"),
    ("check-not-utf8", ["check", "latin1.alp"], "not UTF-8 text"),
    ("compile-out-unwritable", ["compile", "prog.alp", "--out", "/proc/no/such"], "cannot write into the --out folder"),
    ("compile-out-is-file", ["compile", "prog.alp", "--out", "plain.txt"], "is a file, not a folder"),
    ("compile-set-no-equals", ["compile", "prog.alp", "--set", "main.samples"], "write --set NAME=VALUE"),
    ("compile-set-unknown", ["compile", "prog.alp", "--set", "zzz=1"], "--set zzz: no declaration 'zzz'"),
    ("compile-set-typo", ["compile", "prog.alp", "--set", "g.temprature=1"], "did you mean 'temperature'?"),
    ("compile-set-bad-value", ["compile", "prog.alp", "--set", "g.max_tokens=0"], "'max_tokens' must be at least 1"),
    ("doc-unknown-kind", ["doc", "nosuchkind"], "unknown declaration kind 'nosuchkind'"),
    ("graph-missing-json", ["graph", "missing.graph.json"], "no such graph file"),
    ("optimize-out-unwritable", ["optimize", "opt.alp", "--out", "/proc/no/such", "--quiet"], "cannot write into"),
    ("optimize-out-is-file", ["optimize", "opt.alp", "--out", "plain.txt", "--quiet"], "is a file, not a folder"),
    ("run-unknown-split", ["run", "prog.alp", "--split", "nosuch", "--quiet"], "nosuch"),
    ("run-fake-gguf", ["run", "gguf.alp", "--limit", "1", "--quiet"], "is not a GGUF file"),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tiny_model_dir) -> Path:
    root = tmp_path_factory.mktemp("bad-inputs")
    shutil.copy(ROOT / "programs" / "data" / "arith.jsonl", root / "data.jsonl")
    (root / "afolder").mkdir()
    (root / "afolder.gguf").mkdir()
    (root / "fake.gguf").write_text("not a model\n")
    (root / "plain.txt").write_text("just text\n")
    (root / "score.py").write_text("def score(x, candidate, record):\n    return 1.0\n")
    (root / "latin1.alp").write_bytes('program t "caf\xe9"\n'.encode("latin-1"))
    valid = VALID.replace("TINY", str(tiny_model_dir))
    (root / "prog.alp").write_text(valid)
    (root / "opt.alp").write_text(valid.replace("model(", "model(").replace(
        "max_tokens = 4)", "max_tokens = 4, temperature = 0.0 in {0.0, 0.5})") + OPT)
    (root / "gguf.alp").write_text(valid.replace(str(tiny_model_dir), str(root / "fake.gguf")))
    return root


def run_cli(capsys, *args: str) -> tuple[int, str]:
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out + out.err


def assert_user_error(rc: int, out: str, expected: str) -> None:
    assert rc == 2, out
    assert "Traceback" not in out and "internal error" not in out, out
    assert expected in out, out


def test_the_table_has_at_least_one_hundred_bad_inputs():
    assert len(PROGRAMS) + len(CLI) + len(READ_ONLY) >= 100


@pytest.mark.parametrize("name, source, expected", PROGRAMS, ids=[c[0] for c in PROGRAMS])
def test_bad_program_exits_2_at_check(capsys, monkeypatch, folder, tiny_model_dir, name, source, expected):
    monkeypatch.chdir(folder)
    path = folder / f"{name}.alp"
    path.write_text(source.replace("TINY", str(tiny_model_dir)), encoding="utf-8")
    rc, out = run_cli(capsys, "check", str(path))
    assert_user_error(rc, out, expected)
    assert str(path) in out  # the file, and (for program errors) its line and column


@pytest.mark.parametrize("name, args, expected", CLI, ids=[c[0] for c in CLI])
def test_bad_command_line_exits_2(capsys, monkeypatch, folder, name, args, expected):
    monkeypatch.chdir(folder)
    rc, out = run_cli(capsys, *args)
    assert_user_error(rc, out, expected)


def _immutable(path: Path, on: bool) -> bool:
    """chattr +i: read-only even for root (where the file system supports it)."""
    if shutil.which("chattr") is None or os.geteuid() != 0:
        path.chmod(0o555 if on else 0o755)
        return True
    return subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True).returncode == 0


READ_ONLY = [
    ("optimize-read-only-fresh", ["optimize", "opt.alp", "--out", "ro", "--quiet"], "cannot write into"),
    ("optimize-read-only-existing-study", ["optimize", "opt.alp", "--out", "ro", "--quiet"], "cannot write"),
    ("compile-read-only", ["compile", "prog.alp", "--out", "ro"], "cannot write into the --out folder"),
]


@pytest.mark.parametrize("name, args, expected", READ_ONLY, ids=[c[0] for c in READ_ONLY])
def test_read_only_output_folders_exit_2(capsys, monkeypatch, folder, name, args, expected):
    monkeypatch.chdir(folder)
    ro = folder / "ro"
    shutil.rmtree(ro, ignore_errors=True)
    ro.mkdir()
    locked = [ro]
    if name.endswith("existing-study"):
        rc, out = run_cli(capsys, "optimize", "opt.alp", "--out", "ro", "--quiet")
        assert rc == 0, out
        locked = [ro / "t" / "study.db", ro / "t", ro]
        before = (ro / "t" / "study.db").read_bytes()
    if not all(_immutable(p, True) for p in locked):
        pytest.skip("cannot make a folder read-only here")
    try:
        rc, out = run_cli(capsys, *args)
    finally:
        for p in locked:
            _immutable(p, False)
    assert_user_error(rc, out, expected)
    assert "ro" in out
    if name.endswith("existing-study"):
        assert (ro / "t" / "study.db").read_bytes() == before  # no lost work


def test_a_bom_is_accepted(capsys, folder):
    path = folder / "bom.alp"
    path.write_bytes(b"\xef\xbb\xbf" + (folder / "prog.alp").read_bytes())
    rc, out = run_cli(capsys, "check", str(path))
    assert rc == 0, out


def test_failed_external_calls_are_counted_after_a_run(capsys, folder, tiny_model_dir):
    (folder / "failing.py").write_text("def f(x, candidate, record):\n    raise ValueError('boom')\n")
    program = VALID.replace("TINY", str(tiny_model_dir)).replace(
        EVAL, 'evaluator acc = external(call = "failing.py:f")\n')
    (folder / "ext.alp").write_text(program)
    rc, out = run_cli(capsys, "run", str(folder / "ext.alp"), "--limit", "2", "--quiet")
    assert rc == 0
    assert "2 of 2 external reward/evaluator calls failed" in out and "ValueError: boom" in out


def test_crash_reports_go_to_a_private_file_in_the_cache(capsys, monkeypatch, isolated_cache):
    import aldsl.cli as cli

    def explode(args):
        raise RuntimeError("simulated bug")

    monkeypatch.setitem(cli.COMMANDS, "doc", explode)
    victim = isolated_cache / "crashes" / "crash-evil.log"
    rc, out = run_cli(capsys, "doc")
    assert rc == 1 and "internal error: RuntimeError: simulated bug" in out
    path = Path(out.split("the traceback is in ")[1].split(". Please")[0])
    assert path.parent == isolated_cache / "crashes" and path.stat().st_mode & 0o777 == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700 and "simulated bug" in path.read_text()
    # a planted symlink folder is not followed
    target = isolated_cache / "elsewhere"
    target.mkdir()
    shutil.rmtree(path.parent)
    path.parent.symlink_to(target)
    rc, out = run_cli(capsys, "doc")
    assert rc == 1 and not list(target.iterdir()) and not victim.exists()


def test_load_graph_of_garbage_exits_2(capsys, folder):
    (folder / "bad.graph.json").write_text(json.dumps({"nodes": 3}))
    rc, out = run_cli(capsys, "graph", str(folder / "bad.graph.json"))
    assert_user_error(rc, out, "bad.graph.json")
