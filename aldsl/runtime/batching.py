"""Several runs in threads, one model batch: the generation calls of concurrent executors are merged.

A search that scores a few trials at once on a small minibatch gives each trial too few prompts to
fill the model's batches. :meth:`Coalescer.map` runs one function per item in its own thread (a
run: a trial's executor); every ``backend.generate`` of a run waits until each other run is waiting
too (or has finished), and then one backend call serves all of them (``generate_many``: rows of
different decodings side by side; a backend without it gets one call per decoding). Identical
prompts of different runs are generated once (the backend's request bookkeeping dedupes them), and
a sample draws the same random numbers whichever batch it ran in (see :mod:`aldsl.backends.base`),
so merging changes a result only through the rounding of the batch's logits (docs/performance.md).

All model work runs on the thread that called :meth:`Coalescer.map`: the merged generations, and the
runs' other model calls (reward scoring, log-probabilities) through :meth:`Coalescer.compute`.
Measured on 2 CPU cores, the same merged generation took 68.7 s in a second thread against 37.0 s in
the thread that had run the model before (torch's CPU thread pool belongs to the thread that made
it), and two models computing at once only thrash; a tokenizer is not safe to share between threads
that compute at once either. Prompting and evaluation stay in the runs' threads.

No library merges calls across threads into one batch this way (vLLM and TGI do it inside a server;
here the model is in-process), hence the small barrier below.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

from aldsl.backends import Backend, Completion, Decoding, GenRequest
from aldsl.backends.base import GenCalls, Progress, generate_calls

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Call:
    backend: Backend
    requests: Sequence[GenRequest]
    decoding: Decoding
    progress: Progress | None
    result: list[list[Completion]] | None = None
    error: BaseException | None = None
    done: bool = False


class Coalescer:
    """The meeting point of ``participants`` runs' generation calls (see the module docstring)."""

    def __init__(self, participants: int):
        self._active = participants
        self._pending: list[_Call] = []
        self._cond = threading.Condition()
        self._wrapped: dict[int, MergedBackend] = {}
        self._work: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self._model_thread: int | None = None
        self.calls = 0  # backend calls made (for tests and benchmarks)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(item) for item in items]``, each in its own thread (one participant each), while this
        thread runs their model work; an exception of one run is raised here after all have ended."""
        assert len(items) == self._active, "one item per participant"
        self._model_thread = threading.get_ident()

        def run(item: T) -> R:
            try:
                return fn(item)
            finally:
                with self._cond:
                    self._active -= 1
                    self._flush_if_ready()

        with ThreadPoolExecutor(len(items), thread_name_prefix="run") as pool:
            futures = [pool.submit(run, item) for item in items]
            while not all(f.done() for f in futures) or not self._work.empty():
                try:
                    work, future = self._work.get(timeout=0.02)
                except queue.Empty:
                    continue
                try:
                    future.set_result(work())
                except BaseException as error:  # the run that asked gets it
                    future.set_exception(error)
        return [f.result() for f in futures]

    def compute(self, work: Callable[[], R]) -> R:
        """Run model work on the model thread (at once when called there, or outside :meth:`map`)."""
        if self._model_thread is None or threading.get_ident() == self._model_thread:
            return work()
        future: Future[R] = Future()
        self._work.put((work, future))
        return future.result()

    def wrap(self, backend: Backend) -> "MergedBackend":
        """``backend`` with its ``generate`` routed through this coalescer (one wrapper per backend)."""
        with self._cond:
            if id(backend) not in self._wrapped:
                self._wrapped[id(backend)] = MergedBackend(backend, self)
            return self._wrapped[id(backend)]

    def generate(self, call: _Call) -> list[list[Completion]]:
        if threading.get_ident() == self._model_thread:  # model work that generates: the runs cannot join
            return call.backend.generate(call.requests, call.decoding, call.progress)
        with self._cond:
            self._pending.append(call)
            self._flush_if_ready()
            while not call.done:
                self._cond.wait()
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result

    def _flush_if_ready(self) -> None:
        """With the lock held: when every active participant waits, run their calls (on the model
        thread; the others wait for this one, so holding the lock meanwhile costs nothing)."""
        if not self._pending or len(self._pending) < self._active:
            return
        calls, self._pending = self._pending, []
        by_backend: dict[int, dict[str, list[_Call]]] = {}
        for call in calls:
            by_backend.setdefault(id(call.backend), {}).setdefault(call.decoding.key(), []).append(call)
        progress = _tokens_only(next((c.progress for c in calls if c.progress is not None), None))
        for decodings in by_backend.values():
            groups = list(decodings.values())
            merged = [([r for call in group for r in call.requests], group[0].decoding) for group in groups]
            try:
                outputs = self.compute(lambda: self._generate(groups[0][0].backend, merged, progress))
            except BaseException as error:  # each waiting run gets the error as its own call would have
                for call in (c for group in groups for c in group):
                    call.error, call.done = error, True
                continue
            for group, output in zip(groups, outputs):
                start = 0
                for call in group:
                    call.result, call.done = output[start:start + len(call.requests)], True
                    start += len(call.requests)
        self._cond.notify_all()

    def _generate(self, backend: Backend, merged: GenCalls, progress: Progress | None) -> list[list[list[Completion]]]:
        self.calls += 1 if hasattr(backend, "generate_many") else len(merged)  # shared batches, or one per decoding
        return generate_calls(backend, merged, progress)


def _tokens_only(progress: Progress | None) -> Progress | None:
    """The merged call's progress shows its tokens on one run's bar; finished prompts are not split back
    to each run's bar (they all forward tokens to the search's one bar)."""
    if progress is None:
        return None
    return lambda finished, tokens: progress(0, tokens) if tokens else None


class MergedBackend:
    """A backend whose ``generate`` meets the other participants' calls; its other methods run on the
    model thread."""

    def __init__(self, backend: Backend, coalescer: Coalescer):
        self.backend, self._coalescer = backend, coalescer
        self.identity, self.capabilities = backend.identity, backend.capabilities

    def __getattr__(self, name: str) -> Any:
        if name == "backend":
            raise AttributeError(name)
        value = getattr(self.backend, name)
        if not callable(value):
            return value
        return lambda *args, **kwargs: self._coalescer.compute(lambda: value(*args, **kwargs))

    def generate(self, requests: Sequence[GenRequest], decoding: Decoding, progress: Progress | None = None,
                 finished: Any = None) -> list[list[Completion]]:
        if finished is not None:  # only the executor calls through here, and it never asks for this
            raise TypeError("a merged generation call does not report finished samples one by one")
        return self._coalescer.generate(_Call(self.backend, requests, decoding, progress))
