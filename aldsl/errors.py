"""User-facing errors: one paragraph naming the place and what to do, never a traceback."""

from __future__ import annotations

import importlib
from types import ModuleType


class UserError(Exception):
    """An error caused by the user's input; the CLI prints it and exits with status 2."""

    def render(self) -> str:
        return str(self)


class NothingToLearn(UserError):
    """A fit (fine-tuning or reward) found no example to learn from, e.g. no sampled rationale passed the
    golden check: in a search the trial with those values fails and the search goes on."""


def require_extra(module: str, extra: str, what: str) -> ModuleType:
    """Import an optional dependency, or stop with a UserError naming the aldsl extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f'{what} needs the {module} package, which aldsl installs as an extra: '
                        f'pip install "aldsl[{extra}]"') from None
