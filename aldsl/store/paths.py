"""Where aldsl keeps files it can rebuild (converted models, the generation cache)."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def cache_dir() -> Path:
    """``$ALDSL_CACHE`` if set, else ``~/.cache/aldsl``; created on demand."""
    root = os.environ.get("ALDSL_CACHE") or str(Path.home() / ".cache" / "aldsl")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that is renamed to ``target`` when the block succeeds.

    Readers never see a half-written ``target``. If another process published ``target``
    first, its copy wins and ours is discarded; on error the temporary directory is removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        tmp.chmod(0o755)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
