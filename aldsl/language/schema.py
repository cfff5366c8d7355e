"""Every constructor of the language and its parameters: the one source of truth for the
checker, the compiler and the language reference (``aldsl doc`` prints it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REQUIRED = object()
TUNES = ("head", "top", "lora", "full")  # how a trained reward learns (aldsl.rewards.backbone)


@dataclass(frozen=True)
class Type:
    """A parameter type. ``kind`` is one of: int float bool str strs path enum ref refs split data
    fractions call json none, or ``union`` of ``options`` (other Types)."""

    kind: str
    options: tuple[Any, ...] = ()  # enum values, ref target kinds, call constructor names, union members
    min: float | None = None
    max: float | None = None
    min_open: bool = False  # min is exclusive

    def describe(self) -> str:
        if self.kind == "union":
            return " or ".join(t.describe() for t in self.options)
        if self.kind == "enum":
            return "one of " + ", ".join(self.options)
        if self.kind == "ref":
            kinds = "/".join(self.options)
            return f"the name of {'an' if kinds[0] in 'aeiou' else 'a'} {kinds}"
        if self.kind == "refs":
            return "a list of " + "/".join(self.options) + " names"
        if self.kind == "call":
            return "/".join(f"{o}(...)" for o in self.options)
        return {
            "int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
            "strs": "a list of strings", "path": "a file path (a string)", "split": "a split such as problems.train",
            "data": "the name of a data declaration",
            "fractions": "split fractions such as {train: 0.6, dev: 0.2, test: 0.2} or a field name",
            "json": "any value", "none": "none",
        }[self.kind]


def t_int(min: float | None = None, max: float | None = None) -> Type:
    return Type("int", min=min, max=max)


def t_float(min: float | None = None, max: float | None = None, min_open: bool = False) -> Type:
    return Type("float", min=min, max=max, min_open=min_open)


def t_enum(*values: str) -> Type:
    return Type("enum", values)


def t_ref(*kinds: str) -> Type:
    return Type("ref", kinds)


def t_call(*names: str) -> Type:
    return Type("call", names)


def t_or(*types: Type) -> Type:
    return Type("union", types)


BOOL, STR, STRS, PATH, SPLIT, DATA, JSON = (Type(k) for k in ("bool", "str", "strs", "path", "split", "data", "json"))
NONE = Type("none")


@dataclass(frozen=True)
class Param:
    name: str
    type: Type
    default: Any = REQUIRED
    doc: str = ""
    positional: bool = False
    searchable: bool = True

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Constructor:
    kind: str  # declaration kind, or "nested" for calls used as values
    name: str
    doc: str
    params: tuple[Param, ...]
    paper: str = ""  # the symbol of the paper it stands for

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


FEATURES = t_enum("hidden", "minilm")
ANSWERS = ("text", "number", "line", "code", "json")
SELECT = ("first", "argmax", "majority", "weighted_vote")


def _data_params() -> tuple[Param, ...]:
    return (
        Param("path", PATH, doc="the file, relative to the program", positional=True, searchable=False),
        Param("input", STR, "input", "the field holding the query x"),
        Param("target", t_or(STR, NONE), "target", "the field holding the golden answer"),
        Param("demo", t_or(STR, NONE), None, "the field holding a demonstration y* (default: target)"),
        Param("split", Type("fractions"), {"train": 0.6, "dev": 0.2, "test": 0.2},
              "fractions per split, or the name of a field that holds each record's split", searchable=False),
        Param("seed", t_int(0), 0, "seed of the split permutation", searchable=False),
    )


def _trained() -> tuple[Param, ...]:
    return (
        Param("generator", t_or(t_ref("generator"), NONE), None,
              "the generator whose samples and features it uses (default: the flow's at its defaults, without fine-tuning)"),
        Param("prompter", t_or(t_ref("prompter"), NONE), None,
              "the prompter of its training samples (default: the flow's, at its defaults)"),
        Param("temperature", t_float(0, 5), 0.8, "sampling temperature of its training samples"),
        Param("queries", t_int(0), 0, "train on at most this many queries of its split (0: all)", searchable=False),
        Param("tune", t_enum(*TUNES), "head", "how the reward model learns: head = a small MLP on frozen features "
              "(`features`; the fast option); top = the top `layers` layers of an LM and a value head, over cached "
              "lower-layer states; lora = LoRA adapters on the LM and a value head; full = every weight of the LM"),
        Param("backbone", t_or(STR, NONE), None, "the LM of tune = top/lora/full: an embedded name, local HF folder or "
              ".gguf file (default: the generator's base weights)", searchable=False),
        Param("layers", t_int(1, 1000), 4, "decoder layers trained with tune = top"),
        Param("value", t_enum("last", "tokens"), "last", "LM rewards from golden labels: the loss on the last token, "
              "or on every answer token (a token-level value, Cobbe et al.); r is always read at the last token"),
        Param("verifier", t_enum("value", "generative"), "value", "an LM reward's head: value = a new scalar head; "
              "generative = the LM's own answer to \"Is the answer correct?\" after the text (r = logit Yes - logit "
              "No, fine-tuned by the family's loss; a generative verifier)"),
        Param("features", FEATURES, "hidden", "tune = head: hidden = the generator's mean-pooled hidden states; "
              "minilm = all-MiniLM-L6-v2 sentence embeddings"),
        Param("epochs", t_int(0, 10000), 0, "training epochs (0: 200 full-batch epochs for a head, 2 passes over the "
              "data for an LM)"),
        Param("lr", t_float(0, 10), 0.0, "learning rate (0: 1e-3 for a head; 1e-4 top, 2e-4 lora, 2e-5 full)"),
        Param("batch", t_int(1, 4096), 16, "items per optimizer step of an LM reward"),
    )


def _finetune_common() -> tuple[Param, ...]:
    return (
        Param("generator", t_or(t_ref("generator"), NONE), None,
              "the model to fine-tune, and its decoding for samples (default: the generator that lists this "
              "fine-tuning, at its defaults)"),
        Param("prompter", t_or(t_ref("prompter"), NONE), None,
              "the prompter that formats its training examples (default: the flow's, with the values the trial or "
              "run uses: the model is fine-tuned on prompts in the format it runs with)"),
        Param("queries", t_int(0), 0, "train on at most this many records of its split (0: all)", searchable=False),
        Param("steps", t_int(1, 100000), 30, "optimizer steps"),
        Param("lr", t_float(0, 1, min_open=True), 5e-5, "learning rate (AdamW)"),
        Param("batch", t_int(1, 4096), 8, "sequences per step"),
        Param("lora", BOOL, False, "train a LoRA adapter (peft) instead of all weights"),
        Param("lora_rank", t_int(1, 1024), 8, "LoRA rank"),
    )


_EXTERNAL = (
    Param("call", t_or(STR, NONE), None, "module:function or path/file.py:function, called as fn(x, candidate, record)"),
    Param("command", t_or(STR, NONE), None, "a command that reads the item as JSON on stdin and prints a score"),
    Param("timeout", t_float(0, None, min_open=True), 10.0, "seconds per candidate"),
    Param("on_error", t_float(), 0.0, "the score of a candidate whose call fails, hangs or returns garbage"),
)

CONSTRUCTORS: tuple[Constructor, ...] = (
    # ---- data: the queries x and the knowledge K
    Constructor("data", "jsonl", "records from a JSON-lines file", _data_params(), "K, D"),
    Constructor("data", "csv", "records from a CSV file with a header row", _data_params(), "K, D"),
    Constructor("data", "hf_disk", "a Hugging Face dataset saved with save_to_disk", _data_params(), "K, D"),
    # ---- templates
    Constructor("template", "text", "a prompt template; {x}, {demos}, {history} and any record field are slots", (
        Param("body", STR, doc="the template text", positional=True, searchable=False),
        Param("system", t_or(STR, NONE), None, "a system message (chat models)", searchable=False),
        Param("demo", STR, "Q: {x}\nA: {demo}", "how one demonstration is shown in {demos}", searchable=False),
        Param("prefill", STR, "", "text that starts the model's answer (part of the thought)", searchable=False),
    ), "P_psi"),
    # ---- generator: l_theta,tau
    Constructor("generator", "model", "a language model and its decoding parameters", (
        Param("name", STR, doc="embedded name (smollm2-135m), HF id on disk, local folder or .gguf file",
              positional=True),
        Param("backend", t_enum("transformers", "vllm", "openai"), "transformers",
              "the inference engine: transformers or vllm in this process, or openai: an OpenAI-compatible server "
              "(vLLM, SGLang, llama.cpp, Ollama, TGI, transformers serve) or a hosted API, named by base_url",
              searchable=False),
        Param("temperature", t_float(0, 5), 0.0, "sampling temperature tau (0: greedy)"),
        Param("top_p", t_float(0, 1, min_open=True), 1.0, "nucleus sampling mass"),
        Param("top_k", t_int(0), 0, "top-k sampling (0: off)"),
        Param("max_tokens", t_int(1, 100000), 64, "new tokens per sample and round"),
        Param("stop", STRS, [], "stop strings", searchable=False),
        Param("seed", t_int(0), 0, "sampling seed"),
        Param("finetune", t_or(t_ref("finetune"), NONE), None, "fine-tuning of theta applied before use"),
        Param("adapter", t_or(STR, NONE), None, "an existing LoRA/PEFT adapter folder (adapter_config.json) applied "
              "to the model", searchable=False),
        Param("device", STR, "auto", "auto, cpu, cuda or cuda:N", searchable=False),
        Param("dtype", t_enum("auto", "float32", "bfloat16", "float16"), "auto", "weights dtype", searchable=False),
        Param("base_url", t_or(STR, NONE), None, "backend = openai: the API root, e.g. \"http://127.0.0.1:8000/v1\"; "
              "name is then the served model's id", searchable=False),
        Param("api", t_enum("completions", "chat"), "completions", "backend = openai: completions (the prompt text "
              "as written) or chat (messages; the server applies its chat template)", searchable=False),
        Param("api_key_env", t_or(STR, NONE), None, "backend = openai: the environment variable that holds the API "
              "key (never the key itself; local servers need none)", searchable=False),
        Param("concurrency", t_int(1, 4096), 16, "backend = openai: requests in flight at once", searchable=False),
        Param("timeout", t_float(0, None, min_open=True), 120.0, "backend = openai: seconds per request attempt",
              searchable=False),
        Param("retries", t_int(0, 100), 6, "backend = openai: retries of a request on 429, 5xx, timeouts and dropped "
              "connections (exponential backoff with jitter)", searchable=False),
    ), "l_theta,tau"),
    Constructor("generator", "candidates", "candidates read from record fields instead of sampled "
                "(e.g. the two responses of a preference pair)", (
        Param("fields", STRS, doc="the fields holding the candidates", positional=True, searchable=False),
        Param("seed", t_int(0), 0, "seed of the per-query shuffle of the candidates"),
    ), "l"),
    # ---- prompter: P_psi
    Constructor("prompter", "prompt", "how a query becomes a prompt, and how later rounds see earlier thoughts", (
        Param("template", t_or(t_ref("template"), t_call("per_query")), "zero_shot", "the template (or a "
              "per-query choice by a binary reward model)"),
        Param("demos", t_or(t_call("demos"), NONE), None, "few-shot demonstrations from K"),
        Param("followup", t_or(t_ref("template"), t_enum("continue"), NONE), "feedback",
              "rounds t > 1: a template that shows {history} (thoughts and rewards), or continue (extend the "
              "kept partial thought, tree-of-thought style)"),
        Param("chat", BOOL, True, "apply the model's chat template"),
    ), "P_psi"),
    Constructor("nested", "demos", "few-shot demonstrations K_m(x) picked from a split", (
        Param("pool", SPLIT, doc="where the demonstrations come from", positional=True, searchable=False),
        Param("k", t_int(0, 64), 2, "how many demonstrations (M)"),
        Param("pick", t_enum("random", "nearest", "fixed"), "random",
              "random (seeded per query), nearest (most similar queries, TF-IDF) or fixed (ids, else the first k)"),
        Param("ids", Type("json"), [], "record ids for pick = fixed", searchable=False),
        Param("seed", t_int(0), 0, "seed of random picks"),
    ), "K_m(x)"),
    Constructor("nested", "per_query", "choose the template per query by a binary reward model (Prompt-OIRL)", (
        Param("reward", t_ref("reward"), doc="a binary reward model (its `among` are the candidates)",
              positional=True, searchable=False),
    ), "P_psi(x)"),
    # ---- rewards: R
    Constructor("reward", "bradley_terry", "a reward model from preference pairs (x, y+, y-), Eq. 4", (
        Param("data", SPLIT, doc="the preference records", positional=True, searchable=False),
        Param("chosen", STR, "chosen", "the field of the preferred response", searchable=False),
        Param("rejected", STR, "rejected", "the field of the dispreferred response", searchable=False),
        Param("annotator", t_or(t_ref("evaluator"), NONE), None, "instead of chosen/rejected fields: pair the "
              "generator's own samples, ranked by this evaluator (it sees only this split)"),
        Param("samples", t_int(2, 64), 4, "samples per query when pairs are made with an annotator"),
        Param("margin", t_float(0), 0.0, "m in -log sigmoid(r+ - r- - m)"),
        Param("centering", t_float(0), 0.0, "weight of the (r+ + r-)^2 reward-centering term"),
    ) + _trained(), "R (BT-RM)"),
    Constructor("reward", "discriminator", "a discriminator reward from demonstrations, Eq. 5-7 (Inverse-RLignment)", (
        Param("data", SPLIT, doc="records with demonstrations y*", positional=True, searchable=False),
        Param("positives", t_enum("demos", "sft"), "demos", "positives: the demonstrations, or samples of the "
              "generator fine-tuned on them (then negatives and positives share style)"),
        Param("samples", t_int(1, 64), 2, "negative samples of the base generator per query"),
    ) + _trained(), "R (IRL-RM)"),
    Constructor("reward", "outcome", "an outcome reward model (ORM) from golden answers, Eq. 8-9", (
        Param("data", SPLIT, doc="records with golden answers", positional=True, searchable=False),
        Param("evaluator", t_or(t_ref("evaluator"), NONE), None, "the golden check (default: the flow's first)"),
        Param("samples", t_int(1, 64), 4, "samples per training query"),
    ) + _trained(), "R (ORM)"),
    Constructor("reward", "process", "a process reward model (PRM) from Monte-Carlo step labels (Math-Shepherd)", (
        Param("data", SPLIT, doc="records with golden answers", positional=True, searchable=False),
        Param("evaluator", t_or(t_ref("evaluator"), NONE), None, "the golden check (default: the flow's first)"),
        Param("samples", t_int(1, 64), 2, "solutions sampled per training query"),
        Param("rollouts", t_int(1, 64), 4, "completions rolled out from each step prefix"),
        Param("label", t_enum("hard", "soft"), "hard", "hard: any rollout reaches the answer; soft: the fraction"),
    ) + _trained(), "R (PRM)"),
    Constructor("reward", "binary", "P(success | query, prompt) from offline prompt logs (Prompt-OIRL)", (
        Param("data", SPLIT, doc="queries the prompt candidates are run on", positional=True, searchable=False),
        Param("among", Type("refs", ("template",)), doc="the candidate templates", searchable=False),
        Param("prompter", t_or(t_ref("prompter"), NONE), None,
              "the prompter whose template is swapped for each candidate (default: the flow's, at its defaults)"),
        Param("queries", t_int(0), 0, "run the prompts on at most this many queries of its split (0: all)",
              searchable=False),
        Param("evaluator", t_or(t_ref("evaluator"), NONE), None, "the golden check (default: the flow's first)"),
        Param("model", t_enum("hgb", "logistic"), "hgb", "gradient-boosted trees or logistic regression"),
        Param("generator", t_or(t_ref("generator"), NONE), None, "the generator (default: the flow's)"),
        Param("features", FEATURES, "minilm", "query features: hidden or minilm"),
    ), "R (Binary-RM)"),
    Constructor("reward", "implicit", "the implicit reward of a DPO fine-tuning: r = beta (log pi(y|x) - log "
                "pi_ref(y|x)), pi its fine-tuned model and pi_ref the base", (
        Param("finetune", t_ref("finetune"), doc="a dpo fine-tuning", positional=True, searchable=False),
        Param("generator", t_or(t_ref("generator"), NONE), None, "pi_ref (default: the flow's, before fine-tuning)"),
    ), "R (DPO)"),
    Constructor("reward", "critic", "the LLM grades a candidate (self-critic; untrained)", (
        Param("template", t_or(t_ref("template"), NONE), None, "the grading prompt (default: the built-in critic)"),
        Param("generator", t_or(t_ref("generator"), NONE), None, "the critic model (default: the flow's)"),
    ), "R (LLM-Critic)"),
    Constructor("reward", "external", "a reward from an outside system: Python code or a command", _EXTERNAL,
                "R (External)"),
    # ---- evaluators: E
    Constructor("evaluator", "exact_match", "1 if the answer equals a record field", (
        Param("field", STR, "y", "the record field with the golden answer", searchable=False),
        Param("ignore_case", BOOL, True, "compare case-insensitively", searchable=False),
    ), "E"),
    Constructor("evaluator", "numeric_match", "1 if the answer's number equals the golden number", (
        Param("field", STR, "y", "the record field with the golden answer", searchable=False),
        Param("tol", t_float(0), 1e-6, "absolute tolerance", searchable=False),
    ), "E"),
    Constructor("evaluator", "regex", "1 if the answer matches a regular expression", (
        Param("pattern", STR, doc="the regular expression", positional=True, searchable=False),
    ), "E"),
    Constructor("evaluator", "contains", "1 if the answer contains a record field", (
        Param("field", STR, "y", "the record field", searchable=False),
        Param("ignore_case", BOOL, True, "compare case-insensitively", searchable=False),
    ), "E"),
    Constructor("evaluator", "sentiment", "VADER sentiment of the answer in [0, 1]", (
        Param("target", t_enum("positive", "negative"), "positive", "which sentiment scores 1", searchable=False),
    ), "E"),
    Constructor("evaluator", "code_tests", "1 if the answer's code passes the record's tests (run against the sandboxed code, docs/sandbox.md)", (
        Param("field", STR, "tests", "the record field with Python test code (asserts)", searchable=False),
        Param("timeout", t_float(0, None, min_open=True), 10.0, "seconds", searchable=False),
    ), "E"),
    Constructor("evaluator", "external", "a score from Python code or a command", _EXTERNAL, "E"),
    Constructor("evaluator", "judge", "an LLM judge: P(yes) that the answer is good", (
        Param("template", t_or(t_ref("template"), NONE), None, "the judging prompt (default: the built-in judge)"),
        Param("generator", t_or(t_ref("generator"), NONE), None, "the judge model (default: the flow's)"),
    ), "E"),
    # ---- fine-tuning: theta
    Constructor("finetune", "sft", "supervised fine-tuning on demonstrations", (
        Param("data", SPLIT, doc="records with demonstrations", positional=True, searchable=False),
        Param("solutions", t_enum("demo", "arithmetic"), "demo", "what each record is trained to write: demo = its "
              "demonstration; arithmetic = a worked solution derived from its golden answer, the chain of at most "
              "3 operations (+, -, *, /) over the question's numbers that reaches it (records where none does are "
              "skipped; for answer-only arithmetic word problems, docs/finetuning.md)"),
    ) + _finetune_common(), "theta"),
    Constructor("finetune", "rejection", "rejection-sampling fine-tuning: sample, keep the best, fine-tune", (
        Param("data", SPLIT, doc="training queries", positional=True, searchable=False),
        Param("reward", t_or(t_ref("reward"), NONE), None, "what ranks samples (default: the golden evaluator)"),
        Param("evaluator", t_or(t_ref("evaluator"), NONE), None, "the golden check (default: the flow's first)"),
        Param("samples", t_int(1, 64), 4, "samples per query"),
        Param("rationalize", BOOL, False, "STaR's rationalization: a query none of whose samples passes the golden "
              "check is sampled again with its answer as a hint, and a passing rationale is kept for the prompt "
              "without the hint (needs reward = none and golden answers)"),
    ) + _finetune_common(), "theta"),
    Constructor("finetune", "iterative", "alternate refitting the reward model and rejection-sampling "
                "fine-tuning (Fig. 1, step 6)", (
        Param("data", SPLIT, doc="training queries", positional=True, searchable=False),
        Param("reward", t_ref("reward"), doc="a trained reward model, refit each round", searchable=False),
        Param("evaluator", t_or(t_ref("evaluator"), NONE), None, "the golden check (default: the flow's first)"),
        Param("rounds", t_int(1, 100), 2, "alternations"),
        Param("samples", t_int(1, 64), 4, "samples per query and round"),
    ) + _finetune_common(), "theta"),
    Constructor("finetune", "dpo", "direct preference optimization (TRL's DPOTrainer, Rafailov et al.): theta from "
                "preference pairs, with an implicit reward r = beta log pi/pi_ref", (
        Param("data", SPLIT, doc="training queries (and their preference fields or demonstrations)", positional=True,
              searchable=False),
        Param("pairs", t_enum("fields", "ranked", "demos"), "fields", "fields: the records' chosen/rejected fields; "
              "ranked: the best against the worst of the generator's own samples by `reward` (else the golden "
              "evaluator); demos: the demonstration against the generator's own sample (self-play, SPIN)"),
        Param("chosen", STR, "chosen", "pairs = fields: the field of the preferred response", searchable=False),
        Param("rejected", STR, "rejected", "pairs = fields: the field of the dispreferred response", searchable=False),
        Param("reward", t_or(t_ref("reward"), NONE), None, "pairs = ranked: what ranks samples"),
        Param("evaluator", t_or(t_ref("evaluator"), NONE), None, "the golden check (default: the flow's first)"),
        Param("samples", t_int(1, 64), 4, "pairs = ranked/demos: samples per query"),
        Param("beta", t_float(0, 100, min_open=True), 0.1, "beta of the DPO loss: how far theta may move from the base"),
    ) + _finetune_common(), "theta"),
    # ---- flow: Eq. 1
    Constructor("flow", "loop", "Eq. 1: T rounds of prompt -> L samples -> reward -> keep, then select and evaluate", (
        Param("data", DATA, doc="where the queries come from", positional=True, searchable=False),
        Param("generator", t_ref("generator"), doc="l_theta,tau"),
        Param("prompter", t_ref("prompter"), doc="P_psi"),
        Param("evaluator", t_or(t_ref("evaluator"), Type("refs", ("evaluator",))), doc="E (one or a list)",
              searchable=False),
        Param("rounds", t_int(1, 100000), 1, "T"),
        Param("samples", t_int(1, 4096), 1, "L, samples per prompt and round"),
        Param("reward", t_or(t_ref("reward"), NONE), None, "R"),
        Param("select", t_enum(*SELECT), "first", "how the answer is chosen from the candidates"),
        Param("keep", t_int(1, 4096), 1, "candidates kept per round as parents of the next (beam width)"),
        Param("pool", t_enum("last", "all"), "last", "select among the last round's candidates or all rounds'"),
        Param("answer", t_or(t_enum(*ANSWERS), t_call("regex", "choice")), "text",
              "how the answer is read from the selected candidate"),
    ), "Eq. 1"),
    Constructor("nested", "regex", "answer = the first match of a pattern (group 1 if any)", (
        Param("pattern", STR, doc="the regular expression", positional=True, searchable=False),
    )),
    Constructor("nested", "choice", "answer = the first of these options found in the text", (
        Param("options", STRS, doc="the options", positional=True, searchable=False),
    )),
    # ---- optimize: Eq. 2-3
    Constructor("optimize", "optuna", "search the declared space with Optuna, scored by E on a dev split", (
        Param("objective", t_ref("evaluator"), doc="the evaluator to maximise", searchable=False),
        Param("on", SPLIT, doc="the split trials are scored on (never test)", searchable=False),
        Param("report", t_or(SPLIT, NONE), None, "the held-out split reported once at the end (default: test)",
              searchable=False),
        Param("trials", t_int(1, 100000), 20, "number of trials", searchable=False),
        Param("sampler", t_enum("tpe", "random", "grid", "cmaes"), "tpe", "Optuna sampler", searchable=False),
        Param("pruner", t_enum("median", "none"), "median", "stop hopeless trials early", searchable=False),
        Param("queries", t_int(0), 0, "use at most this many queries of the `on` split (0: all)", searchable=False),
        Param("report_queries", t_int(0), 0, "at most this many held-out queries in the report (0: all)",
              searchable=False),
        Param("minibatch", t_int(0), 16, "dev queries per trial before promotion (0: all)", searchable=False),
        Param("promote", t_int(0), 3, "best trials re-scored on the full dev split", searchable=False),
        Param("seed", t_int(0), 0, "fixes sampler, minibatches, demos and generation", searchable=False),
        Param("cost", BOOL, False, "second objective: generated tokens per query (Pareto front)", searchable=False),
        Param("storage", t_or(STR, NONE), None, "Optuna storage URL (default: SQLite in the build folder)",
              searchable=False),
        Param("study", t_or(STR, NONE), None, "study name (default: the program name)", searchable=False),
        Param("space", t_enum("declared", "auto"), "declared", "declared: search the values the program declares as "
              "searchable; auto: also propose psi, L, the reward and theta from what the data holds "
              "(docs/optimize.md)", searchable=False),
        Param("batch", t_int(1, 64), 1, "trials asked at once (constant liar) and run together: their generations "
              "share the model's batches (pays where throughput grows with batch size: a GPU, a server)",
              searchable=False),
        Param("budget", t_or(STR, NONE), None, "stop starting trials after this wall-clock time (\"20m\", \"90s\", "
              "\"1h\") or this many generated tokens (\"200k tokens\"); promotion and the report still run",
              searchable=False),
    ), "Eq. 2-3"),
    Constructor("optimize", "oirl", "Prompt-OIRL: learn P(success | query, prompt) offline, choose per query", (
        Param("objective", t_ref("evaluator"), doc="the evaluator", searchable=False),
        Param("on", SPLIT, doc="the dev split", searchable=False),
        Param("report", t_or(SPLIT, NONE), None, "the held-out split (default: test)", searchable=False),
        Param("reward", t_ref("reward"), doc="the binary reward model", searchable=False),
        Param("queries", t_int(0), 0, "use at most this many queries of the `on` split (0: all)", searchable=False),
        Param("report_queries", t_int(0), 0, "at most this many held-out queries in the report (0: all)",
              searchable=False),
        Param("seed", t_int(0), 0, "seed", searchable=False),
    ), "Eq. 2-3"),
)

BY_KIND: dict[str, dict[str, Constructor]] = {}
for _c in CONSTRUCTORS:
    BY_KIND.setdefault(_c.kind, {})[_c.name] = _c

REWARD_FAMILIES = tuple(BY_KIND["reward"])
"""Every reward family, in declaration order: the one list (``aldsl.rewards`` has one module per family)."""
TRAINED_REWARDS = ("bradley_terry", "discriminator", "outcome", "process", "binary")
"""Families fitted on data the program names, with the flow's prompter and answer extraction."""
MODEL_REWARDS = (*TRAINED_REWARDS, "critic", "implicit")
"""Families that read a generator (the flow's unless they name one)."""
GOLDEN_REWARDS = ("discriminator", "outcome", "process", "binary")
"""Trained families whose labels or metrics use the golden evaluator (the flow's first unless named)."""
SERVER_PARAMS = ("base_url", "api", "api_key_env", "concurrency", "timeout", "retries")
"""The generator parameters of backend = openai (they go to the backend as its ServerSpec)."""
