"""ProgramGraph: the networkx execution graph, its JSON form, DOT and PNG renderings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Mapping

import networkx as nx

from aldsl.errors import UserError


class ProgramGraph:
    """A compiled program: a ``networkx.DiGraph`` whose nodes carry ``op``, ``params``,
    ``round`` and ``uses`` (the declarations they come from)."""

    def __init__(self, g: nx.DiGraph):
        self.g = g

    @staticmethod
    def empty() -> "ProgramGraph":
        return ProgramGraph(nx.DiGraph())

    def add(self, node: str, op: str, params: dict[str, Any], round: int | None = None,
            uses: list[str] | None = None) -> None:
        self.g.add_node(node, op=op, params=json.loads(json.dumps(params)), round=round, uses=list(uses or []))

    # ---- views
    @property
    def program(self) -> str:
        return self.g.graph.get("program", "")

    @property
    def rounds(self) -> int:
        return sum(1 for _, a in self.g.nodes(data=True) if a["op"] == "generate")

    def nodes(self, op: str | None = None) -> list[str]:
        """Node ids in topological order, optionally only those of one op."""
        order = list(nx.lexicographical_topological_sort(self.g, key=_sort_key))
        return [n for n in order if op is None or self.g.nodes[n]["op"] == op]

    def __getitem__(self, node: str) -> dict[str, Any]:
        return self.g.nodes[node]

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes())

    def resources(self) -> list[str]:
        return [n for n in self.nodes() if self.g.nodes[n]["op"] in ("data", "reward_model", "finetune")]

    # ---- JSON
    def to_json(self) -> str:
        data = nx.node_link_data(self.g, edges="edges")
        return json.dumps(data, indent=1, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "ProgramGraph":
        try:
            data = json.loads(text)
            g = nx.node_link_graph(data, directed=True, multigraph=False, edges="edges")
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"not an aldsl graph file ({e}); create one with `aldsl compile FILE`") from None
        if "format" not in g.graph or "program" not in g.graph:
            raise UserError("not an aldsl graph file (no format/program); create one with `aldsl compile FILE`")
        return ProgramGraph(g)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(p)
        return p

    # ---- renderings
    def label(self, node: str) -> str:
        a = self.g.nodes[node]
        p = a["params"]
        op = a["op"]
        detail = ""
        if op == "prompt":
            t = p["template"]
            detail = t.get("name") or "per-query choice"
            if p.get("demos"):
                detail += f", {p['demos']['k']} demos ({p['demos']['pick']})"
        elif op == "generate":
            gen = p["generator"]
            detail = (f"{gen.get('model')}, L={p['samples']}, tau={gen['decoding']['temperature']}"
                      if "model" in gen else f"candidates {gen['candidates']}")
        elif op == "reward":
            detail = (p["reward"] or "none").split(":")[-1]
        elif op == "select":
            detail = f"keep {p['keep']}"
        elif op == "answer":
            detail = f"{p['select']}, {p['answer']['kind']}"
        elif op == "evaluate":
            detail = ", ".join(e["name"] for e in p["evaluators"])
        elif op in ("reward_model", "finetune"):
            detail = p["kind"]
        elif op == "data":
            detail = Path(p["path"]).name
        return f"{node}\\n{detail}" if detail else node

    def to_dot(self) -> str:
        shapes = {"data": "cylinder", "reward_model": "component", "finetune": "component"}
        lines = [f'digraph "{self.program}" {{', "  rankdir=TB;", '  node [shape=box, style=rounded, fontname="Helvetica"];']
        for n in self.nodes():
            shape = shapes.get(self.g.nodes[n]["op"])
            extra = f", shape={shape}" if shape else ""
            lines.append(f'  "{n}" [label="{self.label(n)}"{extra}];')
        for a, b, d in sorted(self.g.edges(data=True)):
            lines.append(f'  "{a}" -> "{b}" [label="{d.get("flow", "")}", fontsize=9];')
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_png(self, path: str | Path) -> Path:
        """Draw the graph with matplotlib (no graphviz needed): one row per topological generation."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        layers = list(nx.topological_generations(self.g))
        pos: dict[str, tuple[float, float]] = {}
        for depth, layer in enumerate(layers):
            layer = sorted(layer, key=_sort_key)
            for i, n in enumerate(layer):
                pos[n] = (i - (len(layer) - 1) / 2, -depth)
        width = max(len(layer) for layer in layers)
        fig, ax = plt.subplots(figsize=(max(6, 2.6 * width), max(4, 0.9 * len(layers))))
        colors = {"data": "#d9ead3", "reward_model": "#fce5cd", "finetune": "#f4cccc", "input": "#eeeeee",
                  "evaluate": "#cfe2f3", "answer": "#cfe2f3"}
        nx.draw_networkx_edges(self.g, pos, ax=ax, arrows=True, arrowsize=10, edge_color="#888888",
                               node_size=3000)
        for n, (x, y) in pos.items():
            ax.text(x, y, self.label(n).replace("\\n", "\n"), ha="center", va="center", fontsize=8,
                    bbox={"boxstyle": "round", "fc": colors.get(self.g.nodes[n]["op"], "#ffffff"), "ec": "#666666"})
        ax.set_title(f"{self.program}: {self.g.number_of_nodes()} nodes")
        ax.axis("off")
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return p

    def summary(self) -> list[tuple[str, str, str]]:
        """(node, op, detail) rows in topological order."""
        return [(n, self.g.nodes[n]["op"], self.label(n).split("\\n", 1)[-1] if "\\n" in self.label(n) else "")
                for n in self.nodes()]


def _sort_key(node: str) -> str:
    """Resources first, then the chain by round."""
    head, _, tail = node.rpartition("_")
    if tail.isdigit():
        return f"1{int(tail):06d}{head}"
    return {"input": "0", "answer": "2", "evaluate": "3"}.get(node, "0" + node)


def unnamed(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A resource spec without the names of its declarations and of the generator and prompter it
    uses: names never change what a resource computes, so content keys leave them out."""
    out = {k: v for k, v in spec.items() if k != "name"}
    for key in ("generator", "prompter"):
        if isinstance(out.get(key), dict):
            out[key] = {k: v for k, v in out[key].items() if k != "name"}
    return out
