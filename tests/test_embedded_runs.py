"""Integration: the zero-shot and few-shot programs run on the embedded model (a few queries)."""

from __future__ import annotations

from pathlib import Path

import pytest

import aldsl
from aldsl.backends.cache import GenerationCache
from aldsl.cli import main
from aldsl.runtime.session import Session

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("program", ["04_zero_shot.alp", "05_few_shot.alp"])
def test_program_runs_from_python_on_held_out_split(program, tmp_path):
    prog = aldsl.compile(ROOT / "programs" / program, {})
    session = Session(cache=GenerationCache(tmp_path / "generations.sqlite"))  # converted model stays shared
    result = prog.run(split="test", limit=4, session=session)
    assert len(result.traces) == 4 and 0.0 <= result.scores["acc"] <= 1.0
    for trace in result.traces:
        text = trace.candidates[0].text
        assert len(text.split()) >= 3  # real words from the real model
    assert result.stats["generated_tokens"] > 0


def test_few_shot_from_the_cli(capsys):
    rc = main(["run", str(ROOT / "programs" / "05_few_shot.alp"), "--split", "test", "--limit", "3", "--quiet",
               "--no-cache"])
    out = capsys.readouterr().out
    assert rc == 0 and "few_shot on test (3 queries)" in out and "acc" in out
