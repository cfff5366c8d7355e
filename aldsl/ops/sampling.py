"""Sampling L round-1 thoughts per record from a compiled prompter and generator (the training
data of reward models and fine-tunings)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from aldsl.backends import GenRequest
from aldsl.compiler.specs import ModelGenerator, Prompter as PrompterSpec
from aldsl.ops.prompter import Prompter

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session


def sample(session: Session, graph: ProgramGraph, prompter: PrompterSpec, generator: ModelGenerator,
           records: Sequence[dict[str, Any]], samples: int, temperature: float | None = None) -> list[list[str]]:
    """``samples`` round-1 thoughts per record (the prefill included); ``temperature`` overrides tau."""
    if temperature is not None:
        generator = generator.with_decoding(temperature=temperature)
    backend = session.backend(generator, graph)
    firsts = Prompter(prompter, session, graph, backend).first_prompts(records)
    requests = [GenRequest(base + prefill, tuple(range(samples))) for base, prefill, _ in firsts]
    with session.reporter.task(f"sampling {len(requests)} x {samples}", total=len(requests)) as advance:
        outputs = backend.generate(requests, generator.decoding, progress=lambda n, tok: advance(n, tokens=tok))
    return [[prefill + c.text for c in completions] for (_, prefill, _), completions in zip(firsts, outputs)]
