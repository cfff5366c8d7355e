"""The batch executor: an interpreter of the compiled graph. It walks the graph in topological
order and runs each node once for all queries of a split (all N x L generations of a round go to
the backend as one batch), with one method per node kind (:data:`Executor.handlers`)."""

from __future__ import annotations

import random
import time
from typing import Any, Callable, Sequence

from aldsl.backends import GenRequest
from aldsl.compiler import specs
from aldsl.compiler.graph import ProgramGraph, UnknownNode
from aldsl.errors import UserError
from aldsl.evaluators import evaluate
from aldsl.ops.answers import extract
from aldsl.ops.prompter import Prompter, history_text
from aldsl.ops.select import select
from aldsl.rewards.base import RewardItem
from aldsl.runtime.session import Session
from aldsl.runtime.traces import Candidate, RunResult, Trace
from aldsl.store.data import as_text, load
from aldsl.store.hashing import content_hash

Records = Sequence[dict[str, Any]]


class Executor:
    """Runs one concrete graph; :meth:`run` executes every node once for a batch of queries."""

    def __init__(self, graph: ProgramGraph, session: Session | None = None):
        self.graph = graph
        self.session = session or Session()
        self.traces: list[Trace] = []
        self.node_seconds: dict[str, float] = {}
        first = graph.spec(graph.chain("prompt", 1))
        assert isinstance(first, specs.Prompt)
        self.rounds = graph.rounds
        self.continues = first.prompter.continues  # rounds t > 1 extend the kept partial thoughts
        self._prompters: dict[str, Prompter] = {}
        self.handlers: dict[type, Callable[[str, Any], None]] = {
            specs.DataSpec: self.data, specs.Reward: self.reward_model, specs.Finetune: self.finetune,
            specs.Input: self.input, specs.Prompt: self.prompt, specs.Generate: self.generate,
            specs.Score: self.score, specs.Keep: self.keep, specs.Choose: self.answer, specs.Evaluate: self.evaluate}

    # ---- entry points
    def records(self, split: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The records of a split of the flow's data (the first ``limit`` of them)."""
        source = self.graph.spec("input")
        assert isinstance(source, specs.Input)
        records = self.session.split(self.graph, specs.SplitRef(source.data, split))
        return records[:limit] if limit is not None else records

    def run(self, records: Records, split: str = "inputs", evaluate: bool = True) -> RunResult:
        """Run the whole graph on ``records`` (normalised records with id, x, y, demo)."""
        if not records:
            raise UserError("nothing to run: the split or the inputs are empty")
        start = time.perf_counter()
        before = self.session.stats()
        self.traces = [Trace(str(r["id"]), str(r["x"]), dict(r)) for r in records]
        for node in self.graph.nodes():
            spec = self.graph.spec(node)
            if isinstance(spec, specs.Evaluate) and not evaluate:
                continue
            handler = self.handlers.get(type(spec))
            if handler is None:
                raise UnknownNode(f"node {node!r} ({type(spec).__name__}) has no interpreter method")
            t0 = time.perf_counter()
            handler(node, spec)
            self.node_seconds[node] = time.perf_counter() - t0
        after = self.session.stats()
        stats = {k: after[k] - before.get(k, 0) for k in after}
        if self.session.cache is None:  # no cache wrapper counts them: every candidate of the chain is new
            stats["generated_tokens"] = sum(c.tokens for t in self.traces for c in t.candidates if not c.cached)
            stats["misses"] = sum(not c.cached for t in self.traces for c in t.candidates)
        stats.update(seconds=time.perf_counter() - start, queries=len(records),
                     tokens_per_query=sum(t.generated_tokens for t in self.traces) / len(records),
                     node_seconds=self.node_seconds, dtypes=self.session.dtypes())
        names = {s for t in self.traces for s in t.scores}
        scores = {n: sum(t.scores[n] for t in self.traces) / len(self.traces) for n in sorted(names)}
        return RunResult(self.graph.program, split, self.traces, scores, stats, dict(self.graph.g.graph.get("values", {})))

    # ---- resources (trained or loaded once, before the chain needs them)
    def data(self, node: str, spec: specs.DataSpec) -> None:
        load(spec)

    def reward_model(self, node: str, spec: specs.Reward) -> None:
        self.session.reward(node, self.graph)

    def finetune(self, node: str, spec: specs.Finetune) -> None:
        self.session.checkpoint(node, self.graph)

    def input(self, node: str, spec: specs.Input) -> None:
        pass

    # ---- the chain of Eq. 1
    def _prompter(self, node: str, spec: specs.Prompt) -> Prompter:
        """The prompter of a prompt node, with the backend of the round's generator (for its chat template)."""
        if node not in self._prompters:
            generate = self.graph.spec(self.graph.chain("generate", spec.round))
            assert isinstance(generate, specs.Generate)
            gen = generate.generator
            backend = self.session.backend(gen, self.graph) if isinstance(gen, specs.ModelGenerator) else None
            self._prompters[node] = Prompter(spec.prompter, self.session, self.graph, backend)
        return self._prompters[node]

    def _extends(self, t: int) -> bool:
        """Whether round ``t`` extends round t - 1's kept thoughts (continue mode)."""
        return self.continues and 1 < t <= self.rounds

    def prompt(self, node: str, spec: specs.Prompt) -> None:
        t = spec.round
        prompter = self._prompter(node, spec)
        if t == 1:
            for trace, (base, prefill, name) in zip(self.traces, prompter.first_prompts([tr.record for tr in self.traces])):
                trace.base, trace.prefill, trace.template = base, prefill, name
                trace.pending = [(base + prefill, None)]
        elif self._extends(t):
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

    def generate(self, node: str, spec: specs.Generate) -> None:
        t, L, gen = spec.round, spec.samples, spec.generator
        if self._extends(t):  # finished thoughts are carried into this round unchanged
            for trace in self.traces:
                for i in trace.kept:
                    c = trace.candidates[i]
                    if c.done:
                        trace.candidates.append(Candidate(c.text, t, i, 0, c.finish, True, c.reward, c.feedback,
                                                          c.error, True))
        if isinstance(gen, specs.CandidatesGenerator):
            self._candidates_from_records(t, gen)
            return
        backend = self.session.backend(gen, self.graph)
        requests, owners = [], []
        for trace in self.traces:
            for prompt, parent in trace.pending:
                requests.append(GenRequest(prompt, tuple(range(L))))
                owners.append((trace, parent))
        if not requests:
            return
        budget = len(requests) * L * gen.decoding.max_tokens
        with self.session.reporter.task(f"{node}: {len(requests)} prompts x {L}", total=len(requests),
                                        budget=budget) as advance:
            outputs = backend.generate(requests, gen.decoding, progress=lambda n, tokens: advance(n, tokens=tokens))
        for (trace, parent), completions in zip(owners, outputs):
            head = _line_prefix(trace.candidates[parent].text) if parent is not None else trace.prefill
            for c in completions:
                trace.candidates.append(Candidate(head + c.text, t, parent, c.tokens, c.finish, c.cached,
                                                  done=c.finish == "eos"))

    def _candidates_from_records(self, t: int, gen: specs.CandidatesGenerator) -> None:
        for trace in self.traces:
            fields = list(gen.candidates)
            missing = [f for f in fields if f not in trace.record]
            if missing:
                raise UserError(f"candidates({fields}): record {trace.id} has no field {missing[0]!r}")
            random.Random(content_hash(gen.seed, trace.id)).shuffle(fields)
            for f in fields:
                trace.candidates.append(Candidate(str(trace.record[f]), t, None, 0, "record", done=True))

    def score(self, node: str, spec: specs.Score) -> None:
        if not spec.reward:
            return
        model = self.session.reward(spec.reward, self.graph)
        todo = [(trace, i) for trace in self.traces for i in trace.round_candidates(spec.round)
                if trace.candidates[i].reward is None]
        items = [RewardItem(trace.x, trace.candidates[i].text, trace.record, trace.base) for trace, i in todo]
        with self.session.reporter.task(f"{node}: scoring {len(items)} candidates", total=1) as advance:
            scored = self.session.compute(lambda: model.score(items)) if items else []
            advance(1)
        for (trace, i), s in zip(todo, scored):
            c = trace.candidates[i]
            c.reward, c.feedback, c.error = s.score, s.feedback, s.error

    def keep(self, node: str, spec: specs.Keep) -> None:
        next_extends = self._extends(spec.round + 1)
        for trace in self.traces:
            pool = trace.round_candidates(spec.round) if next_extends else list(range(len(trace.candidates)))
            ranked = sorted(pool, key=lambda i: (-_value(trace.candidates[i].reward), i))
            trace.kept = ranked[:spec.keep]

    def answer(self, node: str, spec: specs.Choose) -> None:
        for trace in self.traces:
            pool = trace.round_candidates(self.rounds) if spec.pool == "last" else list(range(len(trace.candidates)))
            if not pool:
                trace.answer = ""
                continue
            answers = [extract(spec.answer.kind, trace.candidates[i].text, spec.answer.arg) for i in pool]
            rewards = [trace.candidates[i].reward for i in pool]
            chosen = select(spec.select, answers, rewards)
            trace.selected = pool[chosen]
            trace.answer = answers[chosen]

    def evaluate(self, node: str, spec: specs.Evaluate) -> None:
        records = [t.record for t in self.traces]
        answers = [t.answer for t in self.traces]
        for evaluator in spec.evaluators:
            scores = evaluate(evaluator, answers, records, self.session, self.graph)
            for trace, s in zip(self.traces, scores):
                trace.scores[evaluator.name] = float(s)


def _line_prefix(thought: str) -> str:
    """Continue mode: each round adds a new line to the parent thought."""
    return thought if not thought or thought.endswith("\n") else thought + "\n"


def _value(reward: float | None) -> float:
    return float("-inf") if reward is None or reward != reward else reward


def inputs_to_records(inputs: Sequence[str | dict[str, Any]], input_field: str = "x",
                      target_field: str | None = None) -> list[dict[str, Any]]:
    """Plain query strings, or dicts with an ``x`` (or the data's ``input_field``) and optionally a ``y``
    (or the data's ``target_field``), as executor records."""
    out = []
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            out.append({"id": str(i), "x": item, "y": None, "demo": None})
        elif isinstance(item, dict) and ("x" in item or input_field in item):
            record = {"id": str(item.get("id", i)), "y": None, "demo": None, **item}
            record.setdefault("x", item.get(input_field))
            if record["y"] is None and target_field is not None and item.get(target_field) is not None:
                record["y"] = item[target_field]
            record["x"] = as_text(record["x"])
            record["y"] = None if record["y"] is None else as_text(record["y"])
            out.append(record)
        else:
            raise UserError(f"input {i} must be a string or a dict with an 'x' (or {input_field!r}) field, got "
                            f"{type(item).__name__}")
    return out
