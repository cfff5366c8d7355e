"""What the cache folder holds (``aldsl cache info``) and pruning it (``aldsl cache prune``).

Units of the cache, each rebuilt on demand when removed: converted models (``models/NAME``), trained
artifacts (``artifacts/KIND/KEY``: reward models, fine-tuned checkpoints), crash reports, and the
generation cache (``generations.sqlite``, one file: prune removes it whole, and only when asked).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from aldsl.errors import UserError

GENERATIONS = "generations.sqlite"


@dataclass(frozen=True)
class Unit:
    """One removable thing in the cache: its kind, path, size in bytes and last change (epoch s)."""

    kind: str
    path: Path
    size: int
    mtime: float


def units(root: Path) -> list[Unit]:
    """Every unit under the cache folder ``root``, oldest first."""
    found = []
    for folder, kind in [(root / "models", "models"), (root / "crashes", "crashes")]:
        found += [_unit(kind, p) for p in _children(folder)]
    for kind_dir in _children(root / "artifacts"):
        if kind_dir.is_dir():
            found += [_unit(f"artifacts/{kind_dir.name}", p) for p in _children(kind_dir)]
    for p in sorted(root.glob(f"{GENERATIONS}*")):  # the database and its -wal/-shm files
        found.append(_unit("generations", p))
    return sorted(found, key=lambda u: u.mtime)


def prune(root: Path, older_than_s: float | None = None, max_bytes: int | None = None,
          generations: bool = False, dry_run: bool = False) -> list[Unit]:
    """Remove units changed more than ``older_than_s`` ago, then the oldest until the cache is at most
    ``max_bytes``; the generation cache only with ``generations``. Returns what was (or would be) removed."""
    every = units(root)
    candidates = [u for u in every if generations or u.kind != "generations"]
    now = time.time()
    removed = [u for u in candidates if older_than_s is not None and now - u.mtime > older_than_s]
    if max_bytes is not None:
        total = sum(u.size for u in every) - sum(u.size for u in removed)
        for u in candidates:
            if total <= max_bytes:
                break
            if u not in removed:
                removed.append(u)
                total -= u.size
    remove(removed, dry_run)
    return removed


def remove(found: Iterable[Unit], dry_run: bool = False) -> None:
    """Delete these units (nothing with ``dry_run``)."""
    for u in [] if dry_run else found:
        if u.path.is_dir():
            shutil.rmtree(u.path, ignore_errors=True)
        else:
            u.path.unlink(missing_ok=True)


def unreferenced(root: Path, folders: Iterable[Path], kind: str = "artifacts/finetune") -> list[Unit]:
    """The ``kind`` artifacts of the cache that no ``report.json`` under ``folders`` (the output folders of
    ``aldsl optimize``, whose optimized programs and studies name the artifacts they use) references."""
    wanted: set[str] = set()
    for folder in folders:
        if not Path(folder).is_dir():
            raise UserError(f"--unreferenced {folder}: no such folder; name the --out folder of aldsl optimize")
        for report in Path(folder).rglob("report.json"):
            try:
                wanted.update(str(a) for a in json.loads(report.read_text(encoding="utf-8")).get("artifacts", []))
            except (OSError, ValueError, AttributeError):
                raise UserError(f"{report}: not a readable report.json of aldsl optimize; fix or remove it") from None
    prefix = kind.removeprefix("artifacts/")
    return [u for u in units(root) if u.kind == kind and f"{prefix}/{u.path.name}" not in wanted]


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``45m`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhm])\s*", text)
    if not m:
        raise UserError(f"--older-than {text!r}: write a number and a unit, e.g. 30d, 12h or 45m")
    return float(m[1]) * {"d": 86400, "h": 3600, "m": 60}[m[2]]


def parse_size(text: str) -> int:
    """``5G``, ``500M``, ``20K``, ``1000`` (bytes) -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise UserError(f"--max-size {text!r}: write a size, e.g. 5G, 500M or 20K")
    return int(float(m[1]) * 1024 ** " KMGT".index(m[2].upper() or " "))


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def _unit(kind: str, path: Path) -> Unit:
    if path.is_dir():
        files = [f for f in path.rglob("*") if f.is_file()]
        size = sum(f.stat().st_size for f in files)
        mtime = max([path.stat().st_mtime, *(f.stat().st_mtime for f in files)])
    else:
        stat = path.stat()
        size, mtime = stat.st_size, stat.st_mtime
    return Unit(kind, path, size, mtime)
