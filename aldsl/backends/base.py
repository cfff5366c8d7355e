"""The one small interface every model backend implements.

A backend turns prompts into sampled completions in large batches, encodes texts into
feature vectors (for learned reward models) and scores continuations (for LLM critics
and judges). Sample ``i`` of a prompt is a pure function of (model, prompt, decoding,
``i``): batching, batch order and which other samples were asked for never change it, so
the on-disk generation cache can store samples one by one.
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
        """Seed of the random stream of sample ``index`` of ``prompt`` (the same on every backend)."""
        return int(content_hash(self.seed, prompt, index), 16)


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


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load and how (the generator's non-decoding parameters)."""

    name: str  # embedded name ("smollm2-135m"), HF id on disk, local directory or .gguf file
    backend: str = "transformers"  # "transformers" | "vllm"
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    dtype: str = "auto"  # "auto" (bf16 on GPU, fp32 on CPU) | "float32" | "bfloat16" | "float16"
    checkpoint: str | None = None  # a fine-tuned checkpoint directory that replaces the weights
    max_batch_tokens: int | None = None  # memory budget per batch; None: sized from free memory
    max_batch_rows: int | None = None  # hard row limit; exceeding it acts as out-of-memory (tests)


Progress = Callable[[int, int], None]
"""Called after each batch with (requests finished in that batch, tokens generated in it)."""


class OutOfMemory(RuntimeError):
    """A batch did not fit in memory; the caller halves the batch and retries."""


@runtime_checkable
class Backend(Protocol):
    """What the executor, reward models and optimizers need from a model."""

    identity: str
    """Content identity of the weights (name plus a hash); part of every cache key."""

    def generate(
        self, requests: Sequence[GenRequest], decoding: Decoding, progress: Progress | None = None
    ) -> list[list[Completion]]:
        """Sample completions; result ``[i][j]`` is sample ``requests[i].samples[j]``."""
        ...

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled last hidden states, shape ``(len(texts), hidden_size)``, float32."""
        ...

    def logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Sum of log p(continuation | prompt) for each pair."""
        ...

    def format_chat(self, messages: Sequence[dict[str, str]]) -> str:
        """Render chat messages with the model's chat template, ready for generation."""
        ...
