"""LLM-as-judge task from arithmetic problems: is a proposed final answer correct?

Exactly half the records (rounded down) propose the correct answer (label "yes"); the rest
propose a near miss (label "no"), the final answer of a plausible wrong worked solution.
"""

from __future__ import annotations

import random
from typing import Any, Collection

from aldsl.tasks.arith import generate_problems, wrong_solution

INSTRUCTION = "Is the proposed answer correct? Answer yes or no."


def format_query(question: str, proposed: str) -> str:
    """The judge's input text for one question and proposed answer."""
    return f"Question: {question}\nProposed answer: {proposed}\n{INSTRUCTION}"


def make_judgements(n: int, seed: int, exclude: Collection[str] = ()) -> list[dict[str, Any]]:
    """``n`` records ``id, question, answer, proposed, query, label`` (none of the questions in ``exclude``)."""
    rng = random.Random(seed)
    problems = generate_problems(n, rng, exclude)
    labels = ["yes"] * (n // 2) + ["no"] * (n - n // 2)
    rng.shuffle(labels)
    records = []
    for i, (problem, label) in enumerate(zip(problems, labels)):
        proposed = problem.answer if label == "yes" else wrong_solution(problem, rng)[1]
        records.append(
            {"id": f"judge-{seed}-{i:04d}", "question": problem.question, "answer": str(problem.answer),
             "proposed": str(proposed), "query": format_query(problem.question, str(proposed)), "label": label}
        )
    return records
