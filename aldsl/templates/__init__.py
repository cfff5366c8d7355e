"""Files that ship with aldsl: the starter project ``aldsl init`` writes."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from aldsl.errors import UserError

STARTER_FILES = ("program.alp", "data.jsonl", "new_questions.jsonl", "README.md")


def write_starter(folder: Path, model: str = "smollm2-135m") -> Path:
    """Write the starter project into ``folder`` (new or empty), with ``model`` as its generator's model."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UserError(f"{folder}: already exists and is not an empty folder; name a new folder for the project")
    if not re.fullmatch(r'[^"\\\n]+', model):
        raise UserError(f"--model {model!r}: a model name cannot contain quotes, backslashes or newlines")
    folder.mkdir(parents=True, exist_ok=True)
    source = resources.files(__name__) / "starter"
    for name in STARTER_FILES:
        text = (source / name).read_text(encoding="utf-8")
        text = text.replace("{{model}}", model).replace("{{name}}", folder.resolve().name)
        (folder / name).write_text(text, encoding="utf-8")
    return folder
