"""aldsl: a declarative language and compiler for LLM programs, with optimizers.

    import aldsl
    prog = aldsl.compile("programs/quickstart.alp")   # -> CompiledProgram (.graph is a networkx DiGraph)
    prog.search_space                                  # every searchable value
    concrete = prog.with_params({"main.samples": 4})   # a concrete program
"""

from .program import CompiledProgram, compile, load_graph

__all__ = ["CompiledProgram", "compile", "load_graph"]
__version__ = "0.1.0"
