"""The one small interface every model backend implements.

A backend turns prompts into sampled completions in large batches and scores continuations
(for LLM critics and judges). What else it can do is a declared capability, known from the
backend's name alone so the checker can refuse a program before any work: ``encode``
(hidden-state features for learned reward models; :class:`HiddenStates`) and ``weights``
(local weights that fine-tuning can train). A model behind an HTTP server has neither.

Sample ``i`` of a prompt is a function of (model, prompt, decoding, ``i``) wherever the engine
honours seeds: its random stream never depends on batching, batch order or which other samples
were asked for, so the on-disk generation cache can store samples one by one. The logits it is
drawn from may differ in the last bits with the batch's shape (padding, shared prefixes; see
docs/performance.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from aldsl.errors import UserError
from aldsl.store.hashing import content_hash


class BackendError(UserError):
    """A user-facing problem with a model or backend; the message says what to do."""


class ModelNotFound(BackendError):
    """The model name does not point at any weights available on this machine."""


@dataclass(frozen=True)
class Decoding:
    """Decoding parameters tau of the generator (temperature 0 means greedy)."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 64
    stop: tuple[str, ...] = ()
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def key(self) -> str:
        """Stable JSON used in cache keys."""
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "Decoding":
        """The Decoding of a compiled generator's ``decoding`` dict."""
        return Decoding(temperature=d["temperature"], top_p=d["top_p"], top_k=d["top_k"],
                        max_tokens=d["max_tokens"], stop=tuple(d["stop"]), seed=d["seed"])

    def to_json(self) -> dict[str, Any]:
        """The compiled form (``stop`` as a list), the inverse of :meth:`from_json`."""
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                "max_tokens": self.max_tokens, "stop": list(self.stop), "seed": self.seed}

    def check(self) -> None:
        """Reject parameters no sampler can honour, with a message that says why."""
        if self.temperature < 0:
            raise BackendError(f"temperature must be >= 0 (0 means greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise BackendError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise BackendError(f"top_k must be >= 0 (0 means no limit), got {self.top_k}")
        if self.max_tokens < 1:
            raise BackendError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if any(not s for s in self.stop):
            raise BackendError(f"stop strings must be non-empty, got {list(self.stop)}")

    def sample_seed(self, prompt: str, index: int) -> int:
        """Seed of the random stream of sample ``index`` of ``prompt`` (our own sampling loop)."""
        return int(content_hash(self.seed, prompt, index), 16)

    def engine_seed(self, prompt: str, index: int) -> int:
        """Seed of sample ``index`` for engines that seed member ``j`` of an ``n``-sample request as
        ``seed + j`` (vLLM): samples ``a..b`` are one request with ``n = b - a + 1`` and seed
        ``engine_seed(prompt, a)``, and each equals the sample asked for alone."""
        return int(content_hash(self.seed, prompt)[:15], 16) + index


def consecutive_runs(indices: Sequence[int]) -> list[list[int]]:
    """Sorted sample indices cut into runs of consecutive ones: [0, 1, 2, 5, 6] -> [[0, 1, 2], [5, 6]]
    (each run is one ``n``-sample request to engines that seed its members ``seed + j``)."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


@dataclass(frozen=True)
class GenRequest:
    """One prompt and the sample indices wanted for it (e.g. ``(0, 1, 2, 3)`` for L = 4)."""

    prompt: str
    samples: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class Completion:
    """One sampled continuation of a prompt."""

    text: str
    tokens: int
    finish: str = "length"  # "stop" (a stop string), "eos" or "length"
    cached: bool = field(default=False, compare=False)


BACKENDS = ("transformers", "vllm", "openai")
CAPABILITIES: dict[str, frozenset[str]] = {
    "transformers": frozenset({"encode", "logprobs", "weights"}),
    "vllm": frozenset({"logprobs", "weights"}),
    "openai": frozenset({"logprobs"}),  # where the server returns them; see openai_backend
}
"""What each backend can do beyond generation: ``encode`` (hidden states), ``logprobs``
(continuation scores), ``weights`` (local weights that fine-tuning trains)."""

INSTEAD = {
    "encode": "use features = minilm (sentence embeddings that need no model weights), or give the reward a "
              "generator with backend = transformers on a local copy of the weights",
    "weights": "fine-tune a local copy of the weights (a generator with backend = transformers or vllm), or "
               "drop the fine-tuning from this generator",
}
"""What to use instead when a program asks a backend for a capability it lacks."""


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load and how (the generator's non-decoding parameters)."""

    name: str  # embedded name ("smollm2-135m"), HF id on disk, local directory, .gguf file, or a served model id
    backend: str = "transformers"  # one of BACKENDS
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    dtype: str = "auto"  # "auto" (bf16 where faster: GPU, AMX CPU; else fp32) or a dtype name
    checkpoint: str | None = None  # a fine-tuned checkpoint directory that replaces the weights
    max_batch_tokens: int | None = None  # memory budget per batch; None: sized from free memory
    max_batch_rows: int | None = None  # hard row limit; exceeding it acts as out-of-memory (tests)
    server: "ServerSpec | None" = None  # backend = openai: where the model is served


@dataclass(frozen=True)
class ServerSpec:
    """An OpenAI-compatible server (backend = openai). Holds the *name* of the API key's
    environment variable, never the key, so specs can be hashed, logged and stored."""

    base_url: str  # e.g. http://127.0.0.1:8000/v1
    api: str = "completions"  # "completions" (raw prompts) | "chat" (messages)
    api_key_env: str | None = None
    concurrency: int = 16  # requests in flight at once
    timeout: float = 120.0  # seconds per request attempt
    retries: int = 6  # attempts after the first on 429, 5xx, timeouts and dropped connections


class Arrivals:
    """The bookkeeping of one ``generate`` call: the distinct (prompt, sample) pairs to produce
    (greedy decoding needs sample 0 only), and which requests each arriving sample completes."""

    def __init__(self, requests: Sequence[GenRequest], greedy: bool) -> None:
        self.requests, self.greedy = list(requests), greedy
        self.done: dict[tuple[str, int], Completion] = {}
        self._waiting: dict[tuple[str, int], list[int]] = {}
        self._pending: list[int] = []
        for i, r in enumerate(self.requests):
            keys = {self.key(r.prompt, s) for s in r.samples}
            self._pending.append(len(keys))
            for key in keys:
                self._waiting.setdefault(key, []).append(i)
        self.wanted: dict[str, list[int]] = {}
        for prompt, sample in self._waiting:
            self.wanted.setdefault(prompt, []).append(sample)
        for samples in self.wanted.values():
            samples.sort()

    def key(self, prompt: str, sample: int) -> tuple[str, int]:
        return prompt, 0 if self.greedy else sample

    def arrive(self, items: Sequence[tuple[str, int, Completion]]) -> int:
        """Record finished samples; returns how many requests they completed."""
        complete = 0
        for prompt, sample, completion in items:
            self.done[(prompt, sample)] = completion
            for i in self._waiting[(prompt, sample)]:
                self._pending[i] -= 1
                complete += self._pending[i] == 0
        return complete

    def results(self) -> list[list[Completion]]:
        """``[i][j]``: sample ``requests[i].samples[j]``."""
        return [[self.done[self.key(r.prompt, s)] for s in r.samples] for r in self.requests]


Progress = Callable[[int, int], None]
"""Called with (requests finished, tokens generated) since the last call: after each batch, and by the
transformers backend also after each decoding step (0 finished, the step's tokens)."""

Finished = Callable[[Sequence[tuple[str, int, Completion]]], None]
"""Called as soon as samples are done (a batch, or one server response), with (prompt, sample
index, completion) each: the generation cache stores them at once, so a run killed mid-batch
loses no finished sample."""


ManyFinished = Callable[[int, Sequence[tuple[str, int, Completion]]], None]
"""``generate_many``'s :data:`Finished`: called with the index of the call the samples belong to."""

GenCalls = Sequence[tuple[Sequence[GenRequest], Decoding]]
"""Several generate calls, each ``(requests, decoding)``."""


class ManyCalls:
    """For a backend with ``generate_many``: ``generate`` is its one-call case."""

    def generate(
        self, requests: Sequence[GenRequest], decoding: Decoding, progress: Progress | None = None,
        finished: Finished | None = None,
    ) -> list[list[Completion]]:
        """Sample completions; ``[i][j]`` is sample ``requests[i].samples[j]``."""
        report = None if finished is None else (lambda call, items: finished(items))
        return self.generate_many([(requests, decoding)], progress, report)[0]  # type: ignore[attr-defined]


def generate_calls(backend: Any, calls: GenCalls, progress: Progress | None = None,
                   finished: ManyFinished | None = None) -> list[list[list[Completion]]]:
    """``calls`` on ``backend``: in shared batches where it has ``generate_many``, else one
    ``generate`` per call."""
    many = getattr(backend, "generate_many", None)
    if many is not None:
        return many(calls, progress, finished)
    return [backend.generate(requests, decoding, progress,
                             None if finished is None else (lambda items, c=c: finished(c, items)))
            for c, (requests, decoding) in enumerate(calls)]


class OutOfMemory(RuntimeError):
    """A batch did not fit in memory; the caller halves the batch and retries."""


@runtime_checkable
class Backend(Protocol):
    """What the executor, reward models and optimizers need from a model."""

    identity: str
    """Content identity of the weights (name plus a hash); part of every cache key."""

    capabilities: frozenset[str]
    """A subset of ``{"encode", "logprobs", "weights"}`` (see CAPABILITIES)."""

    def generate(
        self, requests: Sequence[GenRequest], decoding: Decoding, progress: Progress | None = None,
        finished: Finished | None = None,
    ) -> list[list[Completion]]:
        """Sample completions; result ``[i][j]`` is sample ``requests[i].samples[j]``."""
        ...

    def logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Sum of log p(continuation | prompt) for each pair."""
        ...

    def format_chat(self, messages: Sequence[dict[str, str]]) -> str:
        """Render chat messages with the model's chat template, ready for generation."""
        ...


@runtime_checkable
class HiddenStates(Protocol):
    """A backend with the ``encode`` capability: features for learned reward models."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled last hidden states, shape ``(len(texts), hidden_size)``, float32."""
        ...


def require(backend: Backend, capability: str, what: str) -> None:
    """Raise a BackendError naming what to do when ``backend`` lacks ``capability`` for ``what``."""
    if capability not in backend.capabilities:
        hint = INSTEAD.get(capability, "use a backend that has it")
        raise BackendError(f"{what} needs {capability!r}, which the model {backend.identity} does not offer: {hint}.")
