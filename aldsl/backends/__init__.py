"""Model backends: ``load_backend(spec)`` gives a :class:`Backend` for a :class:`ModelSpec`.

Loaded backends are memoised in-process (one copy of the weights per spec); fine-tuning
code that changes a model's weights calls :func:`forget` so the next load rereads them.
"""

from __future__ import annotations

import threading

from aldsl.backends.base import (
    BACKENDS,
    CAPABILITIES,
    Backend,
    BackendError,
    Completion,
    Decoding,
    GenRequest,
    HiddenStates,
    ModelNotFound,
    ModelSpec,
    OutOfMemory,
    Progress,
    ServerSpec,
)
from aldsl.backends.registry import EMBEDDED, ResolvedModel, resolve_model

__all__ = [
    "BACKENDS",
    "CAPABILITIES",
    "EMBEDDED",
    "Backend",
    "BackendError",
    "Completion",
    "Decoding",
    "GenRequest",
    "HiddenStates",
    "ModelNotFound",
    "ModelSpec",
    "OutOfMemory",
    "Progress",
    "ResolvedModel",
    "ServerSpec",
    "forget",
    "load_backend",
    "resolve_model",
]

_loaded: dict[ModelSpec, Backend] = {}
_lock = threading.Lock()


def load_backend(spec: ModelSpec) -> Backend:
    """The backend for ``spec``, loaded once per process."""
    with _lock:
        if spec not in _loaded:
            _loaded[spec] = _construct(spec)
        return _loaded[spec]


def forget(spec: ModelSpec) -> None:
    """Drop the memoised backend for ``spec`` (e.g. after its checkpoint was retrained)."""
    with _lock:
        _loaded.pop(spec, None)


def _construct(spec: ModelSpec) -> Backend:
    if spec.backend == "transformers":
        from aldsl.backends.transformers_backend import TransformersBackend

        return TransformersBackend(spec)
    if spec.backend == "vllm":
        from aldsl.backends.vllm_backend import VLLMBackend

        return VLLMBackend(spec)
    if spec.backend == "openai":
        from aldsl.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(spec)
    raise BackendError(f"Unknown backend '{spec.backend}'. Choose one of: {', '.join(BACKENDS)}.")
