"""Chat rendering shared by every backend that holds a tokenizer."""

from __future__ import annotations

from typing import Any, Sequence


def format_chat(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    """The tokenizer's chat template with a generation prompt; for a tokenizer without one,
    ``Role: content`` lines, then ``Assistant:``."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join([*lines, "Assistant:"])
