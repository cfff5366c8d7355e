"""Checked program -> execution graph: Eq. 1 unrolled over T rounds.

Chain: ``input -> (prompt_t -> generate_t -> reward_t -> select_t) x T -> answer -> evaluate``.
Resources (data sources, reward models, fine-tunings) are nodes too, with edges to the nodes
that consume them. Every node carries its op and fully resolved parameters, so the graph runs
without the source file. Reward models and fine-tunings are trained with the referenced
generator and prompter at their *default* values, so a trial that changes decoding or the
prompt reuses them; a fine-tuning is trained on prompts of the trial's prompter (the format the
fine-tuned model is searched and run with).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from aldsl.backends.base import Decoding, ServerSpec
from aldsl.compiler import specs
from aldsl.compiler.graph import ProgramGraph
from aldsl.errors import UserError
from aldsl.language import templates
from aldsl.language.check import Checked, Link, Nested, SplitLink
from aldsl.language.schema import GOLDEN_REWARDS, MODEL_REWARDS, SERVER_PARAMS, TRAINED_REWARDS
from aldsl.language.space import SearchSpace, concretize, extract, to_json_value
from aldsl.store.data import DataSpec

FORMAT = 1
CHAIN_OPS = ("prompt", "generate", "reward", "select")


def node_count(rounds: int, resources: int) -> int:
    """Nodes of a compiled program: 4 per round, input, answer and evaluate, plus resources."""
    return 4 * rounds + 3 + resources


class _Builder:
    def __init__(self, checked: Checked, trial: dict[str, dict[str, Any]], defaults: dict[str, dict[str, Any]]):
        self.checked = checked
        self.trial = trial
        self.defaults = defaults
        self.graph = ProgramGraph.empty()
        self.flow_name = checked.flow.name

    # ---- resolution of declarations into self-contained specs
    def kind_of(self, name: str) -> str:
        return self.checked.decls[name].kind

    def ctor_of(self, name: str) -> str:
        return self.checked.decls[name].ctor

    def template(self, link: Link | str, decls: dict[str, dict[str, Any]]) -> specs.Template:
        name = link.name if isinstance(link, Link) else link
        if name in self.checked.decls and self.kind_of(name) == "template":
            p = decls[name]
            return specs.Template(name, p["body"], p["system"], p["demo"], p["prefill"])
        return specs.Template.from_json(templates.builtin(name))

    def generator(self, name: str, decls: dict[str, dict[str, Any]], users: set[str]) -> specs.Generator:
        p = decls[name]
        users.add(name)
        if self.ctor_of(name) == "candidates":
            return specs.CandidatesGenerator(name, tuple(p["fields"]), p["seed"])
        finetune = p["finetune"].name if isinstance(p["finetune"], Link) else None
        if finetune:
            users.add(finetune)
        decoding = Decoding(temperature=p["temperature"], top_p=p["top_p"], top_k=p["top_k"],
                            max_tokens=p["max_tokens"], stop=tuple(p["stop"]), seed=p["seed"])
        server = ServerSpec(**{k: p[k] for k in SERVER_PARAMS}) if p["backend"] == "openai" else None
        adapter = str(Path(p["adapter"]).expanduser().resolve()) if p["adapter"] else None
        return specs.ModelGenerator(name, p["name"], decoding, p["backend"], p["device"], p["dtype"],
                                    f"finetune:{finetune}" if finetune else None, adapter, server=server)

    def prompter(self, name: str, decls: dict[str, dict[str, Any]], users: set[str]) -> specs.Prompter:
        p = decls[name]
        users.add(name)
        t = p["template"]
        if isinstance(t, Nested):
            reward = t.params["reward"].name
            template: specs.Template | specs.PerQuery = specs.PerQuery(
                f"reward:{reward}", tuple(self.template(a, decls) for a in decls[reward]["among"]))
        else:
            template = self.template(t, decls)
        demos = None
        if isinstance(p["demos"], Nested):
            d = p["demos"].params
            demos = specs.Demos(self.split(d["pool"]), d["k"], d["pick"], tuple(d["ids"]), d["seed"])
        f = p["followup"]
        followup = None if f is None else specs.CONTINUE if f == specs.CONTINUE else self.template(f, decls)
        return specs.Prompter(name, template, demos, followup, p["chat"])

    @staticmethod
    def split(s: SplitLink) -> specs.SplitRef:
        return specs.SplitRef(s.data, s.split)

    def evaluator(self, name: str, decls: dict[str, dict[str, Any]], users: set[str]) -> specs.Evaluator:
        users.add(name)
        params = dict(decls[name])
        kind = self.ctor_of(name)
        template = generator = None
        if kind == "judge":
            template = self.template(params.pop("template") or "judge", decls)
            judge = self.generator(self._flow_generator(params.pop("generator")), decls, users)
            if not isinstance(judge, specs.ModelGenerator):
                raise UserError(f"evaluator {name!r}: a judge needs a model generator, not candidates from records")
            generator = judge
        if kind == "external":
            params["base_dir"] = str(self.checked.base_dir)
        return specs.Evaluator(name, kind, _plain(params), template, generator)

    @staticmethod
    def _named(value: Any, default: Any) -> Any:
        """The name a resource parameter links to, else the default link's name (or the default)."""
        chosen = value if isinstance(value, Link) else default
        return chosen.name if isinstance(chosen, Link) else chosen

    def _flow_generator(self, g: Any) -> str:
        return self._named(g, self.trial[self.flow_name]["generator"])

    def _flow_evaluator(self, e: Any, decls: dict[str, dict[str, Any]], users: set[str]) -> specs.Evaluator:
        if isinstance(e, Link):
            return self.evaluator(e.name, decls, users)
        evals = self.defaults[self.flow_name]["evaluator"]
        first = evals[0] if isinstance(evals, list) else evals
        return self.evaluator(first.name, decls, users)

    # ---- resources
    def add_data(self, name: str) -> str:
        node = f"data:{name}"
        if node not in self.graph.g:
            p = _plain(self.trial[name])
            spec = DataSpec(kind=self.ctor_of(name), path=p["path"], input=p["input"], target=p["target"],
                            demo=p["demo"], split=p["split"], seed=p["seed"], name=name)
            self.graph.add(node, "data", spec.to_json(), uses=[name])
        return node

    def add_reward(self, name: str) -> str:
        node = f"reward:{name}"
        if node in self.graph.g:
            return node
        kind = self.ctor_of(name)
        p = dict(self.trial[name])
        users = {name}
        flow_defaults = self.defaults[self.flow_name]
        typed: dict[str, Any] = {}
        if kind in MODEL_REWARDS:
            named = p.pop("generator", None)
            generator = self.generator(self._flow_generator(named), self.defaults, users)
            if not isinstance(named, Link) and kind != "critic" and isinstance(generator, specs.ModelGenerator) \
                    and generator.finetune:
                # The flow's generator, before fine-tuning: its fine-tuning may train on this reward, and a
                # program written with a fine-tuned choice pinned must train the same reward as its search.
                users.discard(generator.finetune.split(":", 1)[1])
                generator = generator.base()
            typed["generator"] = generator
        if kind == "critic":
            typed["template"] = self.template(p.pop("template") or "critic", self.defaults)
        if kind in TRAINED_REWARDS:
            typed["prompter"] = self.prompter(self._named(p.pop("prompter", None), flow_defaults["prompter"]),
                                              self.defaults, users)
            typed["answer"] = _answer_spec(flow_defaults["answer"])
        if kind in GOLDEN_REWARDS:
            typed["evaluator"] = self._flow_evaluator(p.pop("evaluator", None), self.defaults, users)
        if kind == "binary":
            typed["among"] = tuple(self.template(a, self.defaults) for a in p.pop("among"))
        if kind == "bradley_terry" and isinstance(p.get("annotator"), Link):
            typed["annotator"] = self.evaluator(p.pop("annotator").name, self.defaults, users)
        if kind == "external":
            p["base_dir"] = str(self.checked.base_dir)
        if kind == "implicit":
            p["finetune"] = f"finetune:{p.pop('finetune').name}"
        if "data" in p:
            typed["data"] = self.split(p.pop("data"))
        spec = specs.Reward(name, kind, _plain(p), **typed)
        self.graph.add(node, "reward_model", spec.to_json(), uses=sorted(users))
        self._link_resources(node, spec.to_json())
        return node

    def add_finetune(self, name: str) -> str:
        node = f"finetune:{name}"
        if node in self.graph.g:
            return node
        kind = self.ctor_of(name)
        p = dict(self.trial[name])
        users = {name}
        flow = self.defaults[self.flow_name]
        data = self.split(p.pop("data"))
        base = self._named(p.pop("generator", None), None) or self._base_generator(name)
        generator = self.generator(base, self.defaults, users)
        if not isinstance(generator, specs.ModelGenerator):
            raise UserError(f"finetune {name!r}: generator {base!r} reads candidates from records; it has no "
                            "weights to fine-tune")
        # theta and psi coupled: the model is fine-tuned on prompts in the format the trial searches it with
        # (the trial's prompter), never on a default prompt it is then not run with.
        prompter = self.prompter(self._named(p.pop("prompter", None), self.trial[self.flow_name]["prompter"]),
                                 self.trial, users)
        evaluator = self._flow_evaluator(p.pop("evaluator", None), self.defaults, users)
        reward = p.pop("reward", None)
        spec = specs.Finetune(name, kind, data, generator.base(), prompter, _plain(p), evaluator,
                              _answer_spec(flow["answer"]), self.add_reward(reward.name) if isinstance(reward, Link)
                              else None)
        self.graph.add(node, "finetune", spec.to_json(), uses=sorted(users))
        self._link_resources(node, spec.to_json())
        return node

    def _base_generator(self, finetune: str) -> str:
        """The generator whose finetune (a value or any of its choices) is this one."""
        base = self.checked.generator_of(finetune)
        if base is None:
            raise AssertionError(f"finetune {finetune} has no generator")
        return base

    def _link_resources(self, node: str, spec: Mapping[str, Any]) -> None:
        """Edges from the data sources and resources a spec mentions into ``node``."""
        for value in _values(spec):
            if isinstance(value, dict) and set(value) == {"data", "split"}:
                self.graph.g.add_edge(self.add_data(value["data"]), node, flow="records")
            elif isinstance(value, str) and value.startswith(("reward:", "finetune:")) and value != node:
                kind, _, name = value.partition(":")
                src = self.add_reward(name) if kind == "reward" else self.add_finetune(name)
                self.graph.g.add_edge(src, node, flow="model")

    # ---- the chain
    def build(self) -> ProgramGraph:
        f = self.trial[self.flow_name]
        g = self.graph
        data = self.add_data(f["data"].name)
        g.add("input", "input", specs.Input(f["data"].name).to_json(), uses=[self.flow_name])
        g.g.add_edge(data, "input", flow="records")
        users: set[str] = set()
        gen = self.generator(f["generator"].name, self.trial, users)
        prompter_users: set[str] = set()
        prompter = self.prompter(f["prompter"].name, self.trial, prompter_users)
        if isinstance(gen, specs.ModelGenerator):
            stops = [s for s in _demo_stops(prompter) if s not in gen.decoding.stop]
            if stops:
                gen = gen.with_decoding(stop=(*gen.decoding.stop, *stops))
        samples = effective_samples(gen, f["samples"])
        reward = f["reward"].name if isinstance(f["reward"], Link) and reward_used(f, samples) else None
        reward_node = self.add_reward(reward) if reward else None
        finetune = gen.finetune if isinstance(gen, specs.ModelGenerator) else None
        finetune_node = self.add_finetune(finetune.split(":", 1)[1]) if finetune else None
        prev = "input"
        T = f["rounds"]
        for t in range(1, T + 1):
            ids = [g.chain(op, t) for op in CHAIN_OPS]
            g.add(ids[0], "prompt", specs.Prompt(prompter, t).to_json(), round=t,
                  uses=sorted(prompter_users | {self.flow_name}))
            g.add(ids[1], "generate", specs.Generate(gen, samples, t).to_json(), round=t,
                  uses=sorted(users | {self.flow_name}))
            g.add(ids[2], "reward", specs.Score(reward_node, t).to_json(), round=t,
                  uses=[self.flow_name] + ([reward] if reward else []))
            g.add(ids[3], "select", specs.Keep(f["keep"], t, t == T).to_json(), round=t, uses=[self.flow_name])
            g.g.add_edge(prev, ids[0], flow="parents" if t > 1 else "queries")
            for a, b, what in zip(ids, ids[1:], ("prompts", "samples", "rewards")):
                g.g.add_edge(a, b, flow=what)
            if reward_node:
                g.g.add_edge(reward_node, ids[2], flow="model")
            if finetune_node:
                g.g.add_edge(finetune_node, ids[1], flow="model")
            self._link_resources(ids[0], prompter.to_json())
            prev = ids[3]
        choose = specs.Choose(f["select"], f["pool"], reward_node, _answer_spec(f["answer"]))
        g.add("answer", "answer", choose.to_json(), uses=[self.flow_name])
        g.g.add_edge(prev, "answer", flow="candidates")
        evals = f["evaluator"] if isinstance(f["evaluator"], list) else [f["evaluator"]]
        eval_users: set[str] = set()
        evaluate = specs.Evaluate(tuple(self.evaluator(e.name, self.trial, eval_users) for e in evals))
        g.add("evaluate", "evaluate", evaluate.to_json(), uses=sorted(eval_users | {self.flow_name}))
        g.g.add_edge("answer", "evaluate", flow="answers")
        g.g.add_edge("input", "evaluate", flow="records")
        return g


def effective_samples(gen: specs.Generator, samples: int) -> int:
    """L, or 1 for greedy decoding: greedy samples of one prompt are identical, so the other L - 1 would
    only cost tokens (and select among copies gives the same answer)."""
    greedy = isinstance(gen, specs.ModelGenerator) and gen.decoding.temperature == 0
    return 1 if greedy else samples


def reward_used(flow: Mapping[str, Any], samples: int) -> bool:
    """Whether the flow's reward changes anything: it ranks the kept thoughts and feeds the history of
    rounds t > 1, and ``select = argmax / weighted_vote`` reads it among several candidates. Otherwise
    (one round, and one candidate or ``first`` / ``majority``) it is neither fitted nor called."""
    return flow["rounds"] > 1 or (flow["select"] in ("argmax", "weighted_vote") and samples > 1)


def _demo_stops(prompter: specs.Prompter) -> list[str]:
    """Where the next demonstration would start (``"\\nQ:"``) when the prompt shows demonstrations: a
    model that has answered goes on to invent question-answer pairs, whose answers would be read."""
    if not prompter.shows_demos:
        return []
    heads = [(t.demo or "").split("{x}", 1)[0].strip() for t in prompter.templates if "{x}" in (t.demo or "")]
    return list(dict.fromkeys("\n" + h for h in heads if h))


def _answer_spec(answer: Any) -> specs.Answer:
    if isinstance(answer, Nested):
        return specs.Answer(answer.ctor, _plain(next(iter(answer.params.values()))))
    return specs.Answer(answer)


def _plain(value: Any) -> Any:
    """Checked values -> JSON values (links become names)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Nested):
        return {"call": value.ctor, **_plain(value.params)}
    if isinstance(value, SplitLink):
        return {"data": value.data, "split": value.split}
    return to_json_value(value)


def _values(spec: Any):
    """Every value inside nested dicts and lists (the dicts themselves included)."""
    stack = [spec]
    while stack:
        v = stack.pop()
        yield v
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def compile_checked(checked: Checked, values: Mapping[str, Any] | None = None,
                    rewards: Sequence[str] = ()) -> tuple[ProgramGraph, SearchSpace]:
    """Compile a checked program with the given search values (defaults for the rest); ``rewards``
    names reward declarations to add as resource nodes even where the flow does not use them."""
    space = extract(checked)
    chosen = space.validate(values or {})
    builder = _Builder(checked, concretize(checked, chosen), concretize(checked, {}))
    graph = builder.build()
    for name in rewards:
        builder.add_reward(name)
    space = SearchSpace([_with_targets(p, graph, checked.flow.name) for p in space])
    graph.g.graph.update(json.loads(json.dumps({
        "format": FORMAT,
        "program": checked.name,
        "description": checked.program.description,
        "source": checked.program.path,
        "base_dir": str(checked.base_dir),
        "values": chosen,
        "search_space": space.to_json(),
        "auto_space": list(checked.auto),
        "optimize": _optimize_spec(checked, builder),
    })))
    return graph, space


def _optimize_spec(checked: Checked, builder: _Builder) -> dict[str, Any] | None:
    """The optimize declaration, resolved (report defaults to the flow data's test split)."""
    d = checked.optimize
    if d is None:
        return None
    p = dict(d.params)
    spec: dict[str, Any] = {"name": d.name, "method": d.ctor, "objective": p.pop("objective").name,
                            "on": builder.split(p.pop("on")).to_json()}
    report = p.pop("report")
    spec["report"] = builder.split(report).to_json() if report else {"data": spec["on"]["data"], "split": "test"}
    if "reward" in p:
        spec["reward"] = p.pop("reward").name
    spec.update(_plain(p))
    return spec


_FLOW_TARGETS = {"samples": ("generate",), "rounds": CHAIN_OPS + ("answer",), "keep": ("select",),
                 "select": ("answer",), "pool": ("answer",), "answer": ("answer",), "reward": ("reward", "answer"),
                 "generator": ("generate",), "prompter": ("prompt",)}


def _with_targets(p, graph: ProgramGraph, flow: str):
    decl, _, rest = p.name.partition(".")
    if decl == flow:
        ops = _FLOW_TARGETS.get(rest.split(".")[0], ())
        targets = [n for n, a in graph.g.nodes(data=True) if a["op"] in ops]
    else:
        # rewards are built from defaults: only their own declaration's values reach them; a fine-tuning
        # also takes the trial's prompter
        targets = [n for n, a in graph.g.nodes(data=True) if decl in a.get("uses", ())
                   and (a["op"] != "reward_model" or a["params"]["name"] == decl)]
    return type(p)(**{**p.__dict__, "targets": tuple(targets)})
