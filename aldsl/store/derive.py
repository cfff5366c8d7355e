"""Worked solutions derived from golden answers (``sft(..., solutions = arithmetic)``).

Answer-only arithmetic word problems carry no rationale to fine-tune on, and a small model rarely
samples a correct one (the STaR route keeps lucky numbers in wrong text). The weak-supervision
answer for math word problems (Hong et al., 2021, "Learning by Fixing"; Chatterjee et al., 2021,
"A weakly supervised model for solving math word problems") is to *search* for the equations:
combine the numbers of the question with +, -, * and exact / until the golden answer comes out,
and train on the chain that reaches it. Written by hand because no library does this search; it is
the "24 game" search over the question's numbers, with exact rational arithmetic (``fractions``).

A chain is preferred when it uses every number of the question, then when it is shorter, then when
it takes the numbers in the order the question gives them; commuted duplicates (``a + b``, ``b + a``)
count once. Steps never produce a negative number, a fraction without a short decimal, a zero
before the last step, or an identity (``x * 1``, ``x + 0``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

VERSION = 1  # bump when the search or the text changes what is derived, so checkpoints trained on it are redone
MAX_STEPS = 3  # chains of at most this many operations (two- and three-step problems)
MAX_NUMBERS = 6  # questions with more numbers are not searched (the subsets to search grow as 2^n)
DECIMALS = 4  # an intermediate result must be a decimal with at most this many places
NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w])|(?<![\w.])\d+(?:\.\d+)?(?![\w])")
OPS = ("+", "-", "*", "/")


@dataclass(frozen=True)
class Step:
    """One operation of a chain: ``a op b = value``."""

    a: Fraction
    op: str
    b: Fraction
    value: Fraction


@dataclass(frozen=True)
class Derivation:
    """The chosen chain of a record, and how many distinct chains of its kind (as many numbers, as many
    steps) reached the answer: more than one is an ambiguity the order of the question settled."""

    steps: tuple[Step, ...]
    candidates: int

    def text(self, answer: str) -> str:
        """The worked solution, e.g. ``11 * 8 = 88. 88 - 60 = 28. The answer is 28.``"""
        lines = [f"{_fmt(s.a)} {s.op} {_fmt(s.b)} = {_fmt(s.value)}." for s in self.steps]
        return " ".join(lines + [f"The answer is {answer.strip()}."])


Expr = tuple[tuple[Step, ...], tuple[int, ...]]  # the steps, and the question positions of its numbers in order


def numbers(text: str) -> list[Fraction]:
    """The numbers written in digits in ``text``, in order (``1,200`` and ``2.5`` included)."""
    return [_value(m) for m in NUMBER.finditer(text)]


def parse_answer(answer: object) -> Fraction | None:
    """A golden answer as an exact number (``"$1,200"`` -> 1200), or None when it holds no single number."""
    text = str(answer)
    found = list(NUMBER.finditer(text))
    if len(found) != 1:
        return None
    value = _value(found[0])
    return -value if text[: found[0].start()].rstrip().endswith("-") else value


def derive(question: str, answer: object) -> Derivation | None:
    """The preferred chain of operations over the numbers of ``question`` that reaches ``answer``, or None.

    A dynamic program over subsets of the question's numbers: every value each subset reaches (with
    its preferred expression and how many expressions reach it), up to subsets of ``MAX_STEPS``
    numbers; the subsets one step larger are only searched for the answer."""
    target, nums = parse_answer(answer), numbers(question)
    if target is None or not 2 <= len(nums) <= MAX_NUMBERS:
        return None
    full = (1 << len(nums)) - 1
    reach: dict[int, dict[Fraction, tuple[Expr, int]]] = {1 << i: {v: (((), (i,)), 1)} for i, v in enumerate(nums)}
    hits: list[tuple[tuple, Expr, int]] = []  # (rank, expression, count) per subset that reaches the answer
    for size in range(2, min(MAX_STEPS + 1, len(nums)) + 1):
        last = size == MAX_STEPS + 1
        for mask in (m for m in range(1, full + 1) if m.bit_count() == size):
            table = _combine(mask, reach, target if last else None)
            if not last:
                reach[mask] = {v: e for v, e in table.items() if v != 0}  # a zero only ends a chain
            if target in table:
                expr, count = table[target]
                hits.append(((mask != full, size, expr[1]), expr, count))
    if not hits:
        return None
    rank, expr, _ = min(hits, key=lambda h: h[0])
    return Derivation(expr[0], sum(c for r, _, c in hits if r[:2] == rank[:2]))


def _combine(mask: int, reach: dict[int, dict[Fraction, tuple[Expr, int]]], target: Fraction | None
             ) -> dict[Fraction, tuple[Expr, int]]:
    """Every value one step over two disjoint subsets that make up ``mask`` reaches (only ``target``
    when it is given): its preferred expression (the question's order) and how many reach it."""
    table: dict[Fraction, tuple[Expr, int]] = {}
    a = (mask - 1) & mask
    while a:
        b = mask ^ a
        if a in reach and b in reach:
            for va, ((sa, oa), ca) in reach[a].items():
                for op in OPS:
                    if op in "+*" and a & -a > b & -b:
                        continue  # a + b and b + a are one expression: the question's order writes it
                    wanted = reach[b].items() if target is None else _operand(va, op, target, reach[b])
                    for vb, ((sb, ob), cb) in wanted:
                        value = _apply(va, op, vb)
                        if value is None or (target is not None and value != target):
                            continue
                        expr = (sa + sb + (Step(va, op, vb, value),), oa + ob)
                        old = table.get(value)
                        table[value] = (min(old[0], expr, key=lambda e: e[1]) if old else expr,
                                        (old[1] if old else 0) + ca * cb)
        a = (a - 1) & mask
    return table


def _operand(va: Fraction, op: str, target: Fraction, options: dict[Fraction, tuple[Expr, int]]
             ) -> list[tuple[Fraction, tuple[Expr, int]]]:
    """The entries of ``options`` that make ``va op vb`` equal ``target``."""
    vb = {"+": target - va, "-": va - target, "*": target / va if va else None,
          "/": va / target if target else None}[op]
    return [(vb, options[vb])] if vb in options else []


def _apply(a: Fraction, op: str, b: Fraction) -> Fraction | None:
    """``a op b`` when it is a step worth writing: no negatives, identities or long fractions."""
    if op == "+":
        value = a + b if a and b else None
    elif op == "-":
        value = a - b if b and a >= b else None
    elif op == "*":
        value = a * b if a != 1 and b != 1 else None
    else:
        value = a / b if b and b != 1 else None
    if value is None or value < 0 or not _short(value):
        return None
    return value


def _value(match: re.Match[str]) -> Fraction:
    return Fraction(match.group().replace(",", ""))


def _short(x: Fraction) -> bool:
    return (x * 10 ** DECIMALS).denominator == 1


def _fmt(x: Fraction) -> str:
    if x.denominator == 1:
        return str(x.numerator)
    return f"{float(x):.{DECIMALS}f}".rstrip("0").rstrip(".")
