"""The command line: check, compile, graph, doc; errors exit 2 with no traceback (fuzzed)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aldsl.cli import main

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "programs" / "quickstart.alp"


def run_cli(capsys, *args: str) -> tuple[int, str]:
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_check_ok(capsys):
    rc, out = run_cli(capsys, "check", str(QUICKSTART))
    assert rc == 0 and "ok" in out and "quickstart" in out


def test_compile_writes_graph_dot_png(capsys, tmp_path):
    rc, out = run_cli(capsys, "compile", str(QUICKSTART), "--out", str(tmp_path), "--png",
                      "--set", "main.samples=4")
    assert rc == 0, out
    graph = json.loads((tmp_path / "quickstart.graph.json").read_text())
    assert graph["graph"]["values"]["main.samples"] == 4
    assert (tmp_path / "quickstart.dot").read_text().startswith("digraph")
    assert (tmp_path / "quickstart.png").stat().st_size > 1000


def test_graph_prints_nodes_and_search_space(capsys, tmp_path):
    rc, out = run_cli(capsys, "graph", str(QUICKSTART))
    assert rc == 0
    for word in ("generate_1", "auto_orm", "space = auto proposed", "p.template", "main.samples", "search space"):
        assert word in out
    run_cli(capsys, "compile", str(QUICKSTART), "--out", str(tmp_path))
    rc, out = run_cli(capsys, "graph", str(tmp_path / "quickstart.graph.json"))
    assert rc == 0 and "generate_1" in out


def test_doc_lists_constructors(capsys):
    rc, out = run_cli(capsys, "doc", "reward")
    assert rc == 0
    for ctor in ("bradley_terry", "discriminator", "outcome", "process", "binary", "critic", "external"):
        assert f"`{ctor}(...)`" in out


@pytest.mark.parametrize("args,message", [
    (["check", "nope.alp"], "no such file"),
    (["check", "programs"], "is a folder"),
    (["compile", "programs/quickstart.alp", "--set", "main.samples"], "write --set NAME=VALUE"),
    (["compile", "programs/quickstart.alp", "--set", "main.samples=99"], "outside [1, 4]"),
    (["compile", "programs/quickstart.alp", "--set", "zzz=1"], "--set zzz: no declaration 'zzz'"),
    (["compile", "programs/quickstart.alp", "--set", "g.temprature=1"], "did you mean 'temperature'?"),
    (["compile", "programs/quickstart.alp", "--set", "g.max_tokens=0"], "'max_tokens' must be at least 1"),
])
def test_user_errors_exit_2(capsys, monkeypatch, args, message):
    monkeypatch.chdir(ROOT)
    rc, out = run_cli(capsys, *args)
    assert rc == 2 and message in out and "Traceback" not in out


def test_bad_program_prints_location_and_exits_2(capsys, tmp_path):
    bad = tmp_path / "bad.alp"
    bad.write_text('program b\ngenerator g = model("x", temprature = 1)\n')
    rc, out = run_cli(capsys, "check", str(bad))
    assert rc == 2
    assert f"{bad}:2:26: error: model() has no parameter 'temprature'" in out
    assert "did you mean 'temperature'?" in out


def test_console_script_entry_point(tmp_path):
    bad = tmp_path / "bad.alp"
    bad.write_text("program b\nflow f = loop(\n")
    proc = subprocess.run([sys.executable, "-m", "aldsl.cli", "check", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "the file ends too early" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


# ---- property-based: mutants of every shipped program never crash the CLI
SHIPPED = sorted((ROOT / "programs").glob("*.alp"))
TOKENS = {p.name: re.findall(r'"""(?:.|\n)*?"""|"(?:[^"\\\n]|\\.)*"|\w+|\s+|.', p.read_text())
          for p in SHIPPED}
NASTY = ["1e309", "-0", "99999999999999999999999", "in", "log", "{", "}", "[", "]", "(", ")", ",", "=", ".",
         '"', '"""', "\\", "#", "\x00", "é", "🙂", "\u202e", "\ufeff", "none", "true", "in [0, 1]", "in {}", "\n"]


@st.composite
def mutated(draw) -> str:
    tokens = list(TOKENS[draw(st.sampled_from(sorted(TOKENS)))])
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(tokens) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "bytes"]))
        if op == "delete":
            del tokens[i]
        elif op == "duplicate":
            tokens.insert(i, tokens[i])
        elif op == "swap":
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif op == "insert":
            tokens.insert(i, draw(st.sampled_from(NASTY)))
        else:
            tokens.insert(i, draw(st.text(min_size=1, max_size=6)))
    return "".join(tokens)


def test_the_fuzz_covers_every_shipped_program():
    assert len(TOKENS) >= 12 and "quickstart.alp" in TOKENS


@settings(max_examples=240, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=mutated())
def test_mutated_programs_never_traceback(capsys, tmp_path_factory, source):
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "data").symlink_to(ROOT / "programs" / "data")
    path = folder / "prog.alp"
    path.write_bytes(source.encode("utf-8", "surrogatepass"))
    rc, out = run_cli(capsys, "check", str(path))
    assert rc in (0, 2), out
    assert "Traceback" not in out and "internal error" not in out
    if rc == 2:
        assert str(path) in out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=200))
def test_random_bytes_never_traceback(capsys, tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("bytes") / "prog.alp"
    path.write_bytes(blob)
    rc, out = run_cli(capsys, "check", str(path))
    assert rc == 2 and "Traceback" not in out and "internal error" not in out
