"""Renderings of a compiled graph: node labels, a summary table, Graphviz DOT and a PNG picture."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Sequence

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


def summary(graph: ProgramGraph) -> list[tuple[str, str, str]]:
    """(node, op, detail) rows in topological order."""
    return [(n, graph.g.nodes[n]["op"], label(graph, n).split("\\n", 1)[-1] if "\\n" in label(graph, n) else "")
            for n in graph.nodes()]


def to_dot(graph: ProgramGraph, space: Sequence[Any] = ()) -> str:
    """Graphviz DOT text of the graph (and, when given, a note listing its search space)."""
    shapes = {"data": "cylinder", "reward_model": "component", "finetune": "component"}
    lines = [f'digraph "{graph.program}" {{', "  rankdir=TB;", '  node [shape=box, style=rounded, fontname="Helvetica"];']
    for n in graph.nodes():
        shape = shapes.get(graph.g.nodes[n]["op"])
        extra = f", shape={shape}" if shape else ""
        lines.append(f'  "{n}" [label="{label(graph, n)}"{extra}];')
    for a, b, d in sorted(graph.g.edges(data=True)):
        lines.append(f'  "{a}" -> "{b}" [label="{d.get("flow", "")}", fontsize=9];')
    if space:
        text = "\\l".join(line.replace('"', "'") for line in ["search space", *space_lines(space)]) + "\\l"
        lines.append(f'  "search space" [shape=note, fontname="Courier", fontsize=9, label="{text}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_png(graph: ProgramGraph, path: str | Path, space: Sequence[Any] = ()) -> Path:
    """A picture of the graph and its search space: Graphviz ``dot`` when installed, else matplotlib
    (one row per topological generation, arrows clipped to the boxes they join)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    dot = shutil.which("dot")
    if dot is not None:
        subprocess.run([dot, "-Tpng", "-o", str(p)], input=to_dot(graph, space), text=True, check=True, timeout=60)
        return p
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(nx.topological_generations(graph.g))
    pos: dict[str, tuple[float, float]] = {}
    for depth, layer in enumerate(layers):
        layer = sorted(layer, key=sort_key)
        for i, n in enumerate(layer):
            pos[n] = (2.6 * (i - (len(layer) - 1) / 2), -1.3 * depth)
    width = max(len(layer) for layer in layers)
    panel = space_lines(space)
    graph_w = max(6, 2.8 * width)
    panel_w = 0.075 * max(len(line) for line in panel) if panel else 0
    fig = plt.figure(figsize=(graph_w + panel_w, max(4, 1.1 * len(layers))), dpi=DPI)
    ax = fig.add_axes((0.0, 0.0, graph_w / (graph_w + panel_w), 0.93))
    colors = {"data": "#d9ead3", "reward_model": "#fce5cd", "finetune": "#f4cccc", "input": "#eeeeee",
              "evaluate": "#cfe2f3", "answer": "#cfe2f3"}
    boxes = {}
    for n, (x, y) in pos.items():
        boxes[n] = ax.text(x, y, label(graph, n).replace("\\n", "\n"), ha="center", va="center", fontsize=8,
                           zorder=3, bbox={"boxstyle": "round,pad=0.4", "ec": "#666666",
                                           "fc": colors.get(graph.g.nodes[n]["op"], "#ffffff")})
    xs, ys = [x for x, _ in pos.values()], [y for _, y in pos.values()]
    ax.set_xlim(min(xs) - 1.6, max(xs) + 1.6)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
    ax.axis("off")
    fig.canvas.draw()  # the boxes get their sizes: each arrow is clipped to the two boxes it joins
    for a, b in graph.g.edges():
        ax.annotate("", xy=pos[b], xytext=pos[a], zorder=4,
                    arrowprops={"arrowstyle": "-|>", "color": "#777777", "shrinkA": 1, "shrinkB": 1,
                                "patchA": boxes[a].get_bbox_patch(), "patchB": boxes[b].get_bbox_patch(),
                                "connectionstyle": f"arc3,rad={_bend(pos[a], pos[b])}"})
    if panel:
        fig.text(graph_w / (graph_w + panel_w), 0.9, "search space\n" + "\n".join(panel), ha="left", va="top",
                 fontsize=8, family="monospace", bbox={"boxstyle": "round", "fc": "#fff8e1", "ec": "#999999"})
    fig.suptitle(f"{graph.program}: {graph.g.number_of_nodes()} nodes, T = {graph.rounds}")
    fig.savefig(p, dpi=DPI)  # the drawing's own dpi and extent: the clipped arrows stay on the boxes
    plt.close(fig)
    return p


DPI = 110


def _bend(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Curvature of an edge: straight between neighbouring rows in one column, bent round the boxes of the
    rows it skips (further the more it skips), slightly bent across columns."""
    rows = round(abs(a[1] - b[1]) / 1.3)
    if rows > 1:
        return 0.35 if a[0] <= b[0] else -0.35
    return 0.0 if abs(a[0] - b[0]) < 0.1 else 0.08


def space_lines(space: Sequence[Any]) -> list[str]:
    """One line per search parameter: name, domain and the nodes it sets (fine-tunings and rewards among
    the choices are the resources the search may add)."""
    return [f"{p.name} in {p.describe()} -> {', '.join(p.targets)}" for p in space]
