"""Fine-tuning theta on a tiny random model: SFT learns its demonstrations, prompts match the
executor's, checkpoints are reused by content hash, LoRA, rejection sampling, iterative rounds."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import aldsl
import aldsl.finetune.checkpoint as finetune
from aldsl.store.artifacts import ArtifactWarning
from aldsl.backends import ModelSpec, load_backend
from aldsl.compiler.specs import Finetune
from aldsl.errors import UserError
from aldsl.ops.prompter import Prompter
from aldsl.ops.sampling import sample
from aldsl.rewards import RewardItem
from aldsl.runtime.session import Session

SCORES = '''
def length(x, candidate, record):
    return float(len(candidate))

def only_even_ids(x, candidate, record):
    return float(int(record["id"][1:]) % 2 == 0)

def never(x, candidate, record):
    return 0.0

def hinted(x, candidate, record):
    return float("Hint: the answer is" in x)
'''


def rows(n: int = 12, train: int = 6) -> list[dict]:
    return [{"id": f"q{i}", "question": f"Tom has {i} apples and buys 2 more. How many now?", "answer": str(i + 2),
             "solution": f"{i} + 2 = {i + 2}.\nThe answer is {i + 2}.", "split": "train" if i < train else "dev"}
            for i in range(n)]


def program(tmp_path: Path, model_dir: Path, finetune_decl: str, *, gen: str = "temperature = 0.0, max_tokens = 24",
            prompter: str = "template = direct", extra: str = "", records: list[dict] | None = None,
            evaluator: str = "numeric_match()") -> aldsl.CompiledProgram:
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records or rows()))
    (tmp_path / "scores.py").write_text(SCORES)
    path = tmp_path / "prog.alp"
    path.write_text(f"""program t "fine-tuning test"
data d = jsonl("data.jsonl", input = "question", target = "answer", demo = "solution", split = "split")
{finetune_decl}
{extra}
generator g = model("{model_dir}", {gen}, finetune = ft)
prompter p = prompt({prompter})
evaluator acc = {evaluator}
flow main = loop(d, generator = g, prompter = p, evaluator = acc, answer = number)
""")
    return aldsl.compile(path)


def checkpoint(prog: aldsl.CompiledProgram, session: Session) -> Path:
    return session.checkpoint("finetune:ft", prog.program_graph)


def spec_of(prog: aldsl.CompiledProgram) -> Finetune:
    return prog.program_graph.spec("finetune:ft")


def meta(folder: Path) -> dict:
    return json.loads((folder / "meta.json").read_text())


def examples(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "examples.jsonl").read_text().splitlines()]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture
def session(isolated_cache: Path) -> Session:
    return Session()


def test_sft_learns_the_demonstrations(tmp_path, tiny_model_dir, session):
    prog = program(tmp_path, tiny_model_dir, "finetune ft = sft(d.train, steps = 25, lr = 5e-3, batch = 6)")
    tuned = prog.run(split="train", session=session)
    spec = spec_of(prog)  # its generator is the base model's
    base_texts = sample(session, prog.program_graph, spec.prompter, spec.generator,
                        [t.record for t in tuned.traces], 1)
    for trace, (base_text,) in zip(tuned.traces, base_texts):
        demo = trace.record["demo"]
        assert trace.candidates[0].text == demo and trace.candidates[0].finish == "eos"  # learned, EOS included
        assert not base_text.startswith(demo[:8])
    assert tuned.scores["acc"] == 1.0
    info = meta(checkpoint(prog, session))
    assert len(info["losses"]) == 25 and info["losses"][-1] < 0.05 * info["losses"][0]
    assert info["examples"] == 6 and info["settings"]["lr"] == 5e-3 and info["device"] == "cpu"


def test_training_prompts_are_what_the_executor_feeds_the_model(tmp_path, tiny_model_dir, session):
    extra = 'template tutor = text("Problem: {x}", system = "Be brief.", prefill = "Solution:")'
    prog = program(tmp_path, tiny_model_dir, "finetune ft = sft(d.train, steps = 1)", prompter="template = tutor",
                   extra=extra)
    spec = spec_of(prog)
    records = session.split(prog.program_graph, spec.data)
    pairs, _ = finetune.sft_examples(spec, session, prog.program_graph, records)
    run = prog.run(split="train", session=session)
    assert [e.prompt for e in pairs] == [t.prompts[0]["prompt"] for t in run.traces]
    assert all(e.prompt.endswith("<|im_start|>assistant\nSolution:") and "Be brief." in e.prompt for e in pairs)
    assert [e.target for e in pairs] == [" " + r["demo"] for r in records]  # what follows the prefill


def test_a_checkpoint_is_reused_by_content_hash(tmp_path, tiny_model_dir, session, monkeypatch):
    decl = "finetune ft = sft(d.train, steps = 3, lr = 1e-3, batch = 4)"
    first = checkpoint(program(tmp_path, tiny_model_dir, decl), session)
    created = (first / "meta.json").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    same = program(tmp_path, tiny_model_dir, decl)
    with monkeypatch.context() as m:
        m.setattr(finetune, "train", no_training)
        start = time.perf_counter()
        again = checkpoint(same, Session())  # a new session: found on disk
        assert time.perf_counter() - start < 1.0
        greedier = program(tmp_path, tiny_model_dir, decl, gen="temperature = 0.5, max_tokens = 9")
        assert checkpoint(greedier, Session()) == first  # sft never reads the decoding
    assert again == first and (again / "meta.json").stat().st_mtime_ns == created
    other_lr = checkpoint(program(tmp_path, tiny_model_dir, decl.replace("1e-3", "2e-3")), Session())
    changed = rows()
    changed[0]["solution"] = "0 + 2 = 2. Done."
    other_data = checkpoint(program(tmp_path, tiny_model_dir, decl, records=changed), Session())
    assert len({first, other_lr, other_data}) == 3
    assert all(p.parent == first.parent for p in (other_lr, other_data))


def test_a_corrupt_checkpoint_is_rebuilt(tmp_path, tiny_model_dir, session):
    prog = program(tmp_path, tiny_model_dir, "finetune ft = sft(d.train, steps = 2, lr = 1e-3)")
    folder = checkpoint(prog, session)
    (folder / "model.safetensors").unlink()
    with pytest.warns(ArtifactWarning):
        rebuilt = checkpoint(prog, Session())
    assert rebuilt == folder and (folder / "model.safetensors").is_file()


def test_training_is_deterministic(tmp_path, tiny_model_dir, isolated_cache):
    prog = program(tmp_path, tiny_model_dir, "finetune ft = sft(d.train, steps = 4, lr = 1e-3, batch = 4)")
    a = checkpoint(prog, Session(artifacts=tmp_path / "a"))
    b = checkpoint(prog, Session(artifacts=tmp_path / "b"))
    assert meta(a)["losses"] == meta(b)["losses"]
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_lora_saves_merged_weights_and_keeps_the_adapter(tmp_path, tiny_model_dir, session):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    decl = "finetune ft = sft(d.train, steps = 6, lr = 1e-2, lora = true, lora_rank = 4)"
    prog = program(tmp_path, tiny_model_dir, decl)
    folder = checkpoint(prog, session)
    info = meta(folder)
    assert (folder / "adapter" / "adapter_config.json").is_file() and info["settings"]["lora"]
    assert info["losses"][-1] < info["losses"][0]
    base = weights(Path(tiny_model_dir))
    merged = weights(folder)
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(k.split(".")[-2] in ("q_proj", "k_proj", "v_proj", "o_proj") for k in changed)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
                                         str(folder / "adapter")).merge_and_unload().state_dict()
    assert all(torch.allclose(reloaded[k], merged[k], atol=1e-6) for k in changed)
    backend = load_backend(ModelSpec(name=str(tiny_model_dir), checkpoint=str(folder)))
    assert backend.identity != load_backend(ModelSpec(name=str(tiny_model_dir))).identity


def test_queries_cuts_the_training_records(tmp_path, tiny_model_dir, session):
    sft = checkpoint(program(tmp_path, tiny_model_dir, "finetune ft = sft(d.train, queries = 2, steps = 1)"), session)
    assert [e["target"] for e in examples(sft)] == [r["solution"] for r in rows()[:2]]
    decl = "finetune ft = rejection(d.train, queries = 3, samples = 2, steps = 1, reward = r)"
    rejection = checkpoint(program(tmp_path, tiny_model_dir, decl, extra='reward r = external(call = "scores.py:length")'),
                           session)
    assert meta(rejection)["data"]["queries"] == 3 and len(examples(rejection)) == 3


def test_rejection_keeps_the_top_reward_sample_per_query(tmp_path, tiny_model_dir, session):
    prog = program(tmp_path, tiny_model_dir, "finetune ft = rejection(d.train, reward = r, samples = 3, steps = 2)",
                   extra='reward r = external(call = "scores.py:length")')
    spec = spec_of(prog)
    folder = checkpoint(prog, session)
    records = session.split(prog.program_graph, spec.data)
    drawn = sample(session, prog.program_graph, spec.prompter, spec.generator, records, 3, temperature=0.8)
    assert [e["target"] for e in examples(folder)] == [max(texts, key=len) for texts in drawn]
    info = meta(folder)["data"]
    assert info["kept"] == 6 and info["sample_temperature"] == 0.8 and info["ranked_by"] == "reward:r"


def test_rejection_by_the_golden_check_skips_queries_nothing_passes(tmp_path, tiny_model_dir, session):
    prog = program(tmp_path, tiny_model_dir, "finetune ft = rejection(d.train, samples = 2, steps = 2)",
                   evaluator='external(call = "scores.py:only_even_ids")')
    folder = checkpoint(prog, session)
    spec = spec_of(prog)
    records = session.split(prog.program_graph, spec.data)
    drawn = sample(session, prog.program_graph, spec.prompter, spec.generator, records, 2, temperature=0.8)
    kept = [texts[0] for r, texts in zip(records, drawn) if int(r["id"][1:]) % 2 == 0]  # all pass: the first wins
    assert [e["target"] for e in examples(folder)] == kept and meta(folder)["data"]["pass_rate"] == 0.5
    failing = program(tmp_path, tiny_model_dir, "finetune ft = rejection(d.train, samples = 2, steps = 2)",
                      evaluator='external(call = "scores.py:never")')
    with pytest.raises(UserError, match="none of the 2 samples per query"):
        checkpoint(failing, session)


def test_rationalize_keeps_hinted_rationales_for_the_prompt_without_the_hint(tmp_path, tiny_model_dir, session):
    prog = program(tmp_path, tiny_model_dir, "finetune ft = rejection(d.train, samples = 2, steps = 2, "
                   "rationalize = true)", evaluator='external(call = "scores.py:hinted")')
    folder = checkpoint(prog, session)
    spec = spec_of(prog)
    records = session.split(prog.program_graph, spec.data)
    hinted = [finetune.with_hint(r, "ft") for r in records]
    drawn = sample(session, prog.program_graph, spec.prompter, spec.generator, hinted, 2, temperature=0.8)
    prompts = [p + f for p, f, _ in Prompter(spec.prompter, session, prog.program_graph,
                                            session.backend(spec.generator, prog.program_graph)).first_prompts(records)]
    got = examples(folder)
    assert [e["target"] for e in got] == [texts[0] for texts in drawn]  # every hinted sample passes: the first wins
    assert [e["prompt"] for e in got] == prompts and not any("Hint" in e["prompt"] for e in got)
    info = meta(folder)["data"]
    assert info["kept"] == 0 and info["rationalized"] == {"queries": 6, "kept": 6, "pass_rate": 1.0}


def test_rationalize_needs_the_golden_check(tmp_path, tiny_model_dir):
    with pytest.raises(UserError, match="rationalize = true keeps rationales the golden check passes"):
        program(tmp_path, tiny_model_dir, "finetune ft = rejection(d.train, reward = r, rationalize = true)",
                extra='reward r = external(call = "scores.py:length")')
    with pytest.raises(UserError, match="finetune 'ft': rationalize = true needs golden answers"):
        finetune.with_hint({"id": "q1", "x": "2 + 2?", "y": None}, "ft")


def iterative_spec(prog: aldsl.CompiledProgram, rounds: int) -> Finetune:
    """The checker only lets trained rewards into iterative(); the loop itself runs with any reward."""
    spec = spec_of(prog)
    return replace(spec, kind="iterative", settings={**spec.settings, "rounds": rounds})


def test_iterative_rounds_are_checkpoints_and_more_rounds_continue(tmp_path, tiny_model_dir, session, monkeypatch):
    calls: list[int] = []
    real_train = finetune.train

    def counting(*args, **kwargs):
        calls.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(finetune, "train", counting)
    decl = "finetune ft = rejection(d.train, reward = r, samples = 2, steps = 2, lr = 1e-3)"
    prog = program(tmp_path, tiny_model_dir, decl, extra='reward r = external(call = "scores.py:length")')
    graph = prog.program_graph
    one = finetune.ensure_checkpoint(iterative_spec(prog, 1), session, graph)
    two = finetune.ensure_checkpoint(iterative_spec(prog, 2), Session(), graph)
    assert len(calls) == 2  # round 1 was reused, only round 2 trained
    assert meta(one)["data"]["start"] == "base"
    assert meta(two)["data"]["round"] == 2 and meta(two)["data"]["start"] == one.name and one != two
    spec = spec_of(prog)
    records = session.split(graph, spec.data)
    from_one = sample(session, graph, spec.prompter, replace(spec.generator, checkpoint=str(one)), records, 2,
                      temperature=0.8)
    assert [e["target"] for e in examples(two)] == [max(t, key=len) for t in from_one]  # sampled from round 1
    assert finetune.ensure_checkpoint(iterative_spec(prog, 2), Session(), graph) == two and len(calls) == 2


def test_iterative_refits_an_outcome_reward_on_the_current_model(tmp_path, tiny_model_dir, session):
    from aldsl.backends.registry import model_identity, resolve_model

    extra = 'reward orm = outcome(d.train, samples = 2, epochs = 20)'
    prog = program(tmp_path, tiny_model_dir, "finetune ft = iterative(d.train, reward = orm, rounds = 2, samples = 2, "
                   "steps = 2, lr = 1e-3)", extra=extra, evaluator='external(call = "scores.py:only_even_ids")')
    final = checkpoint(prog, session)
    info = meta(final)["data"]
    assert info["round"] == 2 and info["kept"] == 6 and info["ranked_by"] == "reward:orm"
    round_one = final.parent / info["start"]
    fitted = [json.loads(p.read_text()) for p in (session.artifacts.root / "reward").glob("*/meta.json")]
    tiny = resolve_model(str(tiny_model_dir))
    assert sorted(m["identities"][0] for m in fitted) == sorted([model_identity(tiny),
                                                                 model_identity(tiny, str(round_one))])


def test_sft_without_demonstrations_is_a_user_error(tmp_path, tiny_model_dir, session):
    records = [{**r, "solution": " "} for r in rows()]
    prog = program(tmp_path, tiny_model_dir, "finetune ft = sft(d.train, steps = 1)", records=records)
    with pytest.raises(UserError, match="no record of d.train has a demonstration"):
        checkpoint(prog, session)


def test_seeded_batches_cycle_through_every_example():
    from aldsl.finetune.training import batches

    drawn = list(batches(5, 3, 5, seed=0))
    assert all(len(b) == len(set(b)) == 3 for b in drawn)
    flat = [i for b in drawn for i in b]
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(range(5))  # each epoch is a permutation
    assert drawn == list(batches(5, 3, 5, seed=0)) != list(batches(5, 3, 5, seed=1))


def test_dpo_on_preference_fields_raises_the_implicit_reward_of_the_chosen_side(tmp_path, tiny_model_dir, session):
    records = [{**r, "chosen": r["solution"], "rejected": "I do not know."} for r in rows()]
    prog = program(tmp_path, tiny_model_dir, "finetune ft = dpo(d.train, steps = 6, lr = 5e-3, batch = 3, beta = 0.5)",
                   records=records, extra="reward imp = implicit(ft)")
    from aldsl.compiler.builder import compile_checked

    graph, _ = compile_checked(prog.checked, prog.values, rewards=["imp"])
    folder = session.checkpoint("finetune:ft", graph)
    info = meta(folder)
    assert info["finetune"] == "dpo" and len(info["losses"]) == 6 and info["data"]["pairs"] == 6
    assert [e["chosen"] for e in examples(folder)] == [r["solution"] for r in records[:6]]
    implicit = session.reward("reward:imp", graph)
    train = session.split(graph, spec_of(prog).data)
    prompts = [p for p, _, _ in Prompter(spec_of(prog).prompter, session, graph,
                                         session.backend(spec_of(prog).generator, graph)).first_prompts(train)]
    chosen = implicit.score([RewardItem(r["x"], r["chosen"], r, p) for r, p in zip(train, prompts)])
    rejected = implicit.score([RewardItem(r["x"], r["rejected"], r, p) for r, p in zip(train, prompts)])
    assert np.mean([c.score - j.score for c, j in zip(chosen, rejected)]) > 0  # DPO moved pi towards chosen


def test_dpo_pairs_ranked_by_a_reward_and_against_demonstrations(tmp_path, tiny_model_dir, session):
    ranked = program(tmp_path, tiny_model_dir, "finetune ft = dpo(d.train, pairs = ranked, reward = r, samples = 3, "
                     "steps = 2, batch = 2)", extra='reward r = external(call = "scores.py:length")',
                     gen="temperature = 0.8, max_tokens = 12")
    pairs = examples(checkpoint(ranked, session))
    assert pairs and all(len(p["chosen"]) > len(p["rejected"]) for p in pairs)  # the longest against the shortest
    spin = program(tmp_path, tiny_model_dir, "finetune ft = dpo(d.train, pairs = demos, steps = 2, batch = 2)")
    pairs = examples(checkpoint(spin, session))
    assert [p["chosen"] for p in pairs] == [r["solution"] for r in rows()[:6]] and all(p["rejected"] for p in pairs)
