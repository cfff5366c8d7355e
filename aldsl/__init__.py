"""aldsl: a declarative language and compiler for LLM programs, with optimizers.

    import aldsl
    prog = aldsl.compile("programs/quickstart.alp")   # -> CompiledProgram (.graph is a networkx DiGraph)
    prog.search_space                                  # every searchable value
    result = prog.with_params({"main.samples": 4}).run(split="dev", limit=8)

The package imports lazily, so ``aldsl.tasks`` (loaded by external-reward workers) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["CompiledProgram", "compile", "load_graph", "load_optimized", "load_reward"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from aldsl.program import CompiledProgram, compile, load_graph, load_optimized, load_reward


def __getattr__(name: str) -> Any:
    if name in __all__:
        from aldsl import program

        return getattr(program, name)
    raise AttributeError(f"module 'aldsl' has no attribute {name!r}")
