"""``aldsl optimize`` end to end on the embedded model (slow): the quickstart program with a tiny budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import aldsl
from aldsl.cli import main

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_quickstart_optimizes_and_ships_a_runnable_program(tmp_path, capsys):
    text = (ROOT / "programs" / "quickstart.alp").read_text()
    text = text.replace('"data/arith.jsonl"', f'"{ROOT / "programs" / "data" / "arith.jsonl"}"')
    # The shipped quickstart searches `space = auto` (SFT included: minutes); here a small explicit space
    # keeps the test quick: the template, with best of 2 by a learned ORM.
    for shipped, small in [('max_tokens = 64)', 'max_tokens = 64, temperature = 0.7)\n'
                                                  'reward orm = outcome(problems.train, samples = 2, queries = 12)'),
                           ("prompt()", "prompt(template = zero_shot in {zero_shot, cot})"),
                           ("evaluator = acc)", "evaluator = acc, samples = 2, reward = orm, select = argmax)")]:
        assert shipped in text
        text = text.replace(shipped, small)
    start = text.index("optimize search")
    text = text[:start] + ("optimize search = optuna(objective = acc, on = problems.dev, trials = 3, minibatch = 4, "
                           "promote = 1, queries = 8, report_queries = 8)\n")
    path = tmp_path / "quickstart.alp"
    path.write_text(text)
    assert main(["optimize", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "quickstart: optuna, objective acc" in out and "95% CI" in out
    folder = tmp_path / "out" / "quickstart"
    report = json.loads((folder / "report.json").read_text())
    assert [(r["label"], r["split"], r["n"]) for r in report["rows"]] == [
        ("defaults", "dev", 8), ("optimized", "dev", 8), ("defaults", "test", 8), ("optimized", "test", 8)]
    assert report["extra"]["reproduced"]["same"]
    assert any(a.startswith("reward") for a in report["artifacts"])  # the ORM travels with the program
    loaded = aldsl.load_optimized(folder)
    assert len(loaded.search_space) == 0
    assert loaded.run(split="test", limit=8).scores["acc"] >= 0.0
