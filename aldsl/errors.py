"""User-facing errors: one paragraph naming the place and what to do, never a traceback."""

from __future__ import annotations

import importlib
from types import ModuleType


class UserError(Exception):
    """An error caused by the user's input; the CLI prints it and exits with status 2."""

    def render(self) -> str:
        return str(self)


def require_extra(module: str, extra: str, what: str) -> ModuleType:
    """Import an optional dependency, or stop with a UserError naming the aldsl extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f'{what} needs the {module} package, which aldsl installs as an extra: '
                        f'pip install "aldsl[{extra}]"') from None
