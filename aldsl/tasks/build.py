"""Regenerate the shipped task data deterministically: ``python -m aldsl.tasks.build [--out DIR]``.

Running it twice gives byte-identical files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from aldsl.tasks.arith import make_preferences, make_problems
from aldsl.tasks.judge import make_judgements
from aldsl.tasks.reviews import make_reviews

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "programs" / "data"


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def build(out: Path = DEFAULT_OUT) -> dict[str, Path]:
    """Write every task data file into ``out``; returns file name -> path."""
    out.mkdir(parents=True, exist_ok=True)
    arith = make_problems(1000, seed=0)
    # The preference pairs train reward models that are then judged on arith.jsonl's test
    # split, and the judge records could train a verifier for it: both use their own seeds
    # and exclude every arith.jsonl question, so no held-out question (or its answer) leaks
    # into their training data. A different seed alone would not rule out a chance repeat.
    seen = [r["question"] for r in arith]
    files = {
        "arith.jsonl": arith,
        "prefs_arith.jsonl": make_preferences(600, seed=1, exclude=seen),
        "reviews.jsonl": make_reviews(300, seed=0),
        "judge.jsonl": make_judgements(600, seed=2, exclude=seen),
    }
    paths = {}
    for name, records in files.items():
        paths[name] = out / name
        _write_jsonl(paths[name], records)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m aldsl.tasks.build", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    for path in build(args.out).values():
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
