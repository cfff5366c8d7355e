"""The language reference in docs/ is generated from the schema and stays in sync."""

from __future__ import annotations

from pathlib import Path

from aldsl.language.docs import BEGIN, END, reference
from aldsl.language.schema import CONSTRUCTORS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_language_reference_is_up_to_date():
    text = (DOCS / "language.md").read_text()
    generated = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert generated.strip() == reference().strip(), "run: python -m aldsl.language.docs"


def test_every_constructor_is_documented():
    text = (DOCS / "language.md").read_text()
    for c in CONSTRUCTORS:
        assert f"`{c.name}(...)`" in text
