"""Chat rendering: the tokenizer's template for local backends, or the messages themselves for
servers that apply their own (``encode_messages``: a prompt string that carries the messages, and
after them any text the answer must start with)."""

from __future__ import annotations

import json
from typing import Any, Sequence

OPEN, CLOSE = "<aldsl:messages>", "</aldsl:messages>"


def format_chat(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    """The tokenizer's chat template with a generation prompt; for a tokenizer without one,
    ``Role: content`` lines, then ``Assistant:``."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join([*lines, "Assistant:"])


def encode_messages(messages: Sequence[dict[str, str]]) -> str:
    """A prompt string that carries chat messages (for servers with a chat API)."""
    return OPEN + json.dumps(list(messages), ensure_ascii=False) + CLOSE


def decode_messages(prompt: str) -> tuple[list[dict[str, str]] | None, str]:
    """(messages, the text after them) of an :func:`encode_messages` prompt; (None, prompt) for plain text."""
    if not prompt.startswith(OPEN):
        return None, prompt
    try:
        messages, end = json.JSONDecoder().raw_decode(prompt, len(OPEN))
    except json.JSONDecodeError:
        return None, prompt
    if not prompt.startswith(CLOSE, end):
        return None, prompt
    return messages, prompt[end + len(CLOSE):]
