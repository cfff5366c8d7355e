"""User-facing errors: one paragraph naming the place and what to do, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input; the CLI prints it and exits with status 2."""

    def render(self) -> str:
        return str(self)
