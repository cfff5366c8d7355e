"""Trained reward families on a tiny random model: fitting, scoring, metrics, artifact reuse and
rebuild, the held-out guard, PRM steps, binary prompt choice, the executor and the CLI."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import aldsl
from aldsl.store.artifacts import ArtifactWarning
from aldsl.backends.cache import GenerationCache
from aldsl.cli import main
from aldsl.store.data import forbid_splits
from aldsl.errors import UserError
from aldsl.rewards import RewardItem
from aldsl.rewards.features import Features, feature_text
from aldsl.rewards.heads import (HeadConfig, auc, bt_loss, load_head, pairwise_accuracy, save_head, train_pairwise,
                                 train_pointwise)
from aldsl.rewards.process import step_prefixes
from aldsl.rewards.trained import holdout_ids
from aldsl.runtime.session import Session

REWARDS = {
    "orm": "outcome(d.train, samples = 3, epochs = 40)",
    "prm": "process(d.train, samples = 2, rollouts = 2, epochs = 40)",
    "prm_soft": "process(d.train, samples = 2, rollouts = 2, label = soft, epochs = 40)",
    "irl": "discriminator(d.train, samples = 2, epochs = 40)",
    "irl_sft": "discriminator(d.train, positives = sft, samples = 2, epochs = 40)",
    "bt_fields": "bradley_terry(d.train, epochs = 40)",
    "bt_annot": "bradley_terry(d.train, annotator = acc, samples = 3, margin = 0.5, centering = 0.01, epochs = 40)",
    "oirl": "binary(d.train, among = [zero_shot, cot, direct], model = logistic, features = hidden)",
}


def records(n_train: int = 12) -> list[dict]:
    rows = []
    for i in range(n_train + 8):
        split = "train" if i < n_train else "dev" if i < n_train + 4 else "test"
        rows.append({"id": f"q{i}", "question": f"Tom has {i} apples and buys {i + 2} more. How many now?",
                     "answer": str(2 * i + 2), "solution": f"{i} + {i + 2} = {2 * i + 2}.\nThe answer is {2 * i + 2}.",
                     "chosen": f"The answer is {2 * i + 2}.", "rejected": f"The answer is {2 * i + 3}.", "split": split})
    return rows


def program(tmp_path: Path, model_dir: Path, reward: str = "orm", *, gen: str = "temperature = 0.8, max_tokens = 8",
            flow: str = "", rows: list[dict] | None = None, settings: str | None = None) -> Path:
    """A tiny program whose evaluator (regex "ing" on the text) passes about 40% of the random model's samples."""
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows or records()))
    path = tmp_path / "prog.alp"
    path.write_text(f"""program t "rewards test"
data d = jsonl("data.jsonl", input = "question", target = "answer", demo = "solution", split = "split")
generator g = model("{model_dir}", {gen})
prompter p = prompt(template = cot)
evaluator acc = regex("ing")
reward {reward} = {settings or REWARDS[reward]}
flow main = loop(d, generator = g, prompter = p, evaluator = acc{', ' + flow if flow else ''})
""")
    return path


def new_session(tmp_path: Path) -> Session:
    return Session(cache=GenerationCache(tmp_path / "gen.sqlite"), artifacts=tmp_path / "artifacts")


def fit(path: Path, name: str, session: Session):
    compiled = aldsl.compile(path)
    from aldsl.compiler.builder import compile_checked

    graph, _ = compile_checked(compiled.checked, compiled.values, rewards=[name])
    with forbid_splits("test"):
        return session.reward(f"reward:{name}", graph), graph


def items(n: int = 6) -> list[RewardItem]:
    return [RewardItem(f"question {i}", f"candidate text number {i}\nsecond line {i}") for i in range(n)]


# ---------------------------------------------------------------- heads and metrics
def test_bt_loss_with_margin_and_centering_matches_hand_computation():
    r_pos, r_neg = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    plain = (-math.log(1 / (1 + math.exp(-1.0))) - math.log(1 / (1 + math.exp(1.0)))) / 2
    assert bt_loss(r_pos, r_neg).item() == pytest.approx(plain, rel=1e-6)
    with_margin = (-math.log(1 / (1 + math.exp(-0.5))) - math.log(1 / (1 + math.exp(1.5)))) / 2
    assert bt_loss(r_pos, r_neg, margin=0.5).item() == pytest.approx(with_margin, rel=1e-6)
    centered = with_margin + 0.1 * ((2 + 1) ** 2 + (0 + 1) ** 2) / 2
    assert bt_loss(r_pos, r_neg, margin=0.5, centering=0.1).item() == pytest.approx(centered, rel=1e-6)


def test_centering_pulls_rewards_towards_zero():
    rng = np.random.default_rng(0)
    chosen, rejected = rng.normal(1.0, 1.0, (60, 5)), rng.normal(-1.0, 1.0, (60, 5))
    config = HeadConfig(epochs=300, lr=1e-2, hidden=0)
    centered, _ = train_pairwise(chosen, rejected, config, centering=1.0)
    free, _ = train_pairwise(chosen, rejected, config)
    both = np.concatenate([chosen, rejected])
    assert abs(centered.predict(both).mean()) < 0.05 < abs(free.predict(both).mean())
    assert pairwise_accuracy(centered.predict(chosen), centered.predict(rejected)) > 0.85


@pytest.mark.parametrize("hidden", [0, 16])
def test_head_learns_a_separable_toy_problem_deterministically(hidden):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 8)).astype(np.float32) * 3 + 10  # far from standardised: the head must scale
    y = (x[:, 0] - 10 + 0.5 * (x[:, 1] - 10) > 0).astype(float)
    config = HeadConfig(epochs=200, lr=1e-2, hidden=hidden)
    head, losses = train_pointwise(x, y, config)
    assert losses[-1] < losses[0] * 0.5
    assert auc(head.predict(x), y) > 0.97
    again, _ = train_pointwise(x, y, config)
    assert np.array_equal(head.predict(x), again.predict(x))  # deterministic given the seed
    chosen, rejected = x[y == 1][:50], x[y == 0][:50]
    pair_head, _ = train_pairwise(chosen, rejected, config)
    assert pairwise_accuracy(pair_head.predict(chosen), pair_head.predict(rejected)) > 0.97


def test_balanced_bce_head_is_calibrated_to_the_data_prior():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 4)).astype(np.float32)
    y = (x[:, 0] + rng.normal(scale=1.0, size=400) > 1.8).astype(float)  # about 10% positives, noisy
    head, _ = train_pointwise(x, y, HeadConfig(epochs=200, lr=1e-2, hidden=0))
    p = 1 / (1 + np.exp(-head.predict(x)))
    assert y.mean() < 0.15 and abs(p.mean() - y.mean()) < 0.05  # not the balanced 0.5
    assert auc(head.predict(x), y) > 0.8


def test_head_roundtrips_through_its_files(tmp_path):
    x = np.random.default_rng(2).normal(size=(30, 4)).astype(np.float32)
    head, _ = train_pointwise(x, (x[:, 0] > 0).astype(float), HeadConfig(epochs=20, hidden=8))
    save_head(head, tmp_path)
    assert np.allclose(load_head(tmp_path).predict(x), head.predict(x))


def test_auc_and_pairwise_accuracy_on_small_cases():
    assert auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auc([1, 1, 1], [0, 1, 1]) == pytest.approx(0.5)  # ties count half
    assert math.isnan(auc([0.1, 0.2], [1, 1]))
    assert pairwise_accuracy([2, 1, 0], [1, 1, 1]) == pytest.approx(0.5)


def test_holdout_is_a_stable_fifth_of_the_queries():
    rows = [{"id": f"r{i}"} for i in range(50)]
    held = holdout_ids(rows)
    assert len(held) == 10 and held == holdout_ids(list(reversed(rows)))
    assert len(holdout_ids(rows[:2])) == 1 and holdout_ids(rows[:1]) == set()


# ---------------------------------------------------------------- features
def test_features_embed_batches_and_memoise(tmp_path, tiny_model_dir):
    graph = aldsl.compile(program(tmp_path, tiny_model_dir)).program_graph
    session = new_session(tmp_path)
    gen = graph.spec("generate_1").generator
    features = Features.of("hidden", session, gen, graph)
    backend = session.backend(gen, graph)
    calls = []
    original = backend.backend.encode
    backend.backend.encode = lambda texts: calls.append(len(texts)) or original(texts)
    texts = [feature_text(f"q{i}", f"a{i}") for i in range(5)]
    first = features.embed(texts)
    assert first.shape == (5, 64) and first.dtype == np.float32 and calls == [5]
    again = features.embed(texts[::-1] + ["new one"])
    assert calls == [5, 1] and np.array_equal(again[:5], first[::-1])
    assert feature_text(" q ", " a\n") == "Question: q\nAnswer: a"
    with pytest.raises(UserError, match="features"):
        Features.of("tfidf", session, gen, graph)


# ---------------------------------------------------------------- each family fits, scores, reports
@pytest.mark.parametrize("name,metric", [("orm", "auc"), ("irl", "auc"), ("bt_fields", "pairwise_accuracy"),
                                         ("bt_annot", "pairwise_accuracy"), ("prm", "step_accuracy")])
def test_family_fits_scores_a_batch_and_reports_metrics(tmp_path, tiny_model_dir, name, metric):
    model, _ = fit(program(tmp_path, tiny_model_dir, name), name, new_session(tmp_path))
    scored = model.score(items())
    assert len(scored) == 6 and all(math.isfinite(s.score) for s in scored)
    assert len({round(s.score, 6) for s in scored}) > 1  # it discriminates between candidates
    value = model.metrics[metric]
    assert 0.0 <= value <= 1.0
    if name in ("orm", "prm"):
        m = model.metrics
        assert m["first"] <= m["pass@L"] and m["best_of_L"] <= m["pass@L"] and m["majority"] <= m["pass@L"]


def test_prm_soft_labels_and_min_over_steps(tmp_path, tiny_model_dir):
    session = new_session(tmp_path)
    model, _ = fit(program(tmp_path, tiny_model_dir, "prm_soft"), "prm_soft", session)
    batch = items() + [RewardItem("question 9", "one line only")]
    steps = model.step_rewards([i.x for i in batch], [i.candidate for i in batch])
    assert [len(s) for s in steps] == [2] * 6 + [1]
    assert [s.score for s in model.score(batch)] == pytest.approx([float(s.min()) for s in steps])
    partial = model.score([RewardItem("question 0", "candidate text number 0")])[0].score
    assert partial == pytest.approx(float(steps[0][0]))  # a partial thought: the min over its lines so far
    assert 0 < model.metrics["step_positive_rate"] <= 1


def test_prm_is_a_dense_reward_for_partial_thoughts_in_continue_rounds(tmp_path, tiny_model_dir):
    path = program(tmp_path, tiny_model_dir, "prm", gen='temperature = 0.8, max_tokens = 4, stop = ["\\n"]',
                   flow="rounds = 2, samples = 2, keep = 1, reward = prm, select = argmax")
    path.write_text(path.read_text().replace("template = cot)", "template = cot, followup = continue)"))
    session = new_session(tmp_path)
    result = aldsl.compile(path).run(split="dev", limit=2, session=session)
    model = session.reward("reward:prm", aldsl.compile(path).program_graph)
    for trace in result.traces:
        assert all(c.reward is not None for c in trace.candidates)
        for c in trace.candidates:
            assert c.reward == pytest.approx(model.score([RewardItem(trace.x, c.text)])[0].score)


def test_step_prefixes_are_cumulative_non_empty_lines():
    assert step_prefixes("a = 1.\n\nb = 2.\nThe answer is 2.") == ["a = 1.", "a = 1.\n\nb = 2.",
                                                                   "a = 1.\n\nb = 2.\nThe answer is 2."]
    assert step_prefixes("") == [""] and step_prefixes("one") == ["one"]


def test_discriminator_with_sft_positives_fine_tunes_once(tmp_path, tiny_model_dir):
    session = new_session(tmp_path)
    model, _ = fit(program(tmp_path, tiny_model_dir, "irl_sft"), "irl_sft", session)
    assert len(list((tmp_path / "artifacts" / "finetune").iterdir())) == 1
    assert 0.0 <= model.metrics["auc"] <= 1.0 and "best_of_L" in model.metrics
    assert len(model.score(items(3))) == 3


def test_bradley_terry_fields_must_exist(tmp_path, tiny_model_dir):
    rows = [{k: v for k, v in r.items() if k != "rejected"} for r in records()]
    path = program(tmp_path, tiny_model_dir, "bt_fields", rows=rows)
    with pytest.raises(UserError, match="no field 'rejected'"):
        fit(path, "bt_fields", new_session(tmp_path))


def test_binary_reward_chooses_a_prompt_per_query(tmp_path, tiny_model_dir):
    model, graph = fit(program(tmp_path, tiny_model_dir, "oirl", gen="max_tokens = 8"), "oirl", new_session(tmp_path))
    picks = model.choose([{"x": f"question {i}"} for i in range(5)])
    assert len(picks) == 5 and all(p in (0, 1, 2) for p in picks)
    assert model.success(["a", "b"]).shape == (2, 3)
    m = model.metrics
    assert {"auc", "choice_accuracy", "best_single_accuracy", "oracle_accuracy"} <= set(m)
    assert m["choice_accuracy"] <= m["oracle_accuracy"] and m["best_single_accuracy"] <= m["oracle_accuracy"]
    with pytest.raises(UserError, match="chooses a prompt per query"):
        model.score(items(1))


# ---------------------------------------------------------------- artifacts
def test_second_build_reuses_the_artifact(tmp_path, tiny_model_dir):
    path = program(tmp_path, tiny_model_dir, "orm")
    first, _ = fit(path, "orm", new_session(tmp_path))
    folders = list((tmp_path / "artifacts" / "reward").iterdir())
    again_session = new_session(tmp_path)
    start = time.perf_counter()
    again, _ = fit(path, "orm", again_session)
    assert time.perf_counter() - start < 10
    assert again_session.stats()["misses"] == 0 and again_session.stats()["hits"] == 0  # no sampling at all
    assert again.metrics == first.metrics
    assert [s.score for s in again.score(items())] == pytest.approx([s.score for s in first.score(items())])
    assert list((tmp_path / "artifacts" / "reward").iterdir()) == folders
    meta = json.loads((folders[0] / "meta.json").read_text())
    assert meta["family"] == "outcome" and meta["records"] == 12 and meta["records_hash"]


@pytest.mark.parametrize("change", ["settings", "data"])
def test_changed_settings_or_data_retrain(tmp_path, tiny_model_dir, change):
    path = program(tmp_path, tiny_model_dir, "orm")
    fit(path, "orm", new_session(tmp_path))
    if change == "settings":
        path = program(tmp_path, tiny_model_dir, "orm", settings="outcome(d.train, samples = 3, epochs = 41)")
    else:
        rows = records()
        rows[0]["answer"] = "999"
        path = program(tmp_path, tiny_model_dir, "orm", rows=rows)
    fit(path, "orm", new_session(tmp_path))
    assert len(list((tmp_path / "artifacts" / "reward").iterdir())) == 2


@pytest.mark.parametrize("damage", ["truncated_weights", "bad_meta"])
def test_corrupt_artifact_warns_and_retrains(tmp_path, tiny_model_dir, damage):
    path = program(tmp_path, tiny_model_dir, "orm")
    first, _ = fit(path, "orm", new_session(tmp_path))
    folder = next((tmp_path / "artifacts" / "reward").iterdir())
    if damage == "truncated_weights":
        weights = folder / "head.pt"
        weights.write_bytes(weights.read_bytes()[:100])
    else:
        (folder / "meta.json").write_text("{not json")
    with pytest.warns(ArtifactWarning, match="rebuilding"):
        again, _ = fit(path, "orm", new_session(tmp_path))
    assert again.metrics == first.metrics
    assert load_head(folder) is not None and json.loads((folder / "meta.json").read_text())["family"] == "outcome"


def test_fitting_never_reads_the_test_split(tmp_path, tiny_model_dir):
    from aldsl.store.data import read_counts, reset_read_counts

    reset_read_counts()
    for name in ("orm", "bt_annot", "irl"):  # fit() runs inside forbid_splits("test"): a read would raise
        folder = tmp_path / name
        folder.mkdir()
        fit(program(folder, tiny_model_dir, name), name, new_session(folder))
    assert read_counts().get("test", 0) == 0 and read_counts()["train"] > 0


# ---------------------------------------------------------------- in a flow, and on the command line
def test_executor_selects_by_a_trained_reward(tmp_path, tiny_model_dir):
    path = program(tmp_path, tiny_model_dir, "orm", flow="samples = 3, reward = orm, select = argmax")
    result = aldsl.compile(path).run(split="dev", session=new_session(tmp_path))
    for trace in result.traces:
        rewards = [c.reward for c in trace.candidates]
        assert len(rewards) == 3 and all(r is not None and math.isfinite(r) for r in rewards)
        assert rewards[trace.selected] == max(rewards)


def test_cli_reward_fit_prints_held_out_metrics(tmp_path, tiny_model_dir, capsys, isolated_cache):
    path = program(tmp_path, tiny_model_dir, "orm")
    assert main(["reward", "fit", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "reward orm (outcome)" in out and "auc" in out and "best_of_L" in out
    assert main(["reward", "fit", str(path), "--reward", "nope", "--quiet"]) == 2
    assert "no trained reward of that name" in capsys.readouterr().err
