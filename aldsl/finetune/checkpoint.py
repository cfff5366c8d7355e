"""theta: fine-tuning a generator, trained once and reused by content hash.

Three kinds, all ending in the supervised loop of :mod:`aldsl.finetune.training`:

- ``sft``: the round-1 prompt of every train record -> its demonstration (or a worked solution
  derived from its golden answer, :mod:`aldsl.store.derive`).
- ``rejection``: sample L answers per train query, keep the best (top reward, or a sample the
  golden evaluator passes), fine-tune on the kept ones.
- ``iterative`` (Fig. 1, step 6): K rounds of refitting the reward on the current model's samples,
  then rejection-sampling fine-tuning from the current weights. Round k is its own artifact, so
  asking for more rounds later continues from the last one already trained.

A checkpoint is an artifact ``finetune/KEY`` (a plain HF model folder plus ``meta.json`` with the
loss curve and settings, and ``examples.jsonl`` with what it was trained on); KEY hashes the spec
(without its name), the training records, the base model's identity and the reward's spec.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from aldsl.backends import GenRequest, forget
from aldsl.backends.registry import model_identity, resolve_model
from aldsl.backends.transformers_backend import pick_device
from aldsl.compiler.specs import Finetune, ModelGenerator, Reward, SplitRef, unnamed
from aldsl.errors import NothingToLearn, UserError
from aldsl.evaluators import evaluate
from aldsl.backends.base import Completion
from aldsl.store.derive import MAX_STEPS, VERSION as DERIVE_VERSION, derive
from aldsl.finetune.training import (Example, Preference, Settings, free_memory, load_trainable, save, train,
                                     train_preferences)
from aldsl.ops.answers import extract
from aldsl.ops.prompter import Prompter
from aldsl.rewards import RewardItem, RewardModel
from aldsl.rewards.trained import PASS, training_records
from aldsl.store.hashing import content_hash

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session

KIND = "finetune"
VERSION = 2  # bump when training changes what a spec produces, so old checkpoints are not reused
FALLBACK_TEMPERATURE = 0.8  # rejection sampling of a greedy generator: identical samples teach nothing


def ensure_checkpoint(spec: Finetune, session: Session, graph: ProgramGraph) -> Path:
    """The folder of the fine-tuned model of a compiled ``finetune`` spec: found by content hash, or trained."""
    if spec.kind == "iterative":
        return _iterative(spec, session, graph)
    key = checkpoint_key(spec, session, graph)
    found = session.artifacts.find(KIND, key, _validate)
    if found is not None:
        return found
    records = training_records(spec, session, graph)
    if spec.kind == "dpo":
        pairs, info = preference_pairs(spec, session, graph, records)
        return _train_and_save(spec, session, graph, key, pairs, None, info)
    if spec.kind == "sft":
        examples, info = sft_examples(spec, session, graph, records)
    else:
        reward = refit_reward(spec, session, graph, None) if spec.reward else None
        examples, info = rejection_examples(spec, session, graph, spec.generator, reward, records)
    return _train_and_save(spec, session, graph, key, examples, None, info)


def checkpoint_key(spec: Finetune, session: Session, graph: ProgramGraph) -> str:
    """Content hash of everything that determines the weights: not the declarations' names, nor what
    training never reads (the follow-up template; for sft the decoding but its seed, the evaluator
    and the answer extraction)."""
    body = unnamed(spec.to_json())
    body["prompter"] = {k: v for k, v in body["prompter"].items() if k != "followup"}
    if spec.kind == "sft":
        body = {k: v for k, v in body.items() if k not in ("evaluator", "answer")}
        body["generator"]["decoding"] = {"seed": spec.generator.decoding.seed}
    reward = unnamed(graph[spec.reward]["params"]) if spec.reward else None
    data = {f"{r['data']}.{r['split']}": session.split(graph, SplitRef.from_json(r)) for r in _data_refs([body, reward])}
    identity = model_identity(resolve_model(spec.generator.model), spec.generator.checkpoint)
    derived = [DERIVE_VERSION] if spec.get("solutions") == "arithmetic" else []  # a new search, new targets
    return content_hash(VERSION, body, data, identity, reward, *derived)


# ---------------------------------------------------------------- training data
def sft_examples(spec: Finetune, session: Session, graph: ProgramGraph,
                 records: Sequence[dict[str, Any]]) -> tuple[list[Example], dict[str, Any]]:
    """Round-1 prompt (as the executor renders it, prefill included) -> worked solution, per record with
    one: its demonstration, or with ``solutions = arithmetic`` one derived from its golden answer."""
    backend = session.backend(spec.generator, graph)
    firsts = Prompter(spec.prompter, session, graph, backend).first_prompts(records)
    if spec.get("solutions", "demo") == "arithmetic":
        targets, info = derived_solutions(spec, records)
    else:
        targets, info = [str(r.get("demo") or "") for r in records], {}
    examples = [Example(base + prefill, _after_prefill(t, prefill))
                for t, (base, prefill, _) in zip(targets, firsts) if t.strip()]
    if not examples:
        raise UserError(f"finetune {spec.name!r}: no record of {spec.data} has a demonstration; give the "
                        "data a demo (or target) field")
    return examples, info


def derived_solutions(spec: Finetune, records: Sequence[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """Per record, the worked solution derived from its golden answer ("" where no chain reaches it)."""
    if records and all(r.get("y") is None or not str(r["y"]).strip() for r in records):
        raise UserError(f"finetune {spec.name!r}: solutions = arithmetic derives worked solutions from golden "
                        f"answers, and {spec.data} has none; set the data's target field")
    found = [derive(str(r["x"]), r.get("y")) for r in records]
    texts = [d.text(str(r["y"])) if d else "" for r, d in zip(records, found)]
    if records and not any(found):
        r = records[0]
        raise NothingToLearn(
            f"finetune {spec.name!r}: solutions = arithmetic found, in none of the {len(records)} records of "
            f"{spec.data}, a chain of at most {MAX_STEPS} operations (+, -, *, /) over the numbers of the question "
            f"that reaches the golden answer (e.g. record {r.get('id')!r}: answer {r.get('y')!r}); it fits "
            "arithmetic word problems with numeric answers and the numbers written in digits; use "
            "rejection(..., rationalize = true) or give the data worked solutions")
    derived = [d for d in found if d]
    return texts, {"solutions": "arithmetic", "records": len(records), "derived": len(derived),
                   "ambiguous": sum(d.candidates > 1 for d in derived)}


def graded_samples(spec: Finetune, session: Session, graph: ProgramGraph, generator: ModelGenerator,
                   reward: RewardModel | None, records: Sequence[dict[str, Any]]
                   ) -> tuple[list[list[tuple[str, Completion, float]]], dict[str, Any]]:
    """``spec["samples"]`` samples per record from ``generator`` (a greedy one samples at the fallback
    temperature), each with its prompt and score: the reward's, else the golden evaluator's (empty or
    unscorable samples score -inf)."""
    n = spec["samples"]
    generator = generator.with_decoding(temperature=generator.decoding.temperature or FALLBACK_TEMPERATURE)
    backend = session.backend(generator, graph)
    firsts = Prompter(spec.prompter, session, graph, backend).first_prompts(records)
    requests = [GenRequest(base + prefill, tuple(range(n))) for base, prefill, _ in firsts]
    with session.reporter.task(f"{spec.name}: sampling {len(requests)} queries x {n}", total=len(requests)) as adv:
        outputs = backend.generate(requests, generator.decoding, progress=lambda k, tokens: adv(k, tokens=tokens))
    flat = [(r, q.prompt, prefill, c) for r, (_, prefill, _), q, row in zip(records, firsts, requests, outputs)
            for c in row]
    texts = [prefill + c.text for _, _, prefill, c in flat]
    if reward is not None:
        with session.reporter.task(f"{spec.name}: scoring {len(texts)} samples", total=1) as adv:
            scored = reward.score([RewardItem(str(r["x"]), t, r, p[: len(p) - len(prefill)])
                                   for (r, p, prefill, _), t in zip(flat, texts)])
            adv(1)
        scores = [s.score for s in scored]
    else:
        if spec.evaluator is None or spec.answer is None:
            raise UserError(f"finetune {spec.name!r}: ranking samples without a reward needs the golden evaluator")
        answers = [extract(spec.answer.kind, t, spec.answer.arg) for t in texts]
        scores = evaluate(spec.evaluator, answers, [r for r, *_ in flat], session, graph)
    clean = [float(s) if s is not None and math.isfinite(s) and c.text.strip() else -math.inf
             for s, (_, _, _, c) in zip(scores, flat)]
    graded = [[(flat[i * n + j][1], flat[i * n + j][3], clean[i * n + j]) for j in range(n)] for i in range(len(records))]
    finite = [s for s in clean if math.isfinite(s)]
    info = {"queries": len(records), "samples_per_query": n, "sample_temperature": generator.decoding.temperature,
            "ranked_by": spec.reward or f"evaluator {spec.evaluator.name if spec.evaluator else '?'}",
            "mean_sample_score": round(sum(finite) / len(finite), 4) if finite else None}
    if reward is None:
        info["pass_rate"] = round(sum(s >= PASS for s in finite) / max(len(clean), 1), 4)
    return graded, info


def rejection_examples(spec: Finetune, session: Session, graph: ProgramGraph, generator: ModelGenerator,
                       reward: RewardModel | None, records: Sequence[dict[str, Any]]
                       ) -> tuple[list[Example], dict[str, Any]]:
    """Sample ``spec["samples"]`` answers per record from ``generator``, keep the best per record.

    With a reward model the top-scored sample is kept; without one, the best sample the golden
    evaluator passes, and records where none passes are skipped, or with ``rationalize`` (STaR,
    Zelikman et al. 2022) sampled again with their golden answer as a hint: a passing rationale is
    kept as the completion of the prompt *without* the hint.
    """
    graded, info = graded_samples(spec, session, graph, generator, reward, records)
    examples, missed = [], []
    for record, rows in zip(records, graded):
        prompt, completion, score = _best(rows)
        if score == -math.inf or (reward is None and score < PASS):
            missed.append((record, prompt))
            continue
        examples.append(_example(prompt, completion))
    info["kept"] = len(examples)
    if spec.get("rationalize") and missed:
        hints = [with_hint(r, spec.name) for r, _ in missed]
        hinted, hint_info = graded_samples(spec, session, graph, generator, None, hints)
        for (_, prompt), rows in zip(missed, hinted):
            _, completion, score = _best(rows)
            if score >= PASS:  # kept for the prompt without the hint
                examples.append(_example(prompt, completion))
        info["rationalized"] = {"queries": len(missed), "kept": len(examples) - info["kept"],
                                "pass_rate": hint_info.get("pass_rate")}
    if not examples:
        raise NothingToLearn(f"finetune {spec.name!r}: none of the {spec['samples']} samples per query of {spec.data} "
                        f"{'scored' if reward else 'passed ' + (spec.evaluator.name if spec.evaluator else '?')}"
                        f"{' (nor with the answer as a hint)' if spec.get('rationalize') else ''}; "
                        "raise samples, use a reward, or check the evaluator and answer extraction")
    return examples, info


HINT = "{x}\n(Hint: the answer is {y}. Show the steps that lead to it.)"


def with_hint(record: dict[str, Any], name: str) -> dict[str, Any]:
    """The record with its golden answer appended to the query, for STaR's rationalization by finetune ``name``."""
    if record.get("y") is None or not str(record["y"]).strip():
        raise UserError(f"finetune {name!r}: rationalize = true needs golden answers, and record "
                        f"{record.get('id')!r} has none; set the data's target field, or rationalize = false")
    return {**record, "x": HINT.format(x=record["x"], y=record["y"])}


def _best(rows: list[tuple[str, Completion, float]]) -> tuple[str, Completion, float]:
    """The best-scored (prompt, sample, score) of a query: the first of the best on a tie."""
    return max(rows, key=lambda row: row[2])


def _example(prompt: str, completion: Completion) -> Example:
    """A kept sample as a training pair; one cut off at max_tokens is trained without EOS."""
    return Example(prompt, completion.text, eos=completion.finish != "length")


def preference_pairs(spec: Finetune, session: Session, graph: ProgramGraph, records: Sequence[dict[str, Any]]
                     ) -> tuple[list[Preference], dict[str, Any]]:
    """DPO pairs after each record's round-1 prompt: its chosen/rejected fields (``pairs = fields``), the
    best against the worst of its samples (``ranked``), or its demonstration against the base model's
    first sample (``demos``, SPIN's self-play)."""
    mode = spec["pairs"]
    if mode == "ranked":
        reward = refit_reward(spec, session, graph, None) if spec.reward else None
        graded, info = graded_samples(spec, session, graph, spec.generator, reward, records)
        pairs = []
        for rows in graded:
            best, worst = _best(rows), min(rows, key=lambda r: r[2])
            if best[2] > worst[2] and math.isfinite(best[2]):
                pairs.append(Preference(best[0], best[1].text, worst[1].text))
    else:
        backend = session.backend(spec.generator, graph)
        firsts = Prompter(spec.prompter, session, graph, backend).first_prompts(records)
        info = {"queries": len(records)}
        if mode == "fields":
            for field in (spec["chosen"], spec["rejected"]):
                if any(r.get(field) is None for r in records):
                    raise UserError(f"finetune {spec.name!r}: a record of {spec.data} has no field {field!r}; set "
                                    "chosen/rejected to the fields holding the two responses, or use pairs = ranked")
            pairs = [Preference(base + prefill, _after_prefill(str(r[spec["chosen"]]), prefill),
                                _after_prefill(str(r[spec["rejected"]]), prefill))
                     for r, (base, prefill, _) in zip(records, firsts)]
        else:
            demos = [(r, f) for r, f in zip(records, firsts) if str(r.get("demo") or "").strip()]
            generator = spec.generator.with_decoding(temperature=spec.generator.decoding.temperature
                                                     or FALLBACK_TEMPERATURE)
            requests = [GenRequest(base + prefill) for _, (base, prefill, _) in demos]
            outputs = session.backend(generator, graph).generate(requests, generator.decoding)
            pairs = [Preference(q.prompt, _after_prefill(str(r["demo"]), prefill), out[0].text)
                     for (r, (_, prefill, _)), q, out in zip(demos, requests, outputs)
                     if out[0].text.strip() and out[0].text.strip() != _after_prefill(str(r["demo"]), prefill).strip()]
    info = {**info, "pairs": len(pairs), "mode": mode}
    if not pairs:
        raise NothingToLearn(f"finetune {spec.name!r}: no preference pair in {spec.data} (pairs = {mode}); with ranked, "
                        "raise samples or give a reward that tells the samples apart")
    return pairs, info


# ---------------------------------------------------------------- iterative
def _round(spec: Finetune, k: int) -> Finetune:
    """The spec of iterative round ``k`` (the same settings, ``rounds = k``)."""
    return replace(spec, settings={**spec.settings, "rounds": k})


def _iterative(spec: Finetune, session: Session, graph: ProgramGraph) -> Path:
    """Rounds 1..K, each a checkpoint of its own (found or trained from the previous round's)."""
    rounds = spec["rounds"]
    keys = [checkpoint_key(_round(spec, k), session, graph) for k in range(1, rounds + 1)]
    found = session.artifacts.find(KIND, keys[-1], _validate)
    if found is not None:
        return found
    records = training_records(spec, session, graph)
    current: Path | None = None
    for k, key in enumerate(keys, 1):
        found = session.artifacts.find(KIND, key, _validate)
        if found is None:
            session.reporter.log(f"{spec.name}: iterative round {k}/{rounds}")
            generator = replace(spec.generator, checkpoint=str(current) if current else None)
            reward = refit_reward(spec, session, graph, current)
            examples, info = rejection_examples(spec, session, graph, generator, reward, records)
            info = {**info, "round": k, "start": current.name if current else "base"}
            found = _train_and_save(_round(spec, k), session, graph, key, examples, current, info)
        current = found
    assert current is not None
    return current


def refit_reward(spec: Finetune, session: Session, graph: ProgramGraph, checkpoint: Path | None) -> RewardModel:
    """The spec's reward fitted on samples (and features) of ``checkpoint``, the base model when None.

    The reward's generator is the flow's at its defaults, which may itself use this fine-tuning;
    here it always means the model being fine-tuned, so there is no cycle.
    """
    assert spec.reward is not None
    reward = graph.spec(spec.reward)
    assert isinstance(reward, Reward)
    gen = reward.generator
    if not isinstance(gen, ModelGenerator) or (checkpoint is None and not gen.finetune):
        return session.reward(spec.reward, graph)  # untrained (nothing to refit), or already on the base model
    if gen.model != spec.generator.model:
        raise UserError(f"finetune {spec.name!r} refits reward {reward.name!r} on the fine-tuned model's "
                        f"samples, but that reward reads model {gen.model!r}, not {spec.generator.model!r}")
    tuned = replace(gen.base(), checkpoint=str(checkpoint) if checkpoint else None)
    return session.reward_of(replace(reward, generator=tuned), graph)


# ---------------------------------------------------------------- training and storage
def _train_and_save(spec: Finetune, session: Session, graph: ProgramGraph, key: str,
                    examples: Sequence[Example] | Sequence[Preference], start: Path | None, info: dict[str, Any]) -> Path:
    """Train from ``start`` (default: the base weights) on ``examples`` (SFT) or preference pairs (DPO),
    store the result under ``key``."""
    gen = spec.generator
    settings = Settings(steps=spec["steps"], lr=spec["lr"], batch=spec["batch"], lora=spec["lora"],
                        lora_rank=spec["lora_rank"], seed=gen.decoding.seed)
    device = pick_device(session.model_spec(gen, graph).device)
    resolved = resolve_model(gen.model)
    model, tokenizer = load_trainable(start or resolved.path, settings, device)
    what = "preference pairs" if spec.kind == "dpo" else "examples"
    label = f"{spec.name}: fine-tuning on {len(examples)} {what}" + (" (LoRA)" if settings.lora else "")
    with session.reporter.task(label, total=settings.steps) as advance:
        if spec.kind == "dpo":
            reference = None if settings.lora else load_trainable(start or resolved.path, replace(settings, lora=False),
                                                                  device)[0]
            result = train_preferences(model, tokenizer, examples, settings, spec["beta"], reference, advance)
        else:
            result = train(model, tokenizer, examples, settings, advance)
    meta = {"name": spec.name, "finetune": spec.kind, "base": model_identity(resolved), "device": str(device),
            "settings": asdict(settings), **result.summary(), "data": info, "spec": spec.to_json()}
    with session.artifacts.create(KIND, key, meta) as folder:
        save(model, tokenizer, folder)
        _write_examples(folder / "examples.jsonl", examples)
    del model
    free_memory()
    path = session.artifacts.path(KIND, key)
    forget(session.model_spec(replace(gen, checkpoint=str(path)), graph))  # a rebuilt folder must be reloaded
    session.reporter.log(f"{spec.name}: loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f} in "
                         f"{len(result.losses)} steps ({result.seconds:.0f} s); saved {path}")
    return path


def _write_examples(path: Path, examples: Sequence[Example] | Sequence[Preference]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps(asdict(e), ensure_ascii=False) + "\n")


def _validate(folder: Path, meta: dict[str, Any]) -> None:
    """Raise unless ``folder`` holds a loadable model and its training record."""
    if not (folder / "config.json").is_file():
        raise ValueError("config.json is missing")
    if not any((folder / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
        raise ValueError("the weights are missing")
    if not meta.get("losses"):
        raise ValueError("meta.json has no loss curve")
    if meta.get("settings", {}).get("lora") and not (folder / "adapter" / "adapter_config.json").is_file():
        raise ValueError("the LoRA adapter is missing")


# ---------------------------------------------------------------- helpers
def _after_prefill(text: str, prefill: str) -> str:
    """The part of an answer the model writes after the template's prefill."""
    if text.startswith(prefill):
        return text[len(prefill):]
    return " " + text if prefill and not prefill[-1].isspace() and not text[:1].isspace() else text


def _data_refs(value: Any) -> Iterator[dict[str, str]]:
    """Every ``{"data", "split"}`` reference inside a spec, once each."""
    seen: set[tuple[str, str]] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if set(v) == {"data", "split"} and isinstance(v["data"], str):
                if (v["data"], v["split"]) not in seen:
                    seen.add((v["data"], v["split"]))
                    yield v
            else:
                stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
