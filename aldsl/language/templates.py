"""Built-in prompt templates and the slot renderer.

Slots are ``{name}`` with ``name`` an identifier: ``{x}`` (the query), ``{demos}``, ``{history}``
(earlier thoughts and rewards, rounds t > 1), ``{candidate}`` (critic and judge prompts) and any
field of the record. Braces around anything else (JSON examples, code) are left as they are.
"""

from __future__ import annotations

import re
from typing import Mapping

SLOT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

BUILTIN: dict[str, dict[str, object]] = {
    "direct": {"body": "{x}"},
    "zero_shot": {"body": "Question: {x}\nAnswer:"},
    "cot": {"body": "{x}\nLet's think step by step."},
    "plan_solve": {"body": "{x}\nLet's first understand the problem and devise a plan to solve it. "
                   "Then, let's carry out the plan and solve the problem step by step."},
    "concise": {"body": "{x}\nReply with the final answer only."},
    "feedback": {"body": "{x}\n\nEarlier attempts and their scores:\n{history}\n\n"
                 "Write an improved answer."},
    "critic": {"body": "Question: {x}\nProposed answer: {candidate}\n"
               "Is the proposed answer correct? Answer yes or no.", "prefill": ""},
    "judge": {"body": "Question: {x}\nResponse: {candidate}\n"
              "Is the response correct and good? Answer yes or no.", "prefill": ""},
}
DEFAULTS: dict[str, object] = {"system": None, "demo": "Q: {x}\nA: {demo}", "prefill": ""}


def builtin(name: str) -> dict[str, object]:
    """A built-in template as a full spec (body, system, demo, prefill, name)."""
    return {**DEFAULTS, **BUILTIN[name], "name": name}


def slots(text: str) -> list[str]:
    """The slot names a template uses, in order of first use."""
    return list(dict.fromkeys(SLOT.findall(text)))


class MissingSlot(KeyError):
    """A template names a slot the record does not have."""


def render(text: str, values: Mapping[str, object]) -> str:
    """Fill ``{name}`` slots from ``values``; a missing slot raises MissingSlot."""

    def fill(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in values:
            raise MissingSlot(key)
        v = values[key]
        return "" if v is None else str(v)

    return SLOT.sub(fill, text)
