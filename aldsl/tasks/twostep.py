"""Seeded two-step word problems in phrasings the arithmetic task never uses, with answers only
(fields ``id``, ``question``, ``answer``: no worked solutions). A task the optimizer was not tuned
on, for ``space = auto`` (it proposes an outcome reward and fine-tuning on worked solutions derived
from the answers, ``solutions = arithmetic``).

Each problem chains two operations on small non-negative integers: a quantity changes (+ or -),
then is grouped, shared or repeated (* or an exact /), e.g. "A bakery bakes 18 loaves before noon
and 6 after. It packs them 4 to a crate. How many crates does it fill?" (answer 6).
"""

from __future__ import annotations

import random
from typing import Any, Callable

Scene = Callable[[random.Random], tuple[str, int]]


def _bakery(rng: random.Random) -> tuple[str, int]:
    per = rng.randint(2, 6)
    total = per * rng.randint(3, 9)
    first = rng.randint(1, total - 1)
    return (f"A bakery bakes {first} loaves before noon and {total - first} after. It packs them {per} to a "
            "crate. How many crates does it fill?", total // per)


def _bus(rng: random.Random) -> tuple[str, int]:
    start, off = rng.randint(12, 40), rng.randint(1, 10)
    trips = rng.randint(2, 5)
    return (f"A bus leaves with {start} riders and {off} get off at the first stop. The same number stays on "
            f"for each of {trips} identical trips. How many rides is that in total?", (start - off) * trips)


def _garden(rng: random.Random) -> tuple[str, int]:
    rows, per = rng.randint(2, 8), rng.randint(3, 9)
    eaten = rng.randint(1, rows * per - 1)
    return (f"Someone plants {rows} rows of tulips with {per} bulbs in every row. Squirrels dig up {eaten} "
            "bulbs. How many bulbs remain in the ground?", rows * per - eaten)


def _savings(rng: random.Random) -> tuple[str, int]:
    weekly, weeks = rng.randint(3, 15), rng.randint(2, 8)
    spent = rng.randint(1, weekly * weeks - 1)
    return (f"Every week a student puts {weekly} coins in a jar. After {weeks} weeks the student takes out "
            f"{spent} coins for a book. How many coins are left in the jar?", weekly * weeks - spent)


def _library(rng: random.Random) -> tuple[str, int]:
    shelves = rng.randint(2, 6)
    total = shelves * rng.randint(4, 12)
    extra = rng.randint(1, 20)
    return (f"A library gets {total} new novels and spreads them evenly over {shelves} shelves, then adds "
            f"{extra} more novels to the first shelf. How many novels are on the first shelf?",
            total // shelves + extra)


SCENES: tuple[Scene, ...] = (_bakery, _bus, _garden, _savings, _library)


def make_twostep(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` distinct answer-only problems (a seeded mix of the scenes)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    while len(out) < n:
        question, answer = rng.choice(SCENES)(rng)
        if question in seen:
            continue
        seen.add(question)
        out.append({"id": f"twostep-{seed}-{len(out):04d}", "question": question, "answer": str(answer)})
    return out
