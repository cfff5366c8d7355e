"""Renderings of a compiled graph: node labels, a summary table, Graphviz DOT and a PNG picture."""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from aldsl.compiler import specs
from aldsl.compiler.graph import ProgramGraph, sort_key


def label(graph: ProgramGraph, node: str) -> str:
    """The node's id and a one-line detail of what it does."""
    spec = graph.spec(node)
    detail = ""
    if isinstance(spec, specs.Prompt):
        t = spec.prompter.template
        detail = t.name if isinstance(t, specs.Template) else "per-query choice"
        if spec.prompter.demos:
            detail += f", {spec.prompter.demos.k} demos ({spec.prompter.demos.pick})"
    elif isinstance(spec, specs.Generate):
        gen = spec.generator
        detail = (f"{gen.model}, L={spec.samples}, tau={gen.decoding.temperature}"
                  if isinstance(gen, specs.ModelGenerator) else f"candidates {list(gen.candidates)}")
    elif isinstance(spec, specs.Score):
        detail = (spec.reward or "none").split(":")[-1]
    elif isinstance(spec, specs.Keep):
        detail = f"keep {spec.keep}"
    elif isinstance(spec, specs.Choose):
        detail = f"{spec.select}, {spec.answer.kind}"
    elif isinstance(spec, specs.Evaluate):
        detail = ", ".join(e.name for e in spec.evaluators)
    elif isinstance(spec, (specs.Reward, specs.Finetune)):
        detail = spec.kind
    elif isinstance(spec, specs.DataSpec):
        detail = Path(spec.path).name
    return f"{node}\\n{detail}" if detail else node


def to_dot(graph: ProgramGraph) -> str:
    """Graphviz DOT text of the graph."""
    shapes = {"data": "cylinder", "reward_model": "component", "finetune": "component"}
    lines = [f'digraph "{graph.program}" {{', "  rankdir=TB;", '  node [shape=box, style=rounded, fontname="Helvetica"];']
    for n in graph.nodes():
        shape = shapes.get(graph.g.nodes[n]["op"])
        extra = f", shape={shape}" if shape else ""
        lines.append(f'  "{n}" [label="{label(graph, n)}"{extra}];')
    for a, b, d in sorted(graph.g.edges(data=True)):
        lines.append(f'  "{a}" -> "{b}" [label="{d.get("flow", "")}", fontsize=9];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_png(graph: ProgramGraph, path: str | Path) -> Path:
    """Draw the graph with matplotlib (no graphviz needed): one row per topological generation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(nx.topological_generations(graph.g))
    pos: dict[str, tuple[float, float]] = {}
    for depth, layer in enumerate(layers):
        layer = sorted(layer, key=sort_key)
        for i, n in enumerate(layer):
            pos[n] = (i - (len(layer) - 1) / 2, -depth)
    width = max(len(layer) for layer in layers)
    fig, ax = plt.subplots(figsize=(max(6, 2.6 * width), max(4, 0.9 * len(layers))))
    colors = {"data": "#d9ead3", "reward_model": "#fce5cd", "finetune": "#f4cccc", "input": "#eeeeee",
              "evaluate": "#cfe2f3", "answer": "#cfe2f3"}
    nx.draw_networkx_edges(graph.g, pos, ax=ax, arrows=True, arrowsize=10, edge_color="#888888",
                           node_size=3000)
    for n, (x, y) in pos.items():
        ax.text(x, y, label(graph, n).replace("\\n", "\n"), ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round", "fc": colors.get(graph.g.nodes[n]["op"], "#ffffff"), "ec": "#666666"})
    ax.set_title(f"{graph.program}: {graph.g.number_of_nodes()} nodes")
    ax.axis("off")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return p


def summary(graph: ProgramGraph) -> list[tuple[str, str, str]]:
    """(node, op, detail) rows in topological order."""
    return [(n, graph.g.nodes[n]["op"], label(graph, n).split("\\n", 1)[-1] if "\\n" in label(graph, n) else "")
            for n in graph.nodes()]
