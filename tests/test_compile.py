"""Compiler and graph: the shipped programs, the node-count formula, JSON round trips, params."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
import subprocess
import sys

import networkx as nx
import pytest

import aldsl
from aldsl.compiler.builder import node_count
from aldsl.errors import UserError
from aldsl.compiler import render
from aldsl.compiler.graph import ProgramGraph
from aldsl.language.parser import grammar_text

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = sorted((ROOT / "programs").glob("*.alp"))
TABLE1_ROWS = ["supervised fine-tuning", "inverserlignment", "rlhf", "zero-shot prompting", "few-shot prompting",
               "thought processes", "prompt optimization", "reward models in rlhf", "llms for evaluation",
               "llms for robotics", "llms for bayesian optimization"]


def write_program(tmp_path: Path, body: str) -> Path:
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"q": f"{i} + 1", "a": str(i + 1), "s": f"{i} + 1 = {i + 1}"})
                                                 + "\n" for i in range(10)))
    path = tmp_path / "t.alp"
    path.write_text('program t "test"\ndata d = jsonl("data.jsonl", input = "q", target = "a", demo = "s")\n' + body)
    return path


SEARCHY = """
generator g = model("smollm2-135m", temperature = 0.7 in [0.0, 1.2], top_p = 0.9 in log[0.5, 1.0])
prompter p = prompt(template = cot in {cot, zero_shot, direct}, demos = demos(d.train, k = 1 in [0, 4]))
reward crit = critic()
evaluator acc = numeric_match()
flow main = loop(d, generator = g, prompter = p, rounds = {T}, samples = {L} in [1, 16], reward = crit,
                 select = argmax, keep = 2, evaluator = acc)
"""


def test_every_table1_row_has_a_program():
    assert len(PROGRAMS) >= 11
    heads = [p.read_text().splitlines()[0].lower() for p in PROGRAMS]
    for row in TABLE1_ROWS:
        assert any(row in h for h in heads), f"no program's first comment names the row {row!r}"


@pytest.mark.parametrize("path", PROGRAMS, ids=[p.stem for p in PROGRAMS])
def test_shipped_programs_compile(path):
    compiled = aldsl.compile(path)
    g = compiled.graph
    assert nx.is_directed_acyclic_graph(g)
    rounds = compiled.program_graph.rounds
    assert g.number_of_nodes() == node_count(rounds, len(compiled.program_graph.resources()))
    for name in compiled.search_space.names:  # every search parameter sets some node
        assert compiled.search_space[name].targets, name


@pytest.mark.parametrize("T", [1, 2, 5, 13])
@pytest.mark.parametrize("L", [1, 4])
def test_node_count_formula(tmp_path, T, L):
    compiled = aldsl.compile(write_program(tmp_path, SEARCHY.replace("{T}", str(T)).replace("{L}", str(L))))
    pg = compiled.program_graph
    # resources: the data source and the critic reward model, when something uses it (T > 1 or argmax among L > 1)
    used = T > 1 or L > 1
    assert sorted(pg.resources()) == ["data:d"] + (["reward:crit"] if used else [])
    assert compiled.graph.number_of_nodes() == node_count(T, 1 + used) == 4 * T + 4 + used
    assert len(pg.nodes("generate")) == T
    for n in pg.nodes("generate"):
        assert pg[n]["params"]["samples"] == L


def test_chain_order_and_edges(tmp_path):
    pg = aldsl.compile(write_program(tmp_path, SEARCHY.replace("{T}", "2").replace("{L}", "3"))).program_graph
    chain = [n for n in pg.nodes() if pg[n]["op"] not in ("data", "reward_model")]
    assert chain == ["input", "prompt_1", "generate_1", "reward_1", "select_1",
                     "prompt_2", "generate_2", "reward_2", "select_2", "answer", "evaluate"]
    assert pg.g.has_edge("reward:crit", "reward_2")
    assert pg.g.has_edge("data:d", "prompt_1")  # the demo pool feeds the prompter
    assert pg["select_2"]["params"]["last"] and not pg["select_1"]["params"]["last"]
    assert pg["prompt_2"]["params"]["followup"]["name"] == "feedback"


def test_json_round_trip_is_exact(tmp_path):
    compiled = aldsl.compile(write_program(tmp_path, SEARCHY.replace("{T}", "3").replace("{L}", "2")))
    again = ProgramGraph.from_json(compiled.to_json())
    assert nx.utils.graphs_equal(compiled.graph, again.g)
    assert compiled.graph.graph == again.g.graph
    for n in compiled.graph:
        assert compiled.graph.nodes[n] == again.g.nodes[n]
    for a, b, d in compiled.graph.edges(data=True):
        assert again.g.edges[a, b] == d
    assert again.to_json() == compiled.to_json()


@pytest.mark.parametrize("path", PROGRAMS, ids=[p.stem for p in PROGRAMS])
def test_saved_graph_reloads_without_source(tmp_path, path):
    compiled = aldsl.compile(path)
    saved = compiled.save(tmp_path / "build")
    loaded = aldsl.load_graph(saved)
    assert nx.utils.graphs_equal(loaded.graph, compiled.graph)
    assert loaded.search_space.to_json() == compiled.search_space.to_json()
    assert loaded.values == compiled.values


def test_search_space_and_with_params(tmp_path):
    compiled = aldsl.compile(write_program(tmp_path, SEARCHY.replace("{T}", "1").replace("{L}", "4")))
    space = compiled.search_space
    assert space.names == ["g.temperature", "g.top_p", "p.template", "p.demos.k", "main.samples"]
    assert space["g.top_p"].log and space["p.demos.k"].kind == "int"
    assert space["p.template"].choices == ("cot", "zero_shot", "direct")
    assert space["main.samples"].targets == ("generate_1",)
    concrete = compiled.with_params({"main.samples": 9, "p.template": "direct", "p.demos.k": 0})
    pg = concrete.program_graph
    assert pg["generate_1"]["params"]["samples"] == 9
    assert pg["prompt_1"]["params"]["template"]["body"] == "{x}"
    assert pg["prompt_1"]["params"]["demos"]["k"] == 0
    assert concrete.values["g.temperature"] == 0.7  # untouched values keep their defaults
    assert compiled.program_graph["generate_1"]["params"]["samples"] == 4  # the original is unchanged


@pytest.mark.parametrize("values,message", [
    ({"main.samples": 0}, "outside [1, 16]"),
    ({"main.samples": 2.5}, "must be an integer"),
    ({"p.template": "nope"}, "is not one of {cot, zero_shot, direct}"),
    ({"g.nope": 1}, "unknown search parameter 'g.nope'"),
    ({"g.temperature": "hot"}, "must be a number"),
])
def test_with_params_rejects_bad_values(tmp_path, values, message):
    compiled = aldsl.compile(write_program(tmp_path, SEARCHY.replace("{T}", "1").replace("{L}", "4")))
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("{", r"\{")):
        compiled.with_params(values)


def test_rewards_and_finetunes_use_default_generator_settings(tmp_path):
    body = """
generator g = model("smollm2-135m", temperature = 0.3 in [0.0, 1.0], finetune = none in {none, ft})
finetune ft = sft(d.train, steps = 5)
prompter p = prompt(template = cot in {cot, direct})
reward orm = outcome(d.train)
evaluator acc = numeric_match()
flow main = loop(d, generator = g, prompter = p, samples = 2, reward = orm, select = argmax, evaluator = acc)
"""
    compiled = aldsl.compile(write_program(tmp_path, body))
    a = compiled.with_params({"g.temperature": 0.9, "p.template": "direct", "g.finetune": "ft"}).program_graph
    b = compiled.program_graph
    assert a["reward:orm"]["params"] == b["reward:orm"]["params"]  # trained once for every trial
    assert a["generate_1"]["params"]["generator"]["finetune"] == "finetune:ft"
    assert a.g.has_edge("finetune:ft", "generate_1") and "finetune:ft" not in b.g
    # theta and psi coupled: the fine-tuning trains on the trial's prompter (the format it is searched with)
    assert a["finetune:ft"]["params"]["prompter"]["template"]["name"] == "direct"


def test_dot_and_png(tmp_path):
    compiled = aldsl.compile(write_program(tmp_path, SEARCHY.replace("{T}", "2").replace("{L}", "2")))
    dot = render.to_dot(compiled.program_graph)
    assert dot.startswith('digraph "t"') and '"prompt_2" -> "generate_2"' in dot
    png = render.to_png(compiled.program_graph, tmp_path / "g.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_compile_from_source_text(tmp_path):
    path = write_program(tmp_path, SEARCHY.replace("{T}", "1").replace("{L}", "1"))
    from_text = aldsl.compile(path.read_text().replace('"data.jsonl"', json.dumps(str(tmp_path / "data.jsonl"))))
    assert from_text.graph.number_of_nodes() == aldsl.compile(path).graph.number_of_nodes()


def test_load_graph_errors(tmp_path):
    with pytest.raises(UserError, match="no such graph file"):
        aldsl.load_graph(tmp_path / "missing.graph.json")
    bad = tmp_path / "bad.graph.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not an aldsl graph file"):
        aldsl.load_graph(bad)


def test_grammar_ships_inside_the_wheel(tmp_path):
    out = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next(out.glob("aldsl-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert z.read("aldsl/_grammar/alp.lark").decode() == grammar_text()
    assert any(n.startswith("aldsl/optimizers/") for n in names)
    assert not any(n.startswith("optimizers/") for n in names)  # no generic top-level package
    assert not any(".venv" in n or n.endswith(".pyc") for n in names)


def test_set_overrides_parameters_that_are_not_searched(tmp_path):
    path = write_program(tmp_path, SEARCHY.replace("{T}", "1").replace("{L}", "4"))
    compiled = aldsl.compile(path, {"g.max_tokens": 12, "main.rounds": 2, "p.demos.pick": "nearest",
                                    "main.samples": 3, "crit.generator": "g"})
    pg = compiled.program_graph
    assert pg["generate_1"]["params"]["generator"]["decoding"]["max_tokens"] == 12
    assert pg.rounds == 2 and pg["prompt_1"]["params"]["demos"]["pick"] == "nearest"
    assert pg["generate_1"]["params"]["samples"] == 3  # a search parameter: pinned, still searchable
    assert compiled.search_space.names == aldsl.compile(path).search_space.names
    with pytest.raises(UserError, match="'max_tokens' must be at least 1"):
        aldsl.compile(path, {"g.max_tokens": 0})
    with pytest.raises(UserError, match="has no parameter 'tokens'"):
        aldsl.compile(path, {"g.tokens": 5})


def test_pinned_source_keeps_comments_and_writes_overrides(tmp_path):
    from aldsl.language.pin import pin_source

    path = write_program(tmp_path, "# a comment that stays\n" + SEARCHY.replace("{T}", "1").replace("{L}", "4"))
    compiled = aldsl.compile(path, {"main.samples": 6, "p.template": "direct", "g.max_tokens": 12,
                                    "p.demos.seed": 5, "main.keep": 1})
    text = pin_source(compiled.checked, compiled.values)
    assert "# a comment that stays" in text and " in [" not in text and " in {" not in text
    assert "max_tokens = 12" in text and "seed = 5" in text and "samples = 6" in text
    pinned = tmp_path / "pinned.alp"
    pinned.write_text(text)
    again = aldsl.compile(pinned)
    assert len(again.search_space) == 0
    assert set(again.graph) == set(compiled.graph)
    for n in compiled.graph:  # the same concrete program: every node's parameters agree
        assert again.graph.nodes[n]["params"] == compiled.graph.nodes[n]["params"], n


def test_several_overrides_of_one_declaration_are_each_written_in_place():
    from aldsl.language.pin import pin_source

    compiled = aldsl.compile(ROOT / "programs" / "01_sft.alp",
                             {"sft_demos.steps": 2, "sft_demos.batch": 3, "sft_demos.queries": 8})
    line = next(x for x in pin_source(compiled.checked, {}).splitlines() if "sft(" in x)
    assert line == "finetune sft_demos = sft(problems.train, steps = 2, lr = 5e-5, batch = 3, queries = 8)"


def test_a_reward_trains_on_the_base_model_so_a_pinned_fine_tune_makes_no_cycle(tmp_path):
    from aldsl.language.pin import pin_source

    compiled = aldsl.compile(ROOT / "programs" / "03_rlhf.alp", {"g.finetune": "rlhf"})
    pinned = tmp_path / "pinned.alp"
    pinned.write_text(pin_source(compiled.checked, compiled.values).replace('"data/', f'"{ROOT}/programs/data/'))
    for program in (compiled, aldsl.compile(pinned)):  # the search's trial and the written program
        graph = program.program_graph
        assert graph["reward:bt"]["params"]["generator"]["finetune"] is None
        assert graph["generate_1"]["params"]["generator"]["finetune"] == "finetune:rlhf"
        assert graph.nodes().index("finetune:rlhf") > graph.nodes().index("reward:bt")


@pytest.mark.parametrize("name", ["quickstart.alp", "01_sft.alp", "02_inverse_rlignment.alp", "03_rlhf.alp",
                                  "08_reward_model.alp"])
def test_a_pinned_program_trains_the_resources_its_search_used(name, tmp_path):
    """Pinning non-default values must not change a reward's or fine-tuning's training (their content
    keys ignore names), nor any node of the chain."""
    from aldsl.compiler.specs import unnamed
    from aldsl.language.pin import pin_source

    source = ROOT / "programs" / name
    space = aldsl.compile(source).search_space
    values = {p.name: (p.choices[-1] if p.choices is not None else (int(p.high) if p.kind == "int" else p.high))
              for p in space}
    trial = aldsl.compile(source, values)
    pinned = tmp_path / name
    pinned.write_text(pin_source(trial.checked, trial.values).replace('"data/', f'"{ROOT}/programs/data/'))
    written = aldsl.compile(pinned)
    assert len(written.search_space) == 0
    for node in trial.program_graph.nodes():
        a, b = trial.program_graph[node], written.program_graph[node]
        if a["op"] in ("reward_model", "finetune"):
            assert unnamed(a["params"]) == unnamed(b["params"]), node
        elif not node.startswith("data:"):
            assert a["params"] == b["params"], node


def test_prompts_with_demonstrations_stop_where_the_next_one_would_start():
    def stops(name: str, values: dict) -> list[str]:
        graph = aldsl.compile(ROOT / "programs" / name, values).program_graph
        return graph["generate_1"]["params"]["generator"]["decoding"]["stop"]

    assert stops("05_few_shot.alp", {}) == ["\nQ:"]
    assert stops("05_few_shot.alp", {"p.demos.k": 0}) == []
    assert stops("06_thought_process.alp", {}) == ["\n", "\nQ:"]  # its own stop first
    assert stops("quickstart.alp", {}) == [] and stops("quickstart.alp", {"p.demos.k": 2}) == ["\nQ:"]


@pytest.mark.parametrize("path", PROGRAMS, ids=lambda p: p.name)
def test_every_node_reads_as_its_typed_spec_and_writes_back_exactly(path):
    graph = aldsl.compile(path).program_graph
    for node in graph.nodes():
        spec = graph.spec(node)
        assert type(spec).__name__ != "dict" and spec.to_json() == graph[node]["params"], node


def test_a_node_of_unknown_kind_is_a_clear_error():
    from aldsl.compiler.graph import UnknownNode
    from aldsl.runtime.executor import Executor

    graph = aldsl.compile(ROOT / "programs" / "quickstart.alp").program_graph
    graph.g.add_node("mystery", op="teleport", params={}, round=None, uses=[])
    with pytest.raises(UnknownNode, match="'mystery'.*'teleport'.*recompile"):
        Executor(graph).run([{"id": "1", "x": "1 + 1?", "y": "2", "demo": None}])
