"""ProgramGraph: the networkx execution graph and its JSON form (renderings: ``compiler.render``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import networkx as nx

from aldsl.compiler.specs import SPECS, NodeSpec, SpecError
from aldsl.errors import UserError


class ProgramGraph:
    """A compiled program: a ``networkx.DiGraph`` whose nodes carry ``op``, ``params``,
    ``round`` and ``uses`` (the declarations they come from)."""

    def __init__(self, g: nx.DiGraph):
        self.g = g
        self._specs: dict[str, NodeSpec] = {}

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
        order = list(nx.lexicographical_topological_sort(self.g, key=sort_key))
        return [n for n in order if op is None or self.g.nodes[n]["op"] == op]

    def __getitem__(self, node: str) -> dict[str, Any]:
        return self.g.nodes[node]

    def spec(self, node: str) -> NodeSpec:
        """The typed spec of a node (read from its JSON parameters once)."""
        if node not in self._specs:
            if node not in self.g:
                raise SpecError(f"the graph of {self.program!r} has no node {node!r}; recompile the program")
            op = self.g.nodes[node]["op"]
            if op not in SPECS:
                raise UnknownNode(f"node {node!r} of {self.program!r} has op {op!r}, which this version of aldsl "
                                  f"cannot run (known: {', '.join(SPECS)}); recompile the program with it")
            self._specs[node] = SPECS[op].from_json(self.g.nodes[node]["params"])
        return self._specs[node]

    def chain(self, op: str, round: int) -> str:
        """The chain node of ``op`` in round ``round`` (``prompt``, ``generate``, ``reward``, ``select``)."""
        return f"{op}_{round}"

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


class UnknownNode(SpecError):
    """A node whose op no interpreter method runs."""


def sort_key(node: str) -> str:
    """Resources first, then the chain by round."""
    head, _, tail = node.rpartition("_")
    if tail.isdigit():
        return f"1{int(tail):06d}{head}"
    return {"input": "0", "answer": "2", "evaluate": "3"}.get(node, "0" + node)
