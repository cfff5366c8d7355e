"""Seeded arithmetic word problems with golden answers and worked solutions.

Problems take 1, 2 or 3 arithmetic steps (about 40/40/20). Each step is one equation in
the worked solution, one per line, e.g. "Tom has 3 apples and buys 5 more apples: 3 + 5 = 8.",
and the last line is exactly "The answer is N.". Operands stay small (2..50, products
below 500) and every intermediate result is a non-negative integer.

``make_preferences`` builds preference pairs (prompt, chosen, rejected) whose rejected
solution has the same format and line count as the chosen one but a wrong final answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any, Collection, Mapping

from aldsl.ops.answers import extract, normalize_number

NAMES = (
    "Tom", "Anna", "Liam", "Maya", "Noah", "Emma", "Omar", "Sofia", "Ravi", "Lena",
    "Jack", "Chloe", "Mateo", "Aisha", "Ben", "Grace", "Kenji", "Zoe", "Diego", "Nora",
    "Sam", "Ivy", "Leo", "Priya", "Max", "Ella", "Hugo", "Mia", "Owen", "Lucy",
)
# (plural, singular, edible)
OBJECTS = (
    ("apples", "apple", True), ("cookies", "cookie", True), ("oranges", "orange", True),
    ("cupcakes", "cupcake", True), ("strawberries", "strawberry", True), ("candies", "candy", True),
    ("muffins", "muffin", True), ("plums", "plum", True), ("marbles", "marble", False),
    ("stickers", "sticker", False), ("pencils", "pencil", False), ("books", "book", False),
    ("cards", "card", False), ("toy cars", "toy car", False), ("balloons", "balloon", False),
    ("shells", "shell", False), ("stamps", "stamp", False), ("crayons", "crayon", False),
)
CONTAINERS = (("boxes", "box"), ("bags", "bag"), ("baskets", "basket"), ("packs", "pack"), ("jars", "jar"))

STEP_MIX = {1: 0.4, 2: 0.4, 3: 0.2}
PRODUCT_LIMIT = 500


@dataclass(frozen=True)
class Step:
    """One equation of a worked solution: ``text: left op right = result.``"""

    text: str
    left: int
    op: str
    right: int
    carried: bool  # ``left`` is the previous step's result

    @property
    def result(self) -> int:
        return apply(self.left, self.op, self.right)

    def line(self, result: int | None = None) -> str:
        """The solution line; ``result`` overrides the (correct) result."""
        shown = self.result if result is None else result
        return f"{self.text}: {self.left} {self.op} {self.right} = {shown}."


@dataclass(frozen=True)
class Problem:
    """A word problem, its steps and its golden answer."""

    question: str
    steps: tuple[Step, ...]

    @property
    def answer(self) -> int:
        return self.steps[-1].result

    def solution(self) -> str:
        return solution_text([s.line() for s in self.steps], self.answer)


def apply(left: int, op: str, right: int) -> int:
    """The exact integer result of ``left op right`` (division must be exact)."""
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if op == "/" and right and left % right == 0:
        return left // right
    raise ValueError(f"{left} {op} {right} has no exact integer result")


def solution_text(lines: list[str], answer: int) -> str:
    """Step lines followed by the final line "The answer is N."."""
    return "\n".join([*lines, f"The answer is {answer}."])


@dataclass(frozen=True)
class _Scene:
    name: str
    friend: str
    plural: str
    singular: str
    edible: bool
    containers: tuple[str, str]


@dataclass(frozen=True)
class _Event:
    kind: str  # "add" | "sub" | "cost" | "share"
    op: str
    operand: int
    clause: str  # what the person does, after their name ("" for cost)


def _event(rng: random.Random, scene: _Scene, kind: str, value: int) -> _Event | None:
    """A random event of ``kind`` changing ``value``, or None if ``kind`` cannot apply to it."""
    obj, friend = scene.plural, scene.friend
    if kind == "add":
        b = rng.randint(2, 50)
        clause = rng.choice(
            (f"buys {b} more {obj}", f"gets {b} more {obj} from {friend}", f"finds {b} more {obj}",
             f"picks up {b} more {obj}")
        )
        return _Event(kind, "+", b, clause)
    if kind == "sub":
        if value < 3:
            return None
        b = rng.randint(2, min(50, value - 1))
        options = [f"gives {b} {obj} to {friend}", f"loses {b} {obj}", f"sells {b} {obj}"]
        if scene.edible:
            options.append(f"eats {b} {obj}")
        return _Event(kind, "-", b, rng.choice(options))
    if kind == "cost":
        prices = [c for c in range(2, 11) if value * c < PRODUCT_LIMIT]
        return _Event(kind, "*", rng.choice(prices), "") if prices else None
    parts = [k for k in range(2, 11) if value % k == 0 and value // k >= 2]
    if not parts:
        return None
    k = rng.choice(parts)
    return _Event(kind, "/", k, f"shares the {obj} equally among {k} friends")


def _step_and_sentence(scene: _Scene, event: _Event, value: int, first: bool) -> tuple[Step, str]:
    """The solution step and question sentence of ``event``; ``first`` when it follows a plain start."""
    if event.kind == "cost":
        sentence = f"Each {scene.singular} costs {event.operand} dollars."
        tail = f"each costs {event.operand} dollars"
    else:
        sentence = f"{scene.name} {event.clause}."
        tail = event.clause
    text = f"{scene.name} has {value} {scene.plural} and {tail}" if first else sentence[:-1]
    return Step(text, value, event.op, event.operand, carried=not first), sentence


def _question_end(scene: _Scene, final: str) -> str:
    if final == "cost":
        return f"How many dollars do all of {scene.name}'s {scene.plural} cost?"
    if final == "share":
        return f"How many {scene.plural} does each friend get?"
    if final == "product":
        return f"How many {scene.plural} does {scene.name} have in all?"
    return f"How many {scene.plural} does {scene.name} have now?"


def generate_problem(rng: random.Random, steps: int) -> Problem:
    """One random problem with exactly ``steps`` equations."""
    if steps not in STEP_MIX:
        raise ValueError(f"steps must be one of {sorted(STEP_MIX)}, got {steps}")
    name, friend = rng.sample(NAMES, 2)
    plural, singular, edible = rng.choice(OBJECTS)
    scene = _Scene(name, friend, plural, singular, edible, rng.choice(CONTAINERS))
    sentences: list[str] = []
    chain: list[Step] = []
    if rng.random() < 0.35:
        a, b = rng.randint(2, 9), rng.randint(2, 12)
        cont, one = scene.containers
        sentences.append(f"{name} has {a} {cont} with {b} {plural} in each {one}.")
        chain.append(Step(f"{name} has {a} {cont} with {b} {plural} in each", a, "*", b, False))
        value = a * b
    else:
        value = rng.randint(2, 50)
        sentences.append(f"{name} has {value} {plural}.")
    final = "product"
    while len(chain) < steps:
        kinds = ["add", "sub", "cost", "share"] if len(chain) == steps - 1 else ["add", "sub"]
        rng.shuffle(kinds)
        # "add" always applies, so some event is found
        event = next(e for e in (_event(rng, scene, k, value) for k in kinds) if e is not None)
        step, sentence = _step_and_sentence(scene, event, value, first=not chain)
        chain.append(step)
        sentences.append(sentence)
        value, final = step.result, event.kind
    return Problem(" ".join([*sentences, _question_end(scene, final)]), tuple(chain))


def _step_counts(n: int) -> list[int]:
    ones, twos = round(n * STEP_MIX[1]), round(n * STEP_MIX[2])
    return [1] * ones + [2] * twos + [3] * (n - ones - twos)


def generate_problems(n: int, rng: random.Random, exclude: Collection[str] = ()) -> list[Problem]:
    """``n`` problems with distinct questions, none of them in ``exclude``."""
    counts = _step_counts(n)
    rng.shuffle(counts)
    seen = set(exclude)
    problems = []
    for steps in counts:
        problem = generate_problem(rng, steps)
        while problem.question in seen:
            problem = generate_problem(rng, steps)
        seen.add(problem.question)
        problems.append(problem)
    return problems


def make_problems(n: int, seed: int, exclude: Collection[str] = ()) -> list[dict[str, Any]]:
    """Records ``id, question, answer, solution, steps`` of ``n`` distinct problems."""
    problems = generate_problems(n, random.Random(seed), exclude)
    return [
        {"id": f"arith-{seed}-{i:04d}", "question": p.question, "answer": str(p.answer),
         "solution": p.solution(), "steps": len(p.steps)}
        for i, p in enumerate(problems)
    ]


def check(answer_text: str, record: Mapping[str, Any]) -> bool:
    """Whether the final number in ``answer_text`` is the record's golden answer."""
    return extract("number", answer_text) == normalize_number(str(record["answer"]))


_SLIPS = (1, -1, 2, -2, 10, -10, 3, -3)


def _propagate(steps: tuple[Step, ...], at: int, wrong: int) -> tuple[list[str], int] | None:
    """Solution lines and final value when step ``at`` yields ``wrong`` and later steps carry it.

    None when a later step then has no non-negative integer result.
    """
    lines = [s.line() for s in steps[:at]] + [steps[at].line(wrong)]
    value = wrong
    for step in steps[at + 1:]:
        left = value if step.carried else step.left
        try:
            value = apply(left, step.op, step.right)
        except ValueError:
            return None
        if value < 0:
            return None
        lines.append(replace(step, left=left).line())
    return lines, value


def wrong_solution(problem: Problem, rng: random.Random) -> tuple[str, int]:
    """A plausible wrong worked solution in the same format, and its (wrong) final answer.

    Usually one step's arithmetic slips and the error propagates; otherwise the equations
    are right and the final line states a wrong answer.
    """
    if rng.random() < 0.75:
        at = rng.randrange(len(problem.steps))
        slips = list(_SLIPS)
        rng.shuffle(slips)
        for slip in slips:
            wrong = problem.steps[at].result + slip
            outcome = _propagate(problem.steps, at, wrong) if wrong >= 0 else None
            if outcome is not None and outcome[1] != problem.answer:
                return solution_text(*outcome), outcome[1]
    final = problem.answer + rng.choice([s for s in _SLIPS if problem.answer + s >= 0])
    return solution_text([s.line() for s in problem.steps], final), final


def make_preferences(n: int, seed: int, exclude: Collection[str] = ()) -> list[dict[str, Any]]:
    """Preference pairs ``id, prompt, chosen, rejected, answer`` from fresh problems (none in ``exclude``)."""
    rng = random.Random(seed)
    records = []
    for i, problem in enumerate(generate_problems(n, rng, exclude)):
        rejected, _ = wrong_solution(problem, rng)
        records.append(
            {"id": f"pref-{seed}-{i:04d}", "prompt": problem.question, "chosen": problem.solution(),
             "rejected": rejected, "answer": str(problem.answer)}
        )
    return records
