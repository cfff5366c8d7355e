"""Sampling L round-1 thoughts per record from a compiled prompter and generator (the training
data of reward models and fine-tunings)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from aldsl.backends import Decoding, GenRequest
from aldsl.ops.prompter import Prompter

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session


def decoding(gen: dict[str, Any]) -> Decoding:
    """The Decoding of a compiled generator spec."""
    d = gen["decoding"]
    return Decoding(temperature=d["temperature"], top_p=d["top_p"], top_k=d["top_k"], max_tokens=d["max_tokens"],
                    stop=tuple(d["stop"]), seed=d["seed"])


def sample(session: Session, graph: ProgramGraph, prompter: dict[str, Any], generator: dict[str, Any],
           records: Records, samples: int, temperature: float | None = None) -> list[list[str]]:
    """``samples`` round-1 thoughts per record from a compiled prompter and generator spec (used to
    make training data for reward models and fine-tuning); ``temperature`` overrides tau."""
    if temperature is not None:
        generator = {**generator, "decoding": {**generator["decoding"], "temperature": temperature}}
    backend = session.backend(generator, graph)
    firsts = Prompter(prompter, session, graph, backend).first_prompts(records)
    requests = [GenRequest(base + prefill, tuple(range(samples))) for base, prefill, _ in firsts]
    with session.reporter.task(f"sampling {len(requests)} x {samples}", total=len(requests)) as advance:
        outputs = backend.generate(requests, decoding(generator), progress=lambda n, tok: advance(n, tokens=tok))
    return [[prefill + c.text for c in completions] for (_, prefill, _), completions in zip(firsts, outputs)]
