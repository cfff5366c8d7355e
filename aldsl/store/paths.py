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


def writable_dir(path: Path, what: str) -> Path:
    """Create ``path`` if needed and prove a file can be created in it (and that ``existing``
    files in it can be rewritten); raises UserError naming ``what`` otherwise."""
    from aldsl.errors import UserError

    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a folder; give a folder (it is created if "
                        "missing), e.g. build/")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".aldsl-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot write into {what} {path}: {exc.strerror or exc}; choose a folder you "
                        "can write, or fix its permissions") from None
    return path


def writable_file(path: Path, what: str) -> None:
    """If ``path`` exists, prove it can be opened for writing; raises UserError otherwise."""
    from aldsl.errors import UserError

    if not path.exists():
        return
    try:
        with open(path, "r+b"):
            pass
    except OSError as exc:
        raise UserError(f"cannot write {what} {path}: {exc.strerror or exc}; fix its permissions or "
                        "choose another --out folder") from None


def private_file(folder: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new file only this user can read, created with O_EXCL in ``folder`` (made 0700), never
    through a symlink; returns its descriptor and path."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(folder)
    if not os.path.isdir(folder) or os.path.islink(folder) or info.st_uid != os.getuid():
        raise OSError(f"{folder} is not a private folder of this user")
    os.chmod(folder, 0o700)
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)  # O_EXCL|O_NOFOLLOW, 0600
    return fd, Path(name)


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
