"""What an optimization leaves behind: ``optimized.alp`` (every searched value pinned, still a
readable program) and the artifacts it references, so the folder runs on its own."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from aldsl.language import ast
from aldsl.backends.registry import EMBEDDED
from aldsl.language.check import Checked, check
from aldsl.language.parser import parse
from aldsl.language.pin import pin_source
from aldsl.program import compile
from aldsl.runtime.session import Session

from aldsl.optimizers.evaluation import RecordingStore

OPTIMIZED = "optimized.alp"
ARTIFACTS = "artifacts"


def write_optimized(checked: Checked, values: Mapping[str, Any], folder: Path, header: Sequence[str],
                    replace: Mapping[str, str] | None = None) -> Path:
    """Write ``folder/optimized.alp``: the program with ``values`` pinned (and ``replace`` texts put in
    place of searches), file references rewritten relative to ``folder``, and ``header`` as comments
    on top. Returns its path; the file is checked by compiling it before this returns."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / OPTIMIZED
    moved = check(parse(relocated_source(checked, folder), path=str(target)))
    moved.overrides = dict(checked.overrides)  # --set values of parameters that are not searched
    text = "".join(f"# {line}\n" for line in header) + pin_source(moved, values, replace)
    tmp = target.with_name(f".{OPTIMIZED}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    compile(target)  # it must parse, check and compile as written
    return target


def relocated_source(checked: Checked, folder: Path) -> str:
    """The program text with relative file references (data files, ``file.py:function`` calls, local
    model folders) rewritten so they resolve from ``folder``. Commands are left as written."""
    source, base = checked.program.source, checked.base_dir
    edits: list[tuple[int, int, str]] = []
    for decl, index, arg in _args(checked.program):
        value = arg.value
        if not isinstance(value, ast.String):
            continue
        first = arg.key is None and index == 0
        new: str | None = None
        if decl.kind == "data" and (arg.key == "path" or first):
            new = _moved(value.value, base, folder)
        elif arg.key == "call" and ".py:" in value.value:
            file, _, func = value.value.rpartition(":")
            moved = _moved(file, base, folder)
            new = f"{moved}:{func}" if moved is not None else None
        elif decl.kind == "generator" and decl.call.name == "model" and (arg.key == "name" or first) \
                and value.value not in EMBEDDED and (base / value.value).exists():
            new = _moved(value.value, base, folder)
        if new is not None:
            edits.append((_offset(source, value.pos.line, value.pos.col),
                          _offset(source, value.pos.end_line, value.pos.end_col), _quote(new)))
    for start, end, text in sorted(edits, reverse=True):
        source = source[:start] + text + source[end:]
    return source


def _args(program: ast.Program) -> Iterator[tuple[ast.Decl, int, ast.Arg]]:
    for decl in program.decls:
        for i, arg in enumerate(decl.call.args):
            yield decl, i, arg


def _moved(path: str, base: Path, folder: Path) -> str | None:
    if Path(path).is_absolute():
        return None
    try:
        return os.path.relpath((base / path).resolve(), folder.resolve())
    except ValueError:  # another drive (Windows): keep it absolute
        return str((base / path).resolve())


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _offset(source: str, line: int, col: int) -> int:
    lines = source.split("\n")
    return sum(len(text) + 1 for text in lines[: line - 1]) + col - 1


def recording_session(session: Session) -> tuple[Session, RecordingStore]:
    """A fresh session sharing ``session``'s generation cache, artifact folders and progress bars,
    whose resources load from their artifacts (as the written program would), recording which."""
    fresh = Session(reporter=session.reporter, cache=session.cache, use_cache=session.cache is not None,
                    artifacts=session.artifacts.root, extra_artifacts=session.artifacts.extra, device=session.device)
    store = RecordingStore(fresh.artifacts)
    fresh.artifacts = store
    return fresh, store


def ship_artifacts(store: RecordingStore, session: Session, folder: Path) -> list[str]:
    """Copy every artifact ``store`` saw into ``folder/artifacts``; returns their ``kind/key`` names."""
    shipped = []
    for kind, key in store.used:
        try:
            session.artifacts.copy_to(kind, key, folder / ARTIFACTS)
            shipped.append(f"{kind}/{key}")
        except FileNotFoundError as e:
            warnings.warn(f"could not copy artifact {kind}/{key} into {folder / ARTIFACTS}: {e}", stacklevel=2)
    return shipped

