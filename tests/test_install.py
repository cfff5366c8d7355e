"""What a pip user meets: extras named in errors, --version, `aldsl init`, runs on the dev split and on
new input files, the answer API, and (slow) the wheel installed into a fresh virtualenv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import aldsl
from aldsl.cli import main
from aldsl.errors import UserError, require_extra
from aldsl.runtime.session import Session

ROOT = Path(__file__).resolve().parent.parent


def test_a_missing_extra_names_its_install_line():
    with pytest.raises(UserError, match=r'the Eureka task needs the aldsl_no_such_module package.*'
                                        r'pip install "aldsl\[eureka\]"'):
        require_extra("aldsl_no_such_module", "eureka", "the Eureka task")
    assert require_extra("json", "none", "x") is json


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"aldsl {aldsl.__version__}"


def test_init_writes_a_project_that_checks(tmp_path, capsys):
    folder = tmp_path / "proj"
    assert main(["init", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "data.jsonl", "new_questions.jsonl",
                                                        "program.alp"]
    assert main(["check", str(folder / "program.alp")]) == 0
    prog = aldsl.compile(folder / "program.alp")
    assert prog.input_data.input == "question" and len(prog.search_space) == 4
    assert main(["init", str(folder)]) == 2  # not empty: nothing is overwritten
    assert "not an empty folder" in capsys.readouterr().err


@pytest.fixture
def project(tmp_path, tiny_model_dir, isolated_cache) -> Path:
    folder = tmp_path / "proj"
    assert main(["init", str(folder), "--model", str(tiny_model_dir)]) == 0
    return folder


def test_run_defaults_to_dev_and_test_is_flagged(project, capsys):
    program = str(project / "program.alp")
    assert main(["run", program, "--limit", "2", "--quiet"]) == 0
    out = capsys.readouterr()
    assert "starter on dev (2 queries)" in out.out and "held-out" not in out.err
    assert main(["run", program, "--split", "test", "--limit", "1", "--quiet"]) == 0
    out = capsys.readouterr()
    assert "starter on test" in out.out and "test is the held-out split" in out.err


def test_run_input_file_writes_answers_and_scores_where_targets_exist(project, tmp_path, capsys):
    program = str(project / "program.alp")
    out = tmp_path / "answers.jsonl"
    assert main(["run", program, "--input", str(project / "new_questions.jsonl"), "--out", str(out), "--quiet"]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3 and all(set(r) == {"id", "x", "answer", "y", "scores"} for r in lines)
    assert all(r["scores"] == {} and r["y"] is None for r in lines)
    assert "not scored" in capsys.readouterr().out
    targeted = tmp_path / "targeted.csv"
    targeted.write_text("question,answer\nTom has 2 apples and finds 3 more. How many now?,5\n"
                        "Ann has 9 pens and loses 4. How many now?,5\n", encoding="utf-8")
    assert main(["run", program, "--input", str(targeted), "--quiet"]) == 0
    shown = capsys.readouterr().out
    assert "inputs (2 queries)" in shown and "acc" in shown and "answers (2 of 2" in shown
    assert main(["run", program, "--input", str(tmp_path / "nope.txt")]) == 2
    assert main(["run", program, "--input", str(targeted), "--split", "dev"]) == 2


def test_answer_api_and_scored_inputs(project):
    prog = aldsl.compile(project / "program.alp")
    session = Session(use_cache=False)
    answers = prog.answer(["Tom has 2 apples and finds 3 more. How many now?", "Ann has 9 pens. How many?"],
                          session=session)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    scored = prog.run([{"question": "Tom has 2 apples and finds 3 more. How many now?", "answer": "5"}],
                      session=session)
    assert set(scored.scores) == {"acc"} and scored.answers == [scored.traces[0].answer]
    assert prog.run(["no target here"], session=session).scores == {}
    # --no-cache: every candidate is new, so the run reports the tokens it really generated
    assert scored.stats["generated_tokens"] == scored.traces[0].generated_tokens > 0


def test_graph_prints_none_not_python_none(capsys):
    assert main(["graph", str(ROOT / "programs" / "01_sft.alp")]) == 0
    out = capsys.readouterr().out
    assert "None" not in out and "none" in out


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_repository(tmp_path, tiny_model_dir):
    """Build the wheel, install it into a new virtualenv (the local CPU torch), then init, check and run
    on an input file from a folder outside the repository; `pip check` is clean."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(ROOT)], check=True, timeout=300)
    wheel = next(dist.glob("aldsl-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py, aldsl_bin = venv / "bin" / "python", venv / "bin" / "aldsl"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0", str(wheel)], check=True, timeout=900)
    work = tmp_path / "outside"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["ALDSL_CACHE"] = str(tmp_path / "cache")

    def sh(*args: str, cwd: Path = work) -> str:
        done = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert sh(str(aldsl_bin), "--version").strip() == f"aldsl {aldsl.__version__}"
    sh(str(aldsl_bin), "init", "proj", "--model", str(tiny_model_dir))
    assert "ok program.alp" in sh(str(aldsl_bin), "check", "program.alp", cwd=work / "proj")
    sh(str(aldsl_bin), "run", "program.alp", "--input", "new_questions.jsonl", "--out", "answers.jsonl", "--quiet",
       cwd=work / "proj")
    assert len((work / "proj" / "answers.jsonl").read_text().splitlines()) == 3
    located = sh(str(py), "-c", "import aldsl, importlib.util as u; print(aldsl.__file__); "
                                "print(u.find_spec('optimizers'))")
    assert str(venv) in located and located.split()[-1] == "None"  # no generic top-level package
    assert sh(str(py), "-m", "pip", "check").strip() == "No broken requirements found."
    shutil.rmtree(venv)
