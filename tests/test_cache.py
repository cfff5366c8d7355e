"""The on-disk generation cache and the caching backend wrapper (tiny model)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path
from typing import Sequence

import pytest

from aldsl.backends import Backend, Completion, Decoding, GenRequest, ModelSpec, Progress, load_backend
from aldsl.backends.cache import CachedBackend, GenerationCache, cache_key, default_cache_path
from aldsl.store.paths import cache_dir

PROMPTS = ["Hi", "The quick brown fox jumps over the lazy dog because it", "Question: two plus two? Answer:"]
SAMPLING = Decoding(temperature=0.9, top_p=0.95, max_tokens=6, seed=3)


class Recording:
    """A real backend that also records what it was asked to generate."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.identity = backend.identity
        self.capabilities = backend.capabilities
        self.asked: list[list[GenRequest]] = []

    def generate(self, requests: Sequence[GenRequest], decoding: Decoding, progress: Progress | None = None,
                 finished=None):
        self.asked.append(list(requests))
        return self.backend.generate(requests, decoding, progress, finished)

    def encode(self, texts):
        return self.backend.encode(texts)

    def logprobs(self, prompts, continuations):
        return self.backend.logprobs(prompts, continuations)

    def format_chat(self, messages):
        return self.backend.format_chat(messages)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return load_backend(ModelSpec(name=str(tiny_model_dir)))


@pytest.fixture
def cache(tmp_path: Path) -> GenerationCache:
    return GenerationCache(tmp_path / "generations.sqlite")


def test_rerun_is_served_from_the_cache(tiny, cache):
    requests = [GenRequest(p, (0, 1)) for p in PROMPTS]
    first = CachedBackend(tiny, cache)
    out = first.generate(requests, SAMPLING)
    assert first.stats() == {"hits": 0, "misses": 6, "generated_tokens": sum(c.tokens for r in out for c in r)}
    assert not any(c.cached for r in out for c in r)

    spy = Recording(tiny)
    second = CachedBackend(spy, GenerationCache(cache.path))  # a fresh handle, as in a new process
    reports: list[tuple[int, int]] = []
    again = second.generate(requests, SAMPLING, progress=lambda n, t: reports.append((n, t)))
    assert again == out and all(c.cached for r in again for c in r)
    assert second.stats() == {"hits": 6, "misses": 0, "generated_tokens": 0}
    assert spy.asked == [] and reports == [(3, 0)]


def test_growing_l_generates_only_the_new_samples_grouped_by_prompt(tiny, cache):
    spy = Recording(tiny)
    cached = CachedBackend(spy, cache)
    two = cached.generate([GenRequest(p, (0, 1)) for p in PROMPTS], SAMPLING)
    four = cached.generate([GenRequest(p, (0, 1, 2, 3)) for p in PROMPTS], SAMPLING)
    assert spy.asked[1] == [GenRequest(p, (2, 3)) for p in PROMPTS]
    assert [row[:2] for row in four] == two
    assert [[c.cached for c in row] for row in four] == [[True, True, False, False]] * 3
    assert four == tiny.generate([GenRequest(p, (0, 1, 2, 3)) for p in PROMPTS], SAMPLING)
    assert cached.stats()["hits"] == 6 and cached.stats()["misses"] == 12


def test_greedy_is_generated_once_whatever_the_seed_and_sample(tiny, cache):
    spy = Recording(tiny)
    cached = CachedBackend(spy, cache)
    out = cached.generate([GenRequest(PROMPTS[1], (0, 1, 2))], Decoding(max_tokens=5, seed=1))
    assert spy.asked == [[GenRequest(PROMPTS[1], (0,))]] and out[0][0] == out[0][2]
    cached.generate([GenRequest(PROMPTS[1], (7,))], Decoding(max_tokens=5, seed=2, top_p=0.5))
    assert len(spy.asked) == 1 and cached.stats()["misses"] == 1


def test_cache_keys_separate_what_differs():
    base = cache_key("m@1", "p", SAMPLING, 0)
    assert base == cache_key("m@1", "p", SAMPLING, 0)
    different = [
        cache_key("m@2", "p", SAMPLING, 0),
        cache_key("m@1", "q", SAMPLING, 0),
        cache_key("m@1", "p", Decoding(temperature=0.9, top_p=0.95, max_tokens=6, seed=4), 0),
        cache_key("m@1", "p", SAMPLING, 1),
    ]
    assert base not in different and len(set(different)) == 4


def test_other_methods_pass_through(tiny, cache):
    cached = CachedBackend(tiny, cache)
    assert isinstance(cached, Backend) and isinstance(tiny, Backend)
    assert cached.identity == tiny.identity and cached.tokenizer is tiny.tokenizer
    assert cached.logprobs(["Hi"], [" there"]) == tiny.logprobs(["Hi"], [" there"])
    assert (cached.encode(["Hi"]) == tiny.encode(["Hi"])).all()
    chat = [{"role": "user", "content": "x"}]
    assert cached.format_chat(chat) == tiny.format_chat(chat)


def _write_entries(path: str, worker: int, count: int, start) -> None:
    cache = GenerationCache(path)
    start.wait()
    for i in range(count):  # many small transactions, interleaving with the other writer
        own = Completion(f"text {worker} {i}", i, "length")
        cache.put_many({f"w{worker}-{i}": own, f"shared-{i}": Completion("same", 1, "eos")})


def test_two_processes_write_the_same_cache_concurrently(cache):
    assert len(cache) == 0  # the parent holds an open connection while the children write
    context = multiprocessing.get_context("fork")
    start = context.Event()
    workers = [context.Process(target=_write_entries, args=(str(cache.path), w, 300, start)) for w in (1, 2)]
    for process in workers:
        process.start()
    start.set()
    for process in workers:
        process.join(timeout=60)
    assert [p.exitcode for p in workers] == [0, 0]
    assert len(cache) == 2 * 300 + 300
    found = cache.get_many(["w1-299", "w2-0", "shared-7"])
    assert found["w1-299"] == Completion("text 1 299", 299, "length") and found["shared-7"].finish == "eos"


def test_corrupt_cache_is_moved_aside_and_recreated(cache):
    cache.path.write_bytes(b"this is not a sqlite database" * 100)
    with pytest.warns(RuntimeWarning, match="moved it to"):
        assert cache.get_many(["anything"]) == {}
    aside = list(cache.path.parent.glob("generations.sqlite.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    cache.put_many({"k": Completion("ok", 1, "stop")})
    assert GenerationCache(cache.path).get_many(["k"])["k"].text == "ok"
    with sqlite3.connect(cache.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_cache_file_lives_in_the_cache_dir(isolated_cache):
    assert default_cache_path() == cache_dir() / "generations.sqlite"
    assert cache_dir() == isolated_cache and isolated_cache.is_dir()
    assert GenerationCache().path == isolated_cache / "generations.sqlite"


def test_logprobs_are_cached_and_scored_once(tiny, cache):
    class Counting:
        def __init__(self, backend):
            self.backend, self.identity, self.pairs = backend, backend.identity, 0
            self.capabilities = backend.capabilities

        def logprobs(self, prompts, continuations):
            self.pairs += len(prompts)
            return self.backend.logprobs(prompts, continuations)

    spy = Counting(tiny)
    first = CachedBackend(spy, cache).logprobs(["Hi", "Hi"], [" there", " you"])
    again = CachedBackend(spy, GenerationCache(cache.path)).logprobs(["Hi", "Hey"], [" you", " there"])
    assert first == tiny.logprobs(["Hi", "Hi"], [" there", " you"]) and again[0] == first[1]
    assert spy.pairs == 3  # (Hi, you) came from the cache
