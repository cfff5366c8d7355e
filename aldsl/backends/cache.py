"""The on-disk generation cache: every sample stored once, so repeated work costs nothing.

A sample is keyed by ``content_hash(identity, prompt, decoding, sample_index)``; since
sample ``i`` of a prompt never depends on batching (see ``backends.base``), samples are
cached one by one and asking for L = 4 after L = 2 only generates samples 2 and 3.
The store is SQLite in WAL mode, safe for several processes writing at once.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

from aldsl.backends.base import (Backend, Completion, Decoding, GenCalls, GenRequest, ManyCalls, ManyFinished,
                                 Progress, generate_calls)
from aldsl.store.hashing import content_hash
from aldsl.store.paths import cache_dir

T = TypeVar("T")
_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_BUSY_TIMEOUT_MS = 120_000
_CHUNK = 500  # keys per SELECT (SQLite limits the number of bound parameters)


def default_cache_path() -> Path:
    """``cache_dir()/generations.sqlite``."""
    return cache_dir() / "generations.sqlite"


class GenerationCache:
    """A SQLite table of completions keyed by content hash; safe across threads and processes."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    def get_many(self, keys: Iterable[str]) -> dict[str, Completion]:
        """The stored completions among ``keys`` (missing keys are absent from the result)."""
        wanted = list(dict.fromkeys(keys))

        def read(conn: sqlite3.Connection) -> dict[str, Completion]:
            found: dict[str, Completion] = {}
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                query = f"SELECT key, text, tokens, finish FROM samples WHERE key IN ({marks})"
                for key, text, tokens, finish in conn.execute(query, chunk):
                    found[key] = Completion(text=text, tokens=tokens, finish=finish, cached=True)
            return found

        return self._run(read) if wanted else {}

    def put_many(self, items: dict[str, Completion]) -> None:
        """Store completions (one transaction; an existing key is overwritten with the same value)."""
        rows = [(k, c.text, c.tokens, c.finish) for k, c in items.items()]

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        if rows:
            self._run(write)

    def get_scores(self, keys: Iterable[str]) -> dict[str, float]:
        """Stored log-probabilities among ``keys``."""
        wanted = list(dict.fromkeys(keys))

        def read(conn: sqlite3.Connection) -> dict[str, float]:
            found: dict[str, float] = {}
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                found.update(conn.execute(f"SELECT key, value FROM logprobs WHERE key IN ({marks})", chunk))
            return found

        return self._run(read) if wanted else {}

    def put_scores(self, items: dict[str, float]) -> None:
        """Store log-probabilities (one transaction)."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO logprobs VALUES (?, ?)", list(items.items()))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        if items:
            self._run(write)

    def __len__(self) -> int:
        return self._run(lambda conn: conn.execute("SELECT count(*) FROM samples").fetchone()[0])

    def close(self) -> None:
        """Close this process's connection (reopened on next use)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``operation`` on this process's connection; a corrupt file is set aside once."""
        with self._lock:
            try:
                return operation(self._connection())
            except sqlite3.DatabaseError as error:
                if not _is_corrupt(error):
                    raise
                self._set_aside(error)
                return operation(self._connection())

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # a forked child opens its own connection
            self._conn, self._pid = self._connect(), os.getpid()
        return self._conn

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS samples "
                "(key TEXT PRIMARY KEY, text TEXT NOT NULL, tokens INTEGER NOT NULL, finish TEXT NOT NULL) "
                "WITHOUT ROWID"
            )
            conn.execute("CREATE TABLE IF NOT EXISTS logprobs (key TEXT PRIMARY KEY, value REAL NOT NULL) WITHOUT ROWID")
            conn.execute("SELECT key FROM samples LIMIT 1").fetchall()
        except BaseException:
            conn.close()
            raise
        return conn

    def _set_aside(self, error: sqlite3.DatabaseError) -> None:
        """Move a corrupt cache file (and its WAL files) aside with a warning; start a new one."""
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        for suffix in ("", "-wal", "-shm"):
            try:
                os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
            except FileNotFoundError:
                pass  # another process moved it already, or there was no WAL file
        warnings.warn(
            f"The generation cache {self.path} was unreadable ({error}); moved it to {aside} and started a "
            "new one. Only cached generations are lost: they will be generated again when needed.",
            RuntimeWarning,
            stacklevel=4,
        )


def _is_corrupt(error: sqlite3.DatabaseError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _CORRUPT_CODES
    text = str(error).lower()
    return "not a database" in text or "malformed" in text


def cache_key(identity: str, prompt: str, decoding: Decoding, sample: int) -> str:
    """The key of one sample. Greedy decoding ignores seed, top-p, top-k and the sample index."""
    if decoding.temperature <= 0:
        decoding = replace(decoding, temperature=0.0, top_p=1.0, top_k=0, seed=0)
        sample = 0
    return content_hash(identity, prompt, decoding.key(), sample)


class CachedBackend(ManyCalls):
    """A backend that answers from a :class:`GenerationCache` and generates only the misses.

    Each generated sample is stored the moment the backend reports it finished, so a run killed
    mid-batch resumes without redoing it. Other attributes (``model``, ``tokenizer``, ``encode``...)
    pass through to the wrapped backend.
    """

    def __init__(self, backend: Backend, cache: GenerationCache | None = None) -> None:
        self.backend = backend
        self.cache = cache if cache is not None else GenerationCache()
        self.identity = backend.identity
        self.capabilities = backend.capabilities
        self.hits = 0
        self.misses = 0
        self.generated_tokens = 0

    def __getattr__(self, name: str) -> object:
        if name == "backend":  # not set yet (e.g. during unpickling): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self.backend, name)

    def generate_many(self, calls: GenCalls, progress: Progress | None = None,
                      finished: ManyFinished | None = None) -> list[list[list[Completion]]]:
        """Cached samples where present; the misses of all calls, grouped by prompt, go to the backend at
        once (:func:`generate_calls`). ``generate`` is the one-call case."""
        keys, found, missing = [], [], []
        complete = 0
        for requests, decoding in calls:
            rows = [[cache_key(self.identity, r.prompt, decoding, s) for s in r.samples] for r in requests]
            hits = self.cache.get_many(k for row in rows for k in row)
            absent: dict[str, dict[int, str]] = {}  # prompt -> sample index -> key
            for request, row in zip(requests, rows):
                gone = [(s, k) for s, k in zip(request.samples, row) if k not in hits]
                complete += not gone
                for sample, key in gone:
                    absent.setdefault(request.prompt, {})[0 if decoding.temperature <= 0 else sample] = key
                self.hits += len(row) - len(gone)
            keys.append(rows)
            found.append(hits)
            missing.append(absent)
        if progress is not None and complete:
            progress(complete, 0)
        fresh: dict[str, Completion] = {}

        def store(c: int, done: Sequence[tuple[str, int, Completion]]) -> None:
            done = [(p, s, comp) for p, s, comp in done if missing[c][p][s] not in fresh]
            if not done:
                return
            new = {missing[c][p][s]: comp for p, s, comp in done}
            self.cache.put_many(new)
            fresh.update(new)
            self.misses += len(new)
            self.generated_tokens += sum(comp.tokens for comp in new.values())
            if finished is not None:
                finished(c, done)

        todo = [c for c in range(len(calls)) if missing[c]]
        asked = [[GenRequest(prompt, tuple(samples)) for prompt, samples in missing[c].items()] for c in todo]
        if todo:
            outputs = generate_calls(self.backend, [(a, calls[c][1]) for c, a in zip(todo, asked)], progress,
                                     lambda i, done: store(todo[i], done))
            for c, a, out in zip(todo, asked, outputs):  # samples a backend did not report as they finished
                store(c, [(r.prompt, s, comp) for r, cs in zip(a, out) for s, comp in zip(r.samples, cs)])
        return [[[fresh[k] if k in fresh else found[c][k] for k in row] for row in keys[c]] for c in range(len(calls))]

    def stats(self) -> dict[str, int]:
        """Counters since construction: cache hits, misses (samples generated), generated tokens."""
        return {"hits": self.hits, "misses": self.misses, "generated_tokens": self.generated_tokens}

    def logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Cached log-probabilities where present; the misses go to the backend in one call (a critic or
        judge that scores a candidate again costs nothing)."""
        keys = [content_hash(self.identity, "logprob", p, c) for p, c in zip(prompts, continuations)]
        found = self.cache.get_scores(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        if missing:
            values = self.backend.logprobs([prompts[i] for i in missing], [continuations[i] for i in missing])
            fresh = {keys[i]: v for i, v in zip(missing, values)}
            self.cache.put_scores(fresh)
            found.update(fresh)
        return [found[k] for k in keys]

    def format_chat(self, messages: Sequence[dict[str, str]]) -> str:
        """Passed through to the wrapped backend."""
        return self.backend.format_chat(messages)
