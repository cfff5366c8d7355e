"""LM-backbone rewards on a tiny random model: every trained family fits with the LM backbone,
saves a model plain transformers (and peft) loads, scores exactly as aldsl does, is reused while
its data is unchanged, and never reads the dev or test split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import aldsl
from aldsl.rewards import RewardItem
from aldsl.rewards.backbone import MODEL_FILE, encode
from aldsl.store.data import read_counts, reset_read_counts
from test_rewards import fit, new_session, program

LM = {
    "orm": "outcome(d.train, samples = 3, tune = top, layers = 1, epochs = 2, lr = 1e-3)",
    "orm_tokens": "outcome(d.train, samples = 3, tune = top, layers = 1, value = tokens, epochs = 2, lr = 1e-3)",
    "prm": "process(d.train, samples = 2, rollouts = 2, tune = top, layers = 1, epochs = 2, lr = 1e-3)",
    "irl": "discriminator(d.train, samples = 2, tune = top, layers = 2, epochs = 2, lr = 1e-3)",
    "bt": "bradley_terry(d.train, annotator = acc, samples = 3, margin = 0.5, tune = top, layers = 1, epochs = 2)",
    "bt_lora": "bradley_terry(d.train, tune = lora, epochs = 2, lr = 1e-3)",
    "orm_full": "outcome(d.train, samples = 2, tune = full, epochs = 1, lr = 1e-4)",
    "orm_generative": "outcome(d.train, samples = 3, tune = top, layers = 1, verifier = generative, epochs = 2)",
    "bt_generative": "bradley_terry(d.train, annotator = acc, samples = 3, tune = lora, verifier = generative, epochs = 1)",
}
CANDIDATES = ["14 + 2 = 16.\nThe answer is 16.", "The answer is 17.", "thinking about it\n\nanswer: 16", "16"]


def plain_scores(folder: Path, texts: list[tuple[str, str]], steps: bool) -> list[float]:
    """What a user gets from the artifact with transformers (and peft) alone."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    info = json.loads((folder / MODEL_FILE).read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    dtype = torch.bfloat16 if info["dtype"] == "bfloat16" else torch.float32
    if info["adapter"]:
        from peft import PeftModel

        base = AutoModelForTokenClassification.from_pretrained(info["base"], num_labels=1, dtype=dtype)
        model = PeftModel.from_pretrained(base, str(folder / "adapter"))
    else:
        model = AutoModelForTokenClassification.from_pretrained(str(folder), dtype=dtype)
    out = []
    for x, c in texts:
        e = encode(tokenizer, x, c, info["suffix"])
        with torch.no_grad():
            values = model.eval()(input_ids=torch.tensor([e.ids])).logits[0, :, 0].double().numpy()
        out.append(float(values[e.line_ends].min() if steps else values[-1]))
    return out


@pytest.mark.parametrize("name", list(LM))
def test_each_family_trains_an_lm_reward_that_plain_transformers_loads(tmp_path, tiny_model_dir, isolated_cache, name,
                                                                        capfd):
    session = new_session(tmp_path)
    path = program(tmp_path, tiny_model_dir, name, settings=LM[name])
    reset_read_counts()
    capfd.readouterr()
    model, graph = fit(path, name, session)
    assert set(read_counts()) <= {"train"}  # the reward never reads dev or test
    printed = "".join(capfd.readouterr())  # a quiet session: no load report of the new head, no metrics dict
    assert "LOAD REPORT" not in printed and "train_runtime" not in printed, printed
    batch = [RewardItem("Tom has 7 apples and buys 9 more. How many now?", c) for c in CANDIDATES]
    ours = [s.score for s in model.score(batch)]
    assert len(set(np.round(ours, 6))) > 1 and all(np.isfinite(ours))
    folder = next((session.artifacts.root / "reward").iterdir())
    steps = name.startswith("prm")
    theirs = plain_scores(folder, [(i.x, i.candidate) for i in batch], steps)
    # batched against one at a time: equal in fp32; bf16 rounds differently with the batch's padding
    tolerance = 2e-3 if json.loads((folder / MODEL_FILE).read_text())["dtype"] == "bfloat16" else 1e-4
    assert np.allclose(ours, theirs, atol=tolerance), (ours, theirs)
    assert aldsl.load_reward(folder).score([i.x for i in batch], CANDIDATES) == pytest.approx(ours, abs=1e-6)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["metrics"] and meta["learner"]["tune"] == LM[name].split("tune = ")[1].split(",")[0]


def test_an_lm_reward_is_reused_while_its_data_is_unchanged(tmp_path, tiny_model_dir, isolated_cache, monkeypatch):
    from aldsl.rewards import backbone

    path = program(tmp_path, tiny_model_dir, "orm", settings=LM["orm"])
    first, _ = fit(path, "orm", new_session(tmp_path))
    monkeypatch.setattr(backbone, "train_value_model", lambda *a, **k: pytest.fail("trained again"))
    again, _ = fit(path, "orm", new_session(tmp_path))
    items = [RewardItem("q", c) for c in CANDIDATES]
    assert [s.score for s in again.score(items)] == [s.score for s in first.score(items)]


def test_a_missing_backbone_is_reported_at_its_position(tmp_path, tiny_model_dir):
    from aldsl.language.diagnostics import AlpError

    path = program(tmp_path, tiny_model_dir, "orm", settings='outcome(d.train, tune = top, backbone = "no/such/model")')
    with pytest.raises(AlpError, match="no/such/model"):
        aldsl.compile(path)


def untied(source: Path, target: Path) -> Path:
    """A tiny random model like ``source`` whose output layer is its own (not the input embedding)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(str(source))
    config.tie_word_embeddings = False
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(config)
    assert not torch.equal(model.get_output_embeddings().weight, model.get_input_embeddings().weight)
    model.save_pretrained(str(target))
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(target))
    return target


@pytest.mark.parametrize("tied", [True, False])
def test_a_generative_verifier_starts_as_the_lms_own_yes_minus_no(tmp_path, tiny_model_dir, tied):
    """verifier = generative: before any training the reward is logit(" Yes") - logit(" No") of the LM itself,
    read right after the verification question; with untied embeddings too (the rows then come from the
    causal LM's own output layer, which the sequence-classification model drops)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from aldsl.rewards.backbone import VERDICTS, VERIFY, Point, TuneConfig, train_value_model

    if not tied:
        tiny_model_dir = untied(tiny_model_dir, tmp_path / "untied")
    texts = [("Tom has 7 apples and buys 9 more. How many now?", c) for c in CANDIDATES]
    config = TuneConfig("full", str(tiny_model_dir), epochs=1, lr=1e-12, generative=True)  # lr ~ 0: the start
    model = train_value_model(config, tmp_path / "gen", texts, [Point(0, (0,), (1.0,), (1.0,))])
    ours = model.last_values([x for x, _ in texts], [c for _, c in texts])
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    lm = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    yes, no = (tokenizer(v, add_special_tokens=False)["input_ids"][0] for v in VERDICTS)
    theirs = []
    for x, c in texts:
        ids = tokenizer(f"Question: {x}\nAnswer: {c}{VERIFY}", return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = lm(input_ids=ids).logits[0, -1]
        theirs.append(float(logits[yes] - logits[no]))
    assert np.allclose(ours, theirs, atol=1e-4), (ours, theirs)
    assert json.loads((tmp_path / "gen" / MODEL_FILE).read_text())["suffix"] == VERIFY


@pytest.mark.parametrize("settings, message", [
    ("outcome(d.train, verifier = generative)", "tune = head"),
    ("process(d.train, tune = top, verifier = generative)", "process reward"),
    ("outcome(d.train, tune = top, value = tokens, verifier = generative)", "value = tokens"),
])
def test_a_generative_verifier_is_refused_where_it_cannot_read_one_answer(tmp_path, tiny_model_dir, settings, message):
    from aldsl.language.diagnostics import AlpError

    path = program(tmp_path, tiny_model_dir, "orm", settings=settings)
    with pytest.raises(AlpError, match=message):
        aldsl.compile(path)
