"""Shared fixtures: a tiny random model with the real SmolLM2 tokenizer, and an isolated cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Rebuildable files (converted models, the tiny model) live in the checkout, shared by xdist workers.
os.environ.setdefault("ALDSL_CACHE", str(ROOT / ".aldsl-cache"))
# Tests run small models, where torch's thread pool costs more than it gains (measured here: a tiny
# matmul takes 4 us on one thread, 3-15 ms on two while another process is busy), and xdist runs
# workers side by side. One thread each unless the caller chose otherwise; torch reads this at import.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """Directory of a tiny random Llama model (2 layers, hidden 64); load it with ModelSpec(name=str(dir))."""
    from aldsl.backends.tiny import tiny_model_dir as build

    return build()


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty ``$ALDSL_CACHE`` for one test (the generation cache, digests, artifacts)."""
    path = tmp_path / "aldsl-cache"
    monkeypatch.setenv("ALDSL_CACHE", str(path))
    return path


@pytest.fixture
def copying_conversion(monkeypatch, tiny_model_dir) -> list[Path]:
    """Replace the GGUF conversion (transformers' GGUF loader) by copying the tiny model, which is what a
    conversion writes, with the same source record; returns the targets converted, in order. Keying,
    digests and reuse stay the real code."""
    import json
    import shutil

    from aldsl.backends import registry

    conversions: list[Path] = []

    def convert(source: Path, target: Path) -> None:
        conversions.append(target)
        with registry.atomic_dir(target) as tmp:
            for f in Path(tiny_model_dir).iterdir():
                if f.is_file():
                    shutil.copy(f, tmp / f.name)
            files = {p.name: registry.file_digest(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            (tmp / registry.SOURCE_FILE).write_text(
                json.dumps({"gguf": str(source), "gguf_sha256": registry.file_digest(source), "files": files}))

    monkeypatch.setattr(registry, "_convert_gguf", convert)
    return conversions
