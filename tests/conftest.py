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
