"""Content-addressed artifacts: trained reward models and fine-tuned checkpoints.

An artifact is a folder ``ROOT/KIND/KEY/`` holding its files and ``meta.json`` (written last,
so a folder without it is incomplete). ``KEY`` is a content hash of everything that determines
the artifact (training data, settings, base model), so an unchanged spec finds its artifact
and reuses it; a corrupt or mismatched one is reported and rebuilt, never silently used.
"""

from __future__ import annotations

import json
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from aldsl.store.paths import atomic_dir

META = "meta.json"


class ArtifactWarning(UserWarning):
    """An artifact was corrupt or did not match its key and is being rebuilt."""


class ArtifactStore:
    """Artifacts under ``root`` (written there) and read-only ``extra`` folders (searched after)."""

    def __init__(self, root: str | Path, extra: Sequence[str | Path] = ()):
        self.root = Path(root)
        self.extra = [Path(p) for p in extra]

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def find(self, kind: str, key: str, validate: Callable[[Path, dict[str, Any]], None] | None = None) -> Path | None:
        """The folder of a complete, valid artifact, or None. ``validate(folder, meta)`` raises
        on a corrupt artifact; a bad one in ``root`` is moved aside with an ArtifactWarning."""
        for base in [self.root, *self.extra]:
            folder = base / kind / key
            if not folder.exists():
                continue
            try:
                meta = json.loads((folder / META).read_text(encoding="utf-8"))
                if meta.get("key") != key or meta.get("kind") != kind:
                    raise ValueError(f"its meta.json names {meta.get('kind')}/{meta.get('key')}")
                if validate is not None:
                    validate(folder, meta)
                return folder
            except Exception as e:  # any damage: rebuild rather than trust it
                warnings.warn(f"artifact {folder} is corrupt or mismatched ({e}); rebuilding it", ArtifactWarning,
                              stacklevel=2)
                if base == self.root:
                    shutil.rmtree(folder, ignore_errors=True)
        return None

    def meta(self, folder: Path) -> dict[str, Any]:
        return json.loads((folder / META).read_text(encoding="utf-8"))

    @contextmanager
    def create(self, kind: str, key: str, meta: dict[str, Any]) -> Iterator[Path]:
        """Yield a temporary folder to fill; on success it becomes ``root/kind/key`` with meta.json."""
        target = self.path(kind, key)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        with atomic_dir(target) as tmp:
            yield tmp
            (tmp / META).write_text(json.dumps({**meta, "kind": kind, "key": key}, indent=1, sort_keys=True,
                                               default=str), encoding="utf-8")

    def copy_to(self, kind: str, key: str, destination: str | Path) -> Path:
        """Copy an artifact (found anywhere) into ``destination/kind/key`` (for shipping a program)."""
        source = self.find(kind, key)
        if source is None:
            raise FileNotFoundError(f"no artifact {kind}/{key}")
        target = Path(destination) / kind / key
        if not target.exists():
            shutil.copytree(source, target)
        return target
