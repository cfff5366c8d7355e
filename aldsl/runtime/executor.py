"""The batch executor: walks the graph in topological order and runs each node once for all
queries of a split (all N x L generations of a round go to the backend as one batch)."""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from aldsl.ops.answers import extract
from aldsl.backends import GenRequest
from aldsl.store.hashing import content_hash
from aldsl.errors import UserError
from aldsl.compiler.graph import ProgramGraph
from aldsl.ops.prompter import Prompter, history_text
from aldsl.rewards.base import RewardItem
from aldsl.ops.select import select
from aldsl.ops.sampling import decoding
from aldsl.runtime.session import Session
from aldsl.runtime.traces import Candidate, RunResult, Trace


Records = Sequence[dict[str, Any]]


class Executor:
    """Runs one concrete graph; :meth:`run` executes every node once for a batch of queries."""

    def __init__(self, graph: ProgramGraph, session: Session | None = None):
        self.graph = graph
        self.session = session or Session()
        self.traces: list[Trace] = []
        self.node_seconds: dict[str, float] = {}
        self._prompters: dict[str, Prompter] = {}

    # ---- entry points
    def records(self, split: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The records of a split of the flow's data (the first ``limit`` of them)."""
        data = self.graph["input"]["params"]["data"]
        records = self.session.split(self.graph, {"data": data, "split": split})
        return records[:limit] if limit is not None else records

    def run(self, records: Records, split: str = "inputs", evaluate: bool = True) -> RunResult:
        """Run the whole graph on ``records`` (normalised records with id, x, y, demo)."""
        if not records:
            raise UserError("nothing to run: the split or the inputs are empty")
        start = time.perf_counter()
        before = self.session.stats()
        self.traces = [Trace(str(r["id"]), str(r["x"]), dict(r)) for r in records]
        for node in self.graph.nodes():
            attrs = self.graph[node]
            op = attrs["op"]
            if op == "evaluate" and not evaluate:
                continue
            t0 = time.perf_counter()
            getattr(self, f"_op_{op}")(node, attrs["params"])
            self.node_seconds[node] = time.perf_counter() - t0
        after = self.session.stats()
        stats = {k: after[k] - before.get(k, 0) for k in after}
        stats.update(seconds=time.perf_counter() - start, queries=len(records),
                     tokens_per_query=sum(t.generated_tokens for t in self.traces) / len(records),
                     node_seconds=self.node_seconds)
        names = {s for t in self.traces for s in t.scores}
        scores = {n: sum(t.scores[n] for t in self.traces) / len(self.traces) for n in sorted(names)}
        return RunResult(self.graph.program, split, self.traces, scores, stats, dict(self.graph.g.graph.get("values", {})))

    # ---- resources (trained or loaded once, before the chain needs them)
    def _op_data(self, node: str, p: dict[str, Any]) -> None:
        self.session.dataset(p)

    def _op_reward_model(self, node: str, p: dict[str, Any]) -> None:
        self.session.reward(node, self.graph)

    def _op_finetune(self, node: str, p: dict[str, Any]) -> None:
        self.session.checkpoint(node, self.graph)

    def _op_input(self, node: str, p: dict[str, Any]) -> None:
        pass

    # ---- the chain of Eq. 1
    def _generator(self) -> dict[str, Any]:
        return self.graph["generate_1"]["params"]["generator"]

    def _prompter(self, node: str, p: dict[str, Any]) -> Prompter:
        if node not in self._prompters:
            gen = self._generator()
            backend = self.session.backend(gen, self.graph) if "model" in gen else None
            self._prompters[node] = Prompter(p, self.session, self.graph, backend)
        return self._prompters[node]

    def _op_prompt(self, node: str, p: dict[str, Any]) -> None:
        t = p["round"]
        prompter = self._prompter(node, p)
        if t == 1:
            for trace, (base, prefill, name) in zip(self.traces, prompter.first_prompts([tr.record for tr in self.traces])):
                trace.base, trace.prefill, trace.template = base, prefill, name
                trace.pending = [(base + prefill, None)]
        elif p["followup"] == "continue":
            for trace in self.traces:
                trace.pending = [(trace.base + _line_prefix(trace.candidates[i].text), i)
                                 for i in trace.kept if not trace.candidates[i].done]
        else:
            for trace in self.traces:
                history = history_text([(trace.candidates[i].text, trace.candidates[i].reward,
                                         trace.candidates[i].feedback or trace.candidates[i].error) for i in trace.kept])
                base, prefill = prompter.feedback_prompt(trace.record, history)
                trace.pending = [(base + prefill, None)]
                trace.prefill = prefill
        for trace in self.traces:
            trace.prompts.extend({"round": t, "parent": parent, "prompt": prompt} for prompt, parent in trace.pending)

    def _op_generate(self, node: str, p: dict[str, Any]) -> None:
        t, L, gen = p["round"], p["samples"], p["generator"]
        continuing = t > 1 and self.graph[f"prompt_{t}"]["params"]["followup"] == "continue"
        if continuing:  # finished thoughts are carried into this round unchanged
            for trace in self.traces:
                for i in trace.kept:
                    c = trace.candidates[i]
                    if c.done:
                        trace.candidates.append(Candidate(c.text, t, i, 0, c.finish, True, c.reward, c.feedback,
                                                          c.error, True))
        if "candidates" in gen:
            self._candidates_from_records(t, gen)
            return
        backend = self.session.backend(gen, self.graph)
        dec = decoding(gen)
        requests, owners = [], []
        for trace in self.traces:
            for prompt, parent in trace.pending:
                requests.append(GenRequest(prompt, tuple(range(L))))
                owners.append((trace, parent))
        if not requests:
            return
        with self.session.reporter.task(f"{node}: {len(requests)} prompts x {L}", total=len(requests)) as advance:
            def progress(n: int, tokens: int) -> None:
                advance(n, tokens=tokens)

            outputs = backend.generate(requests, dec, progress=progress)
        for (trace, parent), completions in zip(owners, outputs):
            head = _line_prefix(trace.candidates[parent].text) if parent is not None else trace.prefill
            for c in completions:
                trace.candidates.append(Candidate(head + c.text, t, parent, c.tokens, c.finish, c.cached,
                                                  done=c.finish == "eos"))

    def _candidates_from_records(self, t: int, gen: dict[str, Any]) -> None:
        for trace in self.traces:
            fields = list(gen["candidates"])
            missing = [f for f in fields if f not in trace.record]
            if missing:
                raise UserError(f"candidates({fields}): record {trace.id} has no field {missing[0]!r}")
            random.Random(content_hash(gen["seed"], trace.id)).shuffle(fields)
            for f in fields:
                trace.candidates.append(Candidate(str(trace.record[f]), t, None, 0, "record", done=True))

    def _op_reward(self, node: str, p: dict[str, Any]) -> None:
        if not p["reward"]:
            return
        t = p["round"]
        model = self.session.reward(p["reward"], self.graph)
        todo = [(trace, i) for trace in self.traces for i in trace.round_candidates(t)
                if trace.candidates[i].reward is None]
        items = [RewardItem(trace.x, trace.candidates[i].text, trace.record,
                            trace.prompts[-1]["prompt"] if trace.prompts else "") for trace, i in todo]
        with self.session.reporter.task(f"{node}: scoring {len(items)} candidates", total=1) as advance:
            scored = model.score(items) if items else []
            advance(1)
        for (trace, i), s in zip(todo, scored):
            c = trace.candidates[i]
            c.reward, c.feedback, c.error = s.score, s.feedback, s.error

    def _op_select(self, node: str, p: dict[str, Any]) -> None:
        t, keep = p["round"], p["keep"]
        continuing = t < self.graph.rounds and self.graph[f"prompt_{t + 1}"]["params"]["followup"] == "continue"
        for trace in self.traces:
            pool = trace.round_candidates(t) if continuing else list(range(len(trace.candidates)))
            ranked = sorted(pool, key=lambda i: (-_value(trace.candidates[i].reward), i))
            trace.kept = ranked[:keep]

    def _op_answer(self, node: str, p: dict[str, Any]) -> None:
        spec = p["answer"]
        last = self.graph.rounds
        for trace in self.traces:
            pool = trace.round_candidates(last) if p["pool"] == "last" else list(range(len(trace.candidates)))
            if not pool:
                trace.answer = ""
                continue
            answers = [extract(spec["kind"], trace.candidates[i].text, spec["arg"]) for i in pool]
            rewards = [trace.candidates[i].reward for i in pool]
            chosen = select(p["select"], answers, rewards)
            trace.selected = pool[chosen]
            trace.answer = answers[chosen]

    def _op_evaluate(self, node: str, p: dict[str, Any]) -> None:
        records = [t.record for t in self.traces]
        answers = [t.answer for t in self.traces]
        for spec in p["evaluators"]:
            scores = self.session.evaluate(spec, answers, records, self.graph)
            for trace, s in zip(self.traces, scores):
                trace.scores[spec["name"]] = float(s)


def _line_prefix(thought: str) -> str:
    """Continue mode: each round adds a new line to the parent thought."""
    return thought if not thought or thought.endswith("\n") else thought + "\n"


def _value(reward: float | None) -> float:
    return float("-inf") if reward is None or reward != reward else reward


def inputs_to_records(inputs: Sequence[str | dict[str, Any]]) -> list[dict[str, Any]]:
    """Plain query strings (or dicts with an ``x``) as executor records."""
    out = []
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            out.append({"id": str(i), "x": item, "y": None, "demo": None})
        elif isinstance(item, dict) and "x" in item:
            out.append({"id": str(item.get("id", i)), "y": None, "demo": None, **item})
        else:
            raise UserError(f"input {i} must be a string or a dict with an 'x' field, got {type(item).__name__}")
    return out

