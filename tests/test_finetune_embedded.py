"""Integration: a few SFT steps on the embedded SmolLM2 model; the checkpoint loads, generates and is reused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import aldsl
from aldsl.compiler.specs import SplitRef
import aldsl.finetune.checkpoint as finetune
from aldsl.runtime.session import Session

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_a_few_sft_steps_on_the_embedded_model(tmp_path, monkeypatch):
    data = ROOT / "programs" / "data" / "arith.jsonl"
    (tmp_path / "prog.alp").write_text(f"""program sft_smoke "a few SFT steps"
data problems = jsonl("{data}", input = "question", target = "answer", demo = "solution")
finetune ft = sft(problems.train, steps = 4, lr = 1e-4, batch = 4)
generator g = model("smollm2-135m", max_tokens = 48, finetune = ft)
prompter p = prompt(template = direct)
evaluator acc = numeric_match()
flow main = loop(problems, generator = g, prompter = p, answer = number, evaluator = acc)
""")
    prog = aldsl.compile(tmp_path / "prog.alp")
    session = Session(artifacts=tmp_path / "artifacts")
    folder = session.checkpoint("finetune:ft", prog.program_graph)
    meta = json.loads((folder / "meta.json").read_text())
    assert len(meta["losses"]) == 4 and meta["losses"][-1] < meta["losses"][0]
    assert meta["examples"] == len(session.split(prog.program_graph, SplitRef("problems", "train")))
    result = prog.run(split="train", limit=3, session=session)  # generates with the checkpoint
    assert all(len(t.candidates[0].text.split()) >= 3 for t in result.traces)

    monkeypatch.setattr(finetune, "train", lambda *a, **k: pytest.fail("trained again"))
    start = time.perf_counter()
    again = Session(artifacts=tmp_path / "artifacts").checkpoint("finetune:ft", prog.program_graph)
    assert again == folder and time.perf_counter() - start < 1.0
