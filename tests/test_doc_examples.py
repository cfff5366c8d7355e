"""Every ```alp block of the README and docs/ compiles, and a block naming a shipped program matches it.

A block marked ```alp is a whole program (compiled as if it were a file in programs/); one marked
```alp fragment is a few declarations, compiled in the context of programs/quickstart.alp (each
replaces the quickstart's declaration of the same name, a flow or optimize replaces its flow or
optimize, and the rest are added).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aldsl.compiler.builder import compile_checked
from aldsl.language.check import check
from aldsl.language.parser import parse

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ROOT / "programs"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```alp( fragment)?\n(.*?)^```", re.S | re.M)
LABEL = re.compile(r"\s*# (programs/\S+\.alp)\s*\n")


def blocks() -> list[tuple[str, bool, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in BLOCK.finditer(text):
            line = text[: m.start()].count("\n") + 1
            found.append((f"{doc.name}:{line}", bool(m.group(1)), m.group(2)))
    return found


def compile_text(source: str) -> None:
    """Parse, check and compile ``source`` as a file of programs/ (relative paths resolve there)."""
    compile_checked(check(parse(source, path=str(PROGRAMS / "doc_example.alp"))))


def in_quickstart(fragment: str) -> str:
    """The quickstart's text with the fragment's declarations put in place of (or beside) its own."""
    base = (PROGRAMS / "quickstart.alp").read_text(encoding="utf-8")
    added = parse("program fragment\n" + fragment).decls
    names = {d.name for d in added}
    singletons = {d.kind for d in added} & {"flow", "optimize"}  # a program has one of each
    program = parse(base)
    lines = base.split("\n")
    replaced = [d for d in program.decls if d.name in names or d.kind in singletons]
    for d in sorted(replaced, key=lambda d: -d.pos.line):
        del lines[d.pos.line - 1: d.pos.end_line]
    return "\n".join(lines) + "\n" + fragment


def code(text: str) -> list[str]:
    """A program's text without comments and layout, as tokens."""
    return re.sub(r"#[^\n]*", "", text).split()


BLOCKS = blocks()


def test_the_docs_have_program_examples():
    assert len(BLOCKS) >= 10 and any(not fragment for _, fragment, _ in BLOCKS)


@pytest.mark.parametrize("where, fragment, body", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_every_alp_block_compiles(where: str, fragment: bool, body: str):
    compile_text(in_quickstart(body) if fragment else body)


@pytest.mark.parametrize("where, body", [(w, b) for w, f, b in BLOCKS if LABEL.match(b)],
                         ids=[w for w, f, b in BLOCKS if LABEL.match(b)])
def test_a_block_that_names_a_program_shows_that_program(where: str, body: str):
    path = ROOT / LABEL.match(body).group(1)
    assert code(body) == code(path.read_text(encoding="utf-8")), f"{where} differs from {path.name}"
