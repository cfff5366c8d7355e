"""``space = auto`` in ``optuna(...)``: a search space proposed from what the program declares and
what its train split holds (the paper's Insight 3: the data decides the reward and theta).

The proposal is written into the program text, so everything downstream (the search, the pinned
``optimized.alp``, workers compiling the file) sees an ordinary program. Only parameters the program
leaves at their defaults are proposed; a value written in the program is kept as written, so
applying the proposal twice changes nothing.

| the train split holds | reward | theta |
|---|---|---|
| golden answers and worked solutions (a demo field longer than the answer) | outcome (ORM) | sft |
| numeric golden answers only, that arithmetic over the question's numbers reaches (in half the records or more) | outcome (ORM) | sft on worked solutions derived from the answers (`solutions = arithmetic`) |
| other golden answers only | outcome (ORM) | rejection: rationales sampled with the trial's prompt, kept when the golden check accepts them (rationalized with the answer as a hint where none does: STaR) |
| demonstrations, no answers | discriminator | sft |
| preference pairs (chosen / rejected fields) | bradley_terry | dpo on the pairs |
| nothing usable (or no train split) | critic | none |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aldsl.store.derive import derive
from aldsl.language import ast
from aldsl.language.check import Checked, Link, SearchVal, SplitLink
from aldsl.language.overrides import arg_index
from aldsl.language.parser import parse
from aldsl.language.schema import BY_KIND
from aldsl.store.data import DataError, DataSpec, load

TEMPLATES = ("zero_shot", "cot", "direct")
MAX_DEMOS, MAX_SAMPLES, SAMPLE_TEMPERATURE = 3, 4, 0.7
TRAIN_QUERIES, FINETUNE_STEPS = 32, 20
WORKED = 0.5  # a demo field holds worked solutions when it is longer than the answer in this share of records
DERIVABLE, PROBE = 0.5, 100  # answers are derivable when a chain reaches this share of the first PROBE records
DERIVED_STEPS = 60  # derived solutions are short and clean: more steps pay (dev 0.433 on twostep at 60, bench/RESULTS.md)


@dataclass
class Proposal:
    """The text edits of the proposal and, per edit, why."""

    source: str
    args: dict[int, tuple[bool, list[str]]] = field(default_factory=dict)  # before ")": (call has args, new args)
    decls: dict[int, list[str]] = field(default_factory=dict)  # line starts: new declarations
    reasons: list[str] = field(default_factory=list)

    @property
    def edits(self) -> bool:
        return bool(self.args or self.decls)

    def offset(self, line: int, col: int) -> int:
        lines = self.source.split("\n")
        return sum(len(x) + 1 for x in lines[: line - 1]) + col - 1

    def add_arg(self, call: ast.Call, text: str) -> None:
        at = self.offset(call.pos.end_line, call.pos.end_col) - 1  # before ")"
        self.args.setdefault(at, (bool(call.args), []))[1].append(text)

    def add_decl(self, before: ast.Decl, text: str) -> None:
        self.decls.setdefault(self.offset(before.pos.line, 1), []).append(text + "\n")

    def text(self) -> str:
        edits = [(at, (", " if had else "") + ", ".join(new)) for at, (had, new) in self.args.items()]
        edits += [(at, "".join(texts)) for at, texts in self.decls.items()]
        source = self.source
        for at, text in sorted(edits, reverse=True):
            source = source[:at] + text + source[at:]
        return source


def requested(checked: Checked) -> bool:
    d = checked.optimize
    return d is not None and d.ctor == "optuna" and d.params.get("space") == "auto"


def propose(checked: Checked) -> tuple[ast.Program, list[str]]:
    """The program with the auto space written in, and the reasons (one line per choice)."""
    program = checked.program
    prop = Proposal(program.source)
    decls = {d.name: d for d in program.decls}
    flow_c = checked.flow
    flow = decls[flow_c.name]
    data_name = flow_c.params["data"].name
    kind, why, train = _data_kind(checked, data_name)
    prop.reasons.append(f"data: {why}")
    written = _written(flow, "flow")
    reward = _existing(flow_c.params.get("reward"))
    if reward is None and "reward" not in written:
        reward = _unique(checked, f"auto_{_REWARD_NAMES[kind]}")
        prop.add_decl(flow, f"reward {reward} = {_reward_text(kind, data_name)}  # space = auto")
        prop.add_arg(flow.call, f"reward = {reward}")
        prop.reasons.append(f"reward: {reward} = {_REWARD_CTOR[kind]} ({_REWARD_WHY[kind]}); fitted only when a "
                            "trial selects with it")
    gen_name, prompter_name = _existing(flow_c.params["generator"]), _existing(flow_c.params["prompter"])
    gen = decls.get(gen_name or "")
    model = gen is not None and gen.call.name == "model"
    if "samples" not in written and model:
        prop.add_arg(flow.call, f"samples = 1 in [1, {MAX_SAMPLES}]")
        prop.reasons.append(f"L: samples in [1, {MAX_SAMPLES}] (greedy trials run one sample, so L > 1 pays only "
                            f"with temperature > 0)")
    if "select" not in written:
        rules = ["first", "majority"] + (["argmax", "weighted_vote"] if reward else [])
        prop.add_arg(flow.call, f"select = first in {{{', '.join(rules)}}}")
        prop.reasons.append(f"select in {{{', '.join(rules)}}}" +
                            (f": argmax and weighted_vote because {reward} scores candidates" if reward
                             else ": no reward to rank by"))
    if model:
        gw = _written(gen, "generator")
        if "temperature" not in gw:
            prop.add_arg(gen.call, f"temperature = 0.0 in {{0.0, {SAMPLE_TEMPERATURE}}}")
            prop.reasons.append(f"tau: temperature in {{0.0, {SAMPLE_TEMPERATURE}}} (greedy, or diverse samples for L > 1)")
        if "finetune" not in gw and kind in _THETA:
            theta = _unique(checked, f"auto_{_THETA[kind][0]}")
            body = _THETA[kind][1].format(data=data_name, q=TRAIN_QUERIES, steps=FINETUNE_STEPS,
                                          derived_steps=DERIVED_STEPS)
            prop.add_decl(flow, f"finetune {theta} = {body}  # space = auto")
            prop.add_arg(gen.call, f"finetune = none in {{none, {theta}}}")
            prop.reasons.append(f"theta: finetune in {{none, {theta}}}: {_THETA[kind][2]}; it trains on prompts of "
                                "the trial's prompter (the format it is searched with)")
    prompter = decls.get(prompter_name or "")
    if prompter is not None and prompter.call.name == "prompt":
        pw = _written(prompter, "prompter")
        if "template" not in pw:
            prop.add_arg(prompter.call, f"template = zero_shot in {{{', '.join(TEMPLATES)}}}")
            prop.reasons.append(f"psi: template in {{{', '.join(TEMPLATES)}}} (the built-in templates)")
        if "demos" not in pw and train:
            prop.add_arg(prompter.call, f"demos = demos({data_name}.train, k = 0 in [0, {MAX_DEMOS}], "
                                        "pick = random in {random, nearest})")
            prop.reasons.append(f"psi: demos k in [0, {MAX_DEMOS}], pick in {{random, nearest}} from {data_name}.train "
                                "(the data has a train split)")
    if not prop.edits:
        prop.reasons.append("nothing to add: every parameter auto proposes is written in the program")
    else:
        prop.reasons.append("start: after the defaults, the search tries the recipe the data suggests: "
                            f"{RECIPE_TEXT}")
    return parse(prop.text(), program.path), prop.reasons


RECIPE_TEXT = "theta fine-tuned, then best of 4 samples at temperature 0.7 by majority vote"


def recipe(checked: Checked, space_names: list[str]) -> dict[str, Any]:
    """The second trial of an auto search (the paper's Fig. 1: fine-tune theta, then sample L and select):
    the proposed fine-tuning, 4 samples at 0.7, majority; only values the auto space searches."""
    flow = checked.flow
    gen = _existing(flow.params["generator"])
    values: dict[str, Any] = {f"{flow.name}.samples": MAX_SAMPLES, f"{flow.name}.select": "majority"}
    if gen:
        values[f"{gen}.temperature"] = SAMPLE_TEMPERATURE
        thetas = [d.name for d in checked.of_kind("finetune") if d.name.startswith("auto_")]
        if thetas:
            values[f"{gen}.finetune"] = thetas[0]
    return {k: v for k, v in values.items() if k in space_names}


_REWARD_NAMES = {"worked": "orm", "arithmetic": "orm", "answers": "orm", "demos": "discriminator",
                 "preferences": "bt", "none": "critic"}
_REWARD_CTOR = {"worked": "outcome", "arithmetic": "outcome", "answers": "outcome", "demos": "discriminator",
                "preferences": "bradley_terry", "none": "critic"}
_REWARD_WHY = {"worked": "golden answers: an outcome reward model",
               "arithmetic": "golden answers: an outcome reward model",
               "answers": "golden answers: an outcome reward model",
               "demos": "demonstrations without answers: a discriminator against the model's own samples",
               "preferences": "preference pairs: a Bradley-Terry reward model",
               "none": "no labels: the model grades its own candidates"}
_THETA = {
    "worked": ("sft", "sft({data}.train, steps = {steps})",
               "sft, because the demo field holds worked solutions"),
    "demos": ("sft", "sft({data}.train, steps = {steps})", "sft on the demonstrations"),
    "arithmetic": ("derived", "sft({data}.train, solutions = arithmetic, steps = {derived_steps})",
                   "sft on worked solutions derived from the golden answers (the chain of +, -, *, / over the "
                   "question's numbers that reaches each answer), because the records hold numeric answers only"),
    "answers": ("rationales", "rejection({data}.train, samples = 4, queries = {q}, steps = {steps}, rationalize = true)",
                "rejection sampling, because the records hold answers only: rationales are sampled with the trial's "
                "prompt on the train split, those the golden check accepts are kept (a query none passes is sampled "
                "again with its answer as a hint) and fine-tuned on (STaR / RAFT)"),
    "preferences": ("dpo", "dpo({data}.train, pairs = fields, steps = {steps})", "dpo on the preference pairs"),
}


def _reward_text(kind: str, data: str) -> str:
    if kind == "none":
        return "critic()"
    if kind == "preferences":
        return f"bradley_terry({data}.train, queries = {TRAIN_QUERIES})"
    extra = "samples = 4, " if kind != "demos" else ""
    return f"{_REWARD_CTOR[kind]}({data}.train, {extra}queries = {TRAIN_QUERIES})"


def _data_kind(checked: Checked, data: str) -> tuple[str, str, bool]:
    """What the train split of ``data`` holds ("worked", "arithmetic", "answers", "demos", "preferences",
    "none"), why, and whether there is a train split. Reads the train split only."""
    p = checked.decls[data].params
    split = p["split"]
    if isinstance(split, dict) and "train" not in split:
        return "none", "no train split: nothing to train a reward or theta on", False
    spec = DataSpec(kind=checked.decls[data].ctor, path=p["path"], input=p["input"], target=p["target"],
                    demo=p["demo"], split=split, seed=p["seed"], name=data)
    try:
        dataset = load(spec, checked.base_dir)
        records = dataset.split("train") if "train" in dataset.names else []
    except DataError:
        records = []
    if not records:
        return "none", f"{data} has no train records: nothing to train a reward or theta on", False
    n = len(records)
    if all("chosen" in r and "rejected" in r for r in records):
        return "preferences", f"{data}.train ({n} records) holds preference pairs (chosen, rejected)", True
    answers = p["target"] is not None and all(str(r.get("y") or "").strip() for r in records)
    demos = p["demo"] is not None and all(str(r.get("demo") or "").strip() for r in records)
    if answers and demos:
        longer = sum(len(str(r["demo"]).split()) > len(str(r["y"]).split()) + 2 for r in records)
        if longer >= WORKED * n:
            return "worked", (f"{data}.train ({n} records) has golden answers ({p['target']}) and worked solutions "
                              f"({p['demo']}: longer than the answer in {longer} of {n})"), True
    if answers:
        probe = records[:PROBE]
        derived = sum(derive(str(r["x"]), r["y"]) is not None for r in probe)
        if derived >= DERIVABLE * len(probe):
            return "arithmetic", (f"{data}.train ({n} records) has golden answers ({p['target']}) but no worked "
                                  f"solutions; an arithmetic chain over the question's numbers reaches the answer in "
                                  f"{derived} of the first {len(probe)}"), True
        return "answers", f"{data}.train ({n} records) has golden answers ({p['target']}) but no worked solutions", True
    if demos:
        return "demos", f"{data}.train ({n} records) has demonstrations ({p['demo']}) but no golden answers", True
    return "none", f"{data}.train ({n} records) has no golden answers, demonstrations or preferences", True


def _written(decl: ast.Decl, kind: str) -> set[str]:
    """The parameters a declaration writes (by keyword or position)."""
    ctor = BY_KIND[kind][decl.call.name]
    return {p.name for p in ctor.params if arg_index(decl.call, ctor, p.name) is not None}


def _existing(value: Any) -> str | None:
    """A declaration name a flow parameter links to (None when unset or searched)."""
    if isinstance(value, Link):
        return value.name
    if isinstance(value, (SearchVal, SplitLink)) or value is None:
        return None
    return None


def _unique(checked: Checked, name: str) -> str:
    return next(n for n in (f"{name}{i or ''}" for i in range(100)) if n not in checked.decls)
