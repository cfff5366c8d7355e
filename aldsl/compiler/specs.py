"""Typed specs: what the compiler hands the runtime, one frozen dataclass per thing a node runs.

Every node of a compiled graph stores its parameters as JSON (so a graph saves, reloads and
hashes without the source); these classes are the typed view of that JSON. Each one checks its
own values when built, reads itself with ``from_json`` and writes itself back with ``to_json``
(``from_json(d).to_json() == d`` for every node the compiler writes, a tested invariant), and
changes are made with ``dataclasses.replace``, never by patching dicts. Content keys of trained
resources hash ``unnamed(spec.to_json())``, so a spec's JSON form is its identity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping, Union

from aldsl.backends.base import Decoding, ServerSpec
from aldsl.errors import UserError
from aldsl.language.schema import BY_KIND
from aldsl.store.data import DataSpec


class SpecError(UserError):
    """A graph node's parameters are not what this version of aldsl writes (a damaged or foreign graph)."""


def _need(d: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in d:
        raise SpecError(f"{what} spec has no {key!r} (its keys: {', '.join(sorted(d))}); recompile the program "
                        "with `aldsl compile FILE`")
    return d[key]


def _frozen(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


# ---------------------------------------------------------------- small parts
@dataclass(frozen=True)
class SplitRef:
    """``data.split``: the records of one split of a data source."""

    data: str
    split: str

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "SplitRef":
        return SplitRef(_need(d, "data", "split"), _need(d, "split", "split"))

    def to_json(self) -> dict[str, Any]:
        return {"data": self.data, "split": self.split}

    def __str__(self) -> str:
        return f"{self.data}.{self.split}"


@dataclass(frozen=True)
class Template:
    """A prompt template: its body with ``{slots}``, an optional system message, the format of one
    demonstration and a prefill that starts the model's answer."""

    name: str
    body: str
    system: str | None = None
    demo: str | None = None
    prefill: str | None = None

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "Template":
        return Template(_need(d, "name", "template"), _need(d, "body", "template"), d.get("system"), d.get("demo"),
                        d.get("prefill"))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "body": self.body, "system": self.system, "demo": self.demo,
                "prefill": self.prefill}


@dataclass(frozen=True)
class PerQuery:
    """A template chosen per query among ``among`` by a binary reward model (Prompt-OIRL)."""

    reward: str  # the reward_model node, ``reward:NAME``
    among: tuple[Template, ...]

    def __post_init__(self) -> None:
        if not self.among:
            raise SpecError(f"per_query({self.reward}) has no candidate templates")

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "PerQuery":
        return PerQuery(d["per_query"], tuple(Template.from_json(t) for t in _need(d, "among", "per_query")))

    def to_json(self) -> dict[str, Any]:
        return {"per_query": self.reward, "among": [t.to_json() for t in self.among]}


@dataclass(frozen=True)
class Demos:
    """Few-shot demonstrations K_m(x): ``k`` records of ``pool`` picked per query."""

    pool: SplitRef
    k: int
    pick: str
    ids: tuple[Any, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 0 or self.pick not in ("random", "nearest", "fixed"):
            raise SpecError(f"demos: k must be >= 0 and pick one of random, nearest, fixed (got k={self.k}, "
                            f"pick={self.pick!r})")

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "Demos":
        return Demos(SplitRef.from_json(d["pool"]), d["k"], d["pick"], tuple(d.get("ids") or ()), d.get("seed", 0))

    def to_json(self) -> dict[str, Any]:
        return {"pool": self.pool.to_json(), "k": self.k, "pick": self.pick, "ids": list(self.ids), "seed": self.seed}


CONTINUE = "continue"
FINETUNE_KINDS = tuple(BY_KIND["finetune"])


@dataclass(frozen=True)
class Prompter:
    """P_psi: the round-1 template (or a per-query choice), demonstrations, and what rounds t > 1 see:
    a feedback template showing earlier thoughts, ``continue`` (extend the kept thought), or nothing."""

    name: str
    template: Template | PerQuery
    demos: Demos | None = None
    followup: Template | str | None = None
    chat: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.followup, str) and self.followup != CONTINUE:
            raise SpecError(f"prompter {self.name!r}: followup must be a template, {CONTINUE!r} or none")

    @property
    def continues(self) -> bool:
        """Rounds t > 1 extend the kept partial thoughts (tree-of-thought style)."""
        return self.followup == CONTINUE

    @property
    def templates(self) -> tuple[Template, ...]:
        """Every template round 1 may use."""
        return self.template.among if isinstance(self.template, PerQuery) else (self.template,)

    @property
    def shows_demos(self) -> bool:
        return self.demos is not None and self.demos.k > 0

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "Prompter":
        t = _need(d, "template", "prompter")
        f = d.get("followup")
        return Prompter(d["name"], PerQuery.from_json(t) if "per_query" in t else Template.from_json(t),
                        Demos.from_json(d["demos"]) if d.get("demos") else None,
                        f if f is None or isinstance(f, str) else Template.from_json(f), d.get("chat", True))

    def to_json(self) -> dict[str, Any]:
        followup = self.followup.to_json() if isinstance(self.followup, Template) else self.followup
        return {"name": self.name, "template": self.template.to_json(),
                "demos": self.demos.to_json() if self.demos else None, "followup": followup, "chat": self.chat}


@dataclass(frozen=True)
class ModelGenerator:
    """l_theta,tau: a model (and the fine-tuning of theta applied to it) with its decoding tau.
    ``checkpoint`` is never compiled: fine-tuning code sets it to sample from weights it trained."""

    name: str
    model: str
    decoding: Decoding
    backend: str = "transformers"
    device: str = "auto"
    dtype: str = "auto"
    finetune: str | None = None  # the finetune node, ``finetune:NAME``
    checkpoint: str | None = None
    server: ServerSpec | None = None  # backend = openai: where the model is served

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "ModelGenerator":
        server = ServerSpec(**d["server"]) if d.get("server") else None
        return ModelGenerator(d["name"], d["model"], Decoding.from_json(_need(d, "decoding", "generator")),
                              d.get("backend", "transformers"), d.get("device", "auto"), d.get("dtype", "auto"),
                              d.get("finetune"), d.get("checkpoint"), server)

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "model": self.model, "backend": self.backend, "device": self.device,
               "dtype": self.dtype, "finetune": self.finetune, "decoding": self.decoding.to_json()}
        if self.checkpoint is not None:
            out["checkpoint"] = self.checkpoint
        if self.server is not None:  # only then, so local generators keep their content hashes
            out["server"] = asdict(self.server)
        return out

    def with_decoding(self, **changes: Any) -> "ModelGenerator":
        """The same generator with some decoding parameters changed (e.g. ``temperature = 0.8``)."""
        return replace(self, decoding=replace(self.decoding, **changes))

    def base(self) -> "ModelGenerator":
        """The generator before fine-tuning: no finetune node, no checkpoint."""
        return replace(self, finetune=None, checkpoint=None)


@dataclass(frozen=True)
class CandidatesGenerator:
    """Candidates read from record fields instead of sampled (e.g. the two sides of a preference pair)."""

    name: str
    candidates: tuple[str, ...]
    seed: int = 0

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "CandidatesGenerator":
        return CandidatesGenerator(d["name"], tuple(d["candidates"]), d.get("seed", 0))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "candidates": list(self.candidates), "seed": self.seed}


Generator = Union[ModelGenerator, CandidatesGenerator]


def generator_from_json(d: Mapping[str, Any]) -> Generator:
    return CandidatesGenerator.from_json(d) if "candidates" in d else ModelGenerator.from_json(d)


@dataclass(frozen=True)
class Answer:
    """How the answer is read from a candidate: an extraction kind and its argument."""

    kind: str
    arg: Any = None

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "Answer":
        return Answer(d["kind"], d.get("arg"))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "arg": self.arg}


@dataclass(frozen=True)
class Evaluator:
    """E: an evaluator kind with its parameters; an LLM judge also has its prompt and its model."""

    name: str
    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)
    template: Template | None = None
    generator: ModelGenerator | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _frozen(self.params))
        if self.kind == "judge" and (self.template is None or self.generator is None):
            raise SpecError(f"evaluator {self.name!r}: a judge needs its template and generator")

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "Evaluator":
        params = dict(_need(d, "params", "evaluator"))
        template = Template.from_json(params.pop("template")) if d["kind"] == "judge" else None
        generator = ModelGenerator.from_json(params.pop("generator")) if d["kind"] == "judge" else None
        return Evaluator(d["name"], d["kind"], params, template, generator)

    def to_json(self) -> dict[str, Any]:
        params = dict(self.params)
        if self.template is not None:
            params["template"] = self.template.to_json()
        if self.generator is not None:
            params["generator"] = self.generator.to_json()
        return {"name": self.name, "kind": self.kind, "params": params}


# ---------------------------------------------------------------- resources
def _settings(d: Mapping[str, Any], typed: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in typed}


class _Settings:
    """A resource's own parameters, read as ``spec["samples"]`` (a missing one names the resource)."""

    name: str
    kind: str
    settings: Mapping[str, Any]

    def __getitem__(self, key: str) -> Any:
        if key not in self.settings:
            raise SpecError(f"{type(self).__name__.lower()} {self.name!r} ({self.kind}) has no setting {key!r}; "
                            "recompile the program")
        return self.settings[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)


@dataclass(frozen=True)
class Reward(_Settings):
    """R: a reward model of one family (``kind``), with the generator, prompter and golden check it
    trains with where it has them; ``settings`` holds the family's own parameters (samples, margin,
    epochs, features, ...) exactly as declared."""

    name: str
    kind: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    data: SplitRef | None = None
    generator: Generator | None = None
    prompter: Prompter | None = None
    answer: Answer | None = None
    evaluator: Evaluator | None = None
    annotator: Evaluator | None = None
    template: Template | None = None
    among: tuple[Template, ...] | None = None

    _TYPED = ("name", "kind", "data", "generator", "prompter", "answer", "evaluator", "annotator", "template",
              "among")

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", _frozen(self.settings))

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "Reward":
        def opt(key: str, read: Any) -> Any:
            value = d.get(key)
            return read(value) if isinstance(value, dict) else None

        typed = tuple(k for k in Reward._TYPED if k in ("name", "kind") or isinstance(d.get(k), (dict, list)))
        among = d.get("among")
        return Reward(d["name"], d["kind"], _settings(d, typed), opt("data", SplitRef.from_json),
                      opt("generator", generator_from_json), opt("prompter", Prompter.from_json),
                      opt("answer", Answer.from_json), opt("evaluator", Evaluator.from_json),
                      opt("annotator", Evaluator.from_json), opt("template", Template.from_json),
                      tuple(Template.from_json(t) for t in among) if isinstance(among, list) else None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, **self.settings}
        for key in self._TYPED[2:]:
            value = getattr(self, key)
            if value is not None:
                out[key] = [t.to_json() for t in value] if key == "among" else value.to_json()
        return out


@dataclass(frozen=True)
class Finetune(_Settings):
    """theta: a fine-tuning of ``generator`` (its base weights) on ``data``, with the prompts of
    ``prompter``; ``reward`` (a reward_model node) ranks samples for rejection and iterative kinds;
    ``settings`` holds steps, lr, batch, lora, samples, rounds, queries... as declared."""

    name: str
    kind: str
    data: SplitRef
    generator: ModelGenerator
    prompter: Prompter
    settings: Mapping[str, Any] = field(default_factory=dict)
    evaluator: Evaluator | None = None
    answer: Answer | None = None
    reward: str | None = None

    _TYPED = ("name", "kind", "data", "generator", "prompter", "evaluator", "answer", "reward")

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", _frozen(self.settings))
        if self.kind not in FINETUNE_KINDS:
            raise SpecError(f"finetune {self.name!r}: unknown kind {self.kind!r} ({', '.join(FINETUNE_KINDS)})")

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "Finetune":
        return Finetune(d["name"], d["kind"], SplitRef.from_json(d["data"]), ModelGenerator.from_json(d["generator"]),
                        Prompter.from_json(d["prompter"]), _settings(d, Finetune._TYPED),
                        Evaluator.from_json(d["evaluator"]) if d.get("evaluator") else None,
                        Answer.from_json(d["answer"]) if d.get("answer") else None, d.get("reward"))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "data": self.data.to_json(),
                "generator": self.generator.to_json(), "prompter": self.prompter.to_json(),
                "evaluator": self.evaluator.to_json() if self.evaluator else None,
                "answer": self.answer.to_json() if self.answer else None, "reward": self.reward, **self.settings}


# ---------------------------------------------------------------- the chain of Eq. 1
@dataclass(frozen=True)
class Input:
    data: str

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "Input":
        return Input(d["data"])

    def to_json(self) -> dict[str, Any]:
        return {"data": self.data}


@dataclass(frozen=True)
class Prompt:
    """Round ``round``'s prompts."""

    prompter: Prompter
    round: int

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "Prompt":
        return Prompt(Prompter.from_json({k: v for k, v in d.items() if k != "round"}), d["round"])

    def to_json(self) -> dict[str, Any]:
        return {**self.prompter.to_json(), "round": self.round}


@dataclass(frozen=True)
class Generate:
    """L samples of each prompt of round ``round``."""

    generator: Generator
    samples: int
    round: int

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise SpecError(f"generate round {self.round}: samples must be >= 1, got {self.samples}")

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "Generate":
        return Generate(generator_from_json(d["generator"]), d["samples"], d["round"])

    def to_json(self) -> dict[str, Any]:
        return {"generator": self.generator.to_json(), "samples": self.samples, "round": self.round}


@dataclass(frozen=True)
class Score:
    """Rewards of round ``round``'s candidates (``reward`` is a reward_model node, or None)."""

    reward: str | None
    round: int

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "Score":
        return Score(d.get("reward"), d["round"])

    def to_json(self) -> dict[str, Any]:
        return {"reward": self.reward, "round": self.round}


@dataclass(frozen=True)
class Keep:
    """The ``keep`` best candidates of round ``round`` become the parents of the next."""

    keep: int
    round: int
    last: bool

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "Keep":
        return Keep(d["keep"], d["round"], d["last"])

    def to_json(self) -> dict[str, Any]:
        return {"keep": self.keep, "round": self.round, "last": self.last}


@dataclass(frozen=True)
class Choose:
    """The answer: a selection rule over the last round's (or every round's) candidates, then extraction."""

    select: str
    pool: str
    reward: str | None
    answer: Answer

    def __post_init__(self) -> None:
        if self.pool not in ("last", "all"):
            raise SpecError(f"answer: pool must be last or all, got {self.pool!r}")

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "Choose":
        return Choose(d["select"], d["pool"], d.get("reward"), Answer.from_json(d["answer"]))

    def to_json(self) -> dict[str, Any]:
        return {"select": self.select, "pool": self.pool, "reward": self.reward, "answer": self.answer.to_json()}


@dataclass(frozen=True)
class Evaluate:
    evaluators: tuple[Evaluator, ...]

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "Evaluate":
        return Evaluate(tuple(Evaluator.from_json(e) for e in d["evaluators"]))

    def to_json(self) -> dict[str, Any]:
        return {"evaluators": [e.to_json() for e in self.evaluators]}


NodeSpec = Union[DataSpec, Reward, Finetune, Input, Prompt, Generate, Score, Keep, Choose, Evaluate]

SPECS: dict[str, type] = {"data": DataSpec, "reward_model": Reward, "finetune": Finetune, "input": Input,
                          "prompt": Prompt, "generate": Generate, "reward": Score, "select": Keep, "answer": Choose,
                          "evaluate": Evaluate}
"""The spec class of every node op; an op not listed here is an unknown node kind."""


def unnamed(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A resource spec's JSON without the names of its declarations and of the generator and prompter
    it uses: names never change what a resource computes, so content keys leave them out."""
    out = {k: v for k, v in spec.items() if k != "name"}
    for key in ("generator", "prompter"):
        if isinstance(out.get(key), dict):
            out[key] = {k: v for k, v in out[key].items() if k != "name"}
    return out
