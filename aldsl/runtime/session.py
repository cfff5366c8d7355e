"""A Session holds what outlives one run: loaded models, the generation cache, trained
reward models and fine-tuned checkpoints, and the progress reporter."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

from aldsl.backends import Backend, ModelSpec, load_backend
from aldsl.store.artifacts import ArtifactStore
from aldsl.store.hashing import content_hash
from aldsl.backends.cache import CachedBackend, GenerationCache
from aldsl.compiler.specs import Finetune, ModelGenerator, Reward, SplitRef
from aldsl.store.data import DataSpec, load
from aldsl.errors import UserError
from aldsl.store.paths import cache_dir
from aldsl.progress import QUIET, Reporter

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.batching import Coalescer
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
        self._loading = threading.Lock()
        self.coalescer: Coalescer | None = None
        """Set while several runs in threads share the model's batches (:mod:`aldsl.runtime.batching`)."""

    # ---- models
    def model_spec(self, gen: ModelGenerator, graph: ProgramGraph | None = None) -> ModelSpec:
        """Which weights a compiled generator means: its checkpoint, the fine-tuning it names (trained
        on first use), or its base model."""
        checkpoint = gen.checkpoint
        if gen.finetune and checkpoint is None:
            if graph is None or gen.finetune not in graph.g:
                raise UserError(f"generator {gen.name!r} needs {gen.finetune}, which is not in this graph")
            checkpoint = str(self.checkpoint(gen.finetune, graph))
        device = self.device if self.device and gen.device == "auto" else gen.device
        return ModelSpec(name=gen.model, backend=gen.backend, device=device, dtype=gen.dtype, checkpoint=checkpoint,
                         server=gen.server)

    def backend(self, gen: ModelGenerator, graph: ProgramGraph | None = None) -> Backend:
        """The (cached) backend of a compiled generator, loaded once (also when threads ask at once)."""
        spec = self.model_spec(gen, graph)
        with self._loading:
            if spec not in self._backends:
                raw = load_backend(spec)
                if hasattr(raw, "dtype"):  # printed once per model: what every figure of the run was computed in
                    self.reporter.log(f"model {raw.identity} on {getattr(raw, 'device', '?')} in {dtype_name(raw)}")
                self._backends[spec] = CachedBackend(raw, self.cache) if self.cache is not None else raw
        backend = self._backends[spec]
        return self.coalescer.wrap(backend) if self.coalescer is not None else backend

    def compute(self, work: Callable[[], T]) -> T:
        """Model work other than generation (reward scoring): while runs share the model (``coalescer``),
        on its model thread; otherwise here."""
        return self.coalescer.compute(work) if self.coalescer is not None else work()

    def dtypes(self) -> dict[str, str]:
        """The dtype each loaded local model computes in, by identity (recorded in run stats)."""
        return {b.identity: dtype_name(b) for b in self._backends.values() if hasattr(b, "dtype")}

    def stats(self) -> dict[str, int]:
        """Generation counters summed over every backend of the session."""
        total = {"hits": 0, "misses": 0, "generated_tokens": 0}
        for b in self._backends.values():
            if isinstance(b, CachedBackend):
                for k, v in b.stats().items():
                    total[k] = total.get(k, 0) + v
        return total

    # ---- data
    def split(self, graph: ProgramGraph, ref: SplitRef) -> list[dict[str, Any]]:
        """Records of one split of a data source of ``graph`` (a read of that split)."""
        source = graph.spec(f"data:{ref.data}")
        assert isinstance(source, DataSpec)
        return load(source).split(ref.split)

    # ---- trained resources, memoised by content
    def reward(self, node: str, graph: ProgramGraph) -> RewardModel:
        """The reward model of a ``reward:NAME`` node, fitted once and reused by content hash."""
        spec = graph.spec(node)
        assert isinstance(spec, Reward)
        return self.reward_of(spec, graph)

    def reward_of(self, spec: Reward, graph: ProgramGraph) -> RewardModel:
        """The reward model of a reward spec (a node's, or one a fine-tuning refits on its own samples)."""
        from aldsl.rewards import load_reward

        return _memo(self._rewards, spec, lambda: load_reward(spec, self, graph))

    def checkpoint(self, node: str, graph: ProgramGraph) -> Path:
        """The fine-tuned weights of a ``finetune:NAME`` node, trained once and reused by content hash."""
        spec = graph.spec(node)
        assert isinstance(spec, Finetune)
        return self.finetuned(spec, graph)

    def finetuned(self, spec: Finetune, graph: ProgramGraph) -> Path:
        """The checkpoint of a fine-tuning spec (a node's, or one a reward trains its positives with)."""
        from aldsl.finetune import ensure_checkpoint

        return _memo(self._checkpoints, spec, lambda: ensure_checkpoint(spec, self, graph))


T = TypeVar("T")


def dtype_name(backend: Any) -> str:
    """``float32``, ``bfloat16``... of a backend with a torch ``dtype``."""
    return str(backend.dtype).removeprefix("torch.")


def _memo(store: dict[str, T], spec: Reward | Finetune, build: Callable[[], T]) -> T:
    """``build()`` once per spec content."""
    key = content_hash(spec.to_json())
    if key not in store:
        store[key] = build()
    return store[key]
