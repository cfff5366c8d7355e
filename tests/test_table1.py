"""Every row of Table 1 runs end to end on the embedded model in its small setting (slow).

The same code as ``bench/table1.py`` (which runs the full setting and writes the committed table).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("table1", ROOT / "bench" / "table1.py")
table1 = importlib.util.module_from_spec(_spec)
sys.modules["table1"] = table1  # dataclasses look their module up there
_spec.loader.exec_module(table1)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("row", table1.ROWS, ids=lambda r: f"row{r.number:02d}-{r.program[3:-4]}")
def test_row_runs_in_its_small_setting(row, tmp_path):
    outcome = table1.run_row(row, "small", tmp_path)
    assert outcome.n >= 1 and outcome.seconds > 0
    for score in (outcome.baseline, outcome.optimized):
        assert math.isfinite(score) and 0.0 <= score <= 1.0
    if row.program != "08_reward_model.alp":  # row 8 scores given pairs: it generates nothing
        assert outcome.tokens > 0
    if row.mode == "optimize":
        folder = tmp_path / f"row{row.number:02d}"
        written = list(folder.glob("*/optimized.alp"))
        assert len(written) == 1 and (written[0].parent / "report.md").exists()
    if row.number == 11:
        assert set(outcome.extra) == {"evaluations", "tpe", "random"} and outcome.extra["evaluations"] == 4
        assert 0.0 < outcome.extra["random"] <= 1.0
    for label, variant in outcome.extra.get("variants", {}).items():  # row 6: learned PRM and ORM beside the critic
        assert 0.0 <= variant["score"] <= 1.0 and variant["tokens"] > 0
    assert set(outcome.extra.get("variants", {})) == set(row.variants)
    text = table1.markdown([outcome], "small")
    assert f"| {row.number} | {row.usage} |" in text


def test_rows_cover_table_1_once_each():
    assert [r.number for r in table1.ROWS] == list(range(1, 12))
    programs = sorted(p.name for p in (ROOT / "programs").glob("[01]*.alp"))
    assert sorted(r.program for r in table1.ROWS) == programs


def test_merged_rows_say_where_each_ran():
    a = table1.Outcome(1, "full", "acc", 0.1, 0.4, 60, 10, 1.0, machine="machine A")
    b = table1.Outcome(2, "full", "acc", 0.1, 0.4, 30, 10, 1.0, machine="machine B")
    assert "Machine: machine A." in table1.markdown([a], "full")
    assert "Machines: rows 1: machine A; rows 2: machine B." in table1.markdown(table1.merged([a], [b]), "full")
