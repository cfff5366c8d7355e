"""A Session holds what outlives one run: loaded models, the generation cache, trained
reward models and fine-tuned checkpoints, and the progress reporter."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from aldsl.evaluators import builtin as evaluators
from aldsl.backends import Backend, Decoding, ModelSpec, load_backend
from aldsl.store.artifacts import ArtifactStore
from aldsl.store.hashing import content_hash
from aldsl.backends.cache import CachedBackend, GenerationCache
from aldsl.store.data import DataSpec, Dataset, load
from aldsl.errors import UserError
from aldsl.store.paths import cache_dir
from aldsl.progress import QUIET, Reporter

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.rewards.base import RewardModel


class Session:
    """Shared state for runs, reward fitting, fine-tuning and optimization in one process."""

    def __init__(self, *, reporter: Reporter = QUIET, cache: GenerationCache | None = None, use_cache: bool = True,
                 artifacts: str | Path | None = None, extra_artifacts: Sequence[str | Path] = (),
                 device: str | None = None):
        self.reporter = reporter
        if cache is None and use_cache:  # not `cache or ...`: an empty cache has len 0 and is falsy
            cache = GenerationCache(cache_dir() / "generations.sqlite")
        self.cache = cache if use_cache else None
        self.artifacts = ArtifactStore(artifacts or cache_dir() / "artifacts", extra_artifacts)
        self.device = device
        self._backends: dict[tuple[Any, ...], Backend] = {}
        self._rewards: dict[str, RewardModel] = {}
        self._checkpoints: dict[str, Path] = {}

    # ---- models
    def model_spec(self, gen: dict[str, Any], graph: ProgramGraph | None = None) -> ModelSpec:
        checkpoint = gen.get("checkpoint")  # set by fine-tuning code that samples from its own checkpoints
        if gen.get("finetune") and checkpoint is None:
            if graph is None or gen["finetune"] not in graph.g:
                raise UserError(f"generator {gen['name']!r} needs {gen['finetune']}, which is not in this graph")
            checkpoint = str(self.checkpoint(gen["finetune"], graph))
        device = self.device if self.device and gen["device"] == "auto" else gen["device"]
        return ModelSpec(name=gen["model"], backend=gen["backend"], device=device, dtype=gen["dtype"],
                         checkpoint=checkpoint)

    def backend(self, gen: dict[str, Any], graph: ProgramGraph | None = None) -> Backend:
        """The (cached) backend of a compiled generator spec."""
        spec = self.model_spec(gen, graph)
        if spec not in self._backends:
            raw = load_backend(spec)
            self._backends[spec] = CachedBackend(raw, self.cache) if self.cache is not None else raw
        return self._backends[spec]

    def stats(self) -> dict[str, int]:
        """Generation counters summed over every backend of the session."""
        total = {"hits": 0, "misses": 0, "generated_tokens": 0}
        for b in self._backends.values():
            if isinstance(b, CachedBackend):
                for k, v in b.stats().items():
                    total[k] = total.get(k, 0) + v
        return total

    # ---- data
    def dataset(self, params: dict[str, Any]) -> Dataset:
        """The data source of a compiled ``data`` node."""
        spec = DataSpec(kind=params["format"], path=params["path"], input=params["input"], target=params["target"],
                        demo=params["demo"], split=params["split"], seed=params["seed"])
        return load(spec)

    def split(self, graph: ProgramGraph, ref: dict[str, str]) -> list[dict[str, Any]]:
        """Records of ``{"data": name, "split": s}`` (a read of that split)."""
        return self.dataset(graph[f"data:{ref['data']}"]["params"]).split(ref["split"])

    # ---- trained resources
    def reward(self, node: str, graph: ProgramGraph) -> RewardModel:
        """The reward model of a ``reward:NAME`` node, fitted once and reused by content hash."""
        spec = graph[node]["params"]
        key = content_hash(spec)
        if key not in self._rewards:
            from aldsl.rewards import load_reward

            self._rewards[key] = load_reward(spec, self, graph)
        return self._rewards[key]

    def checkpoint(self, node: str, graph: ProgramGraph) -> Path:
        """The fine-tuned weights of a ``finetune:NAME`` node, trained once and reused by content hash."""
        spec = graph[node]["params"]
        key = content_hash(spec)
        if key not in self._checkpoints:
            from aldsl.finetune.checkpoint import ensure_checkpoint

            self._checkpoints[key] = ensure_checkpoint(spec, self, graph)
        return self._checkpoints[key]

    # ---- evaluators
    def evaluate(self, spec: dict[str, Any], answers: Sequence[str], records: Sequence[dict[str, Any]],
                 graph: ProgramGraph | None = None) -> list[float]:
        """Scores in [0, 1] of one compiled evaluator spec."""
        kind, params = spec["kind"], dict(spec["params"])
        if kind == "external":
            from aldsl.rewards.external import external_scores, external_spec

            return [s.score for s in external_scores(external_spec(params), [r["x"] for r in records], answers, records)]
        if kind == "judge":
            from aldsl.rewards.critic import yes_probability

            backend = self.backend(params["generator"], graph)
            return yes_probability(backend, params["template"], [r["x"] for r in records], answers, records)
        if kind == "code_tests":
            from aldsl.isolation.sandbox import run_tests

            return [run_tests(a, r, params["field"], params["timeout"]) for a, r in zip(answers, records)]
        scores = evaluators.evaluate(kind, answers, records, params)
        return [s if math.isfinite(s) else 0.0 for s in scores]
