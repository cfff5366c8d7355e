"""Rewards and evaluators that come from outside: a user's Python function or a command.

A spec names exactly one of:

* ``call = "package.module:function"`` or ``call = "path/to/file.py:function"`` (relative to
  ``base_dir``, the folder of the user's program). The function is called as
  ``fn(x, candidate, record)`` in worker subprocesses (a pool of ``workers``) and returns a
  number or ``{"score": float, "feedback": str}``.
* ``command = "prog arg ..."`` (split like a shell would, but run without one, in ``base_dir``;
  ``python``/``python3`` mean the interpreter running aldsl). Each item is sent as one JSON
  object ``{"x", "candidate", "record"}`` on stdin; the last non-empty stdout line is a number
  or such a JSON object.

Every item has its own timeout. An item that raises, crashes or hangs its worker, exits
non-zero, or returns garbage scores ``on_error`` and carries a one-line ``error`` plus the
tail of its traceback/stderr; ``run_external`` never raises for a per-item failure. A spec
that cannot load at all raises ``ExternalError`` before any item runs.
"""

from __future__ import annotations

import faulthandler
import importlib
import importlib.util
import json
import math
import numbers
import os
import queue
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from aldsl.isolation.procs import kill_group

_TAIL_LINES = 8
_LOAD_TIMEOUT_S = 60.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
# The worker loads this file directly, so it never pays for importing the whole aldsl package
# (user code that imports aldsl still can: the package root is on its path).
_WORKER_BOOTSTRAP = """\
import importlib.util, sys
sys.path.insert(0, {root!r})
spec = importlib.util.spec_from_file_location("_aldsl_external_worker", {path!r})
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
module._worker_main()
"""


class ExternalError(ValueError):
    """The external reward/evaluator spec itself is wrong (a user error, not a bad candidate)."""


@dataclass(frozen=True)
class ExternalSpec:
    """Where an external score comes from and how to run it."""

    call: str | None = None
    command: str | None = None
    timeout: float = 10.0
    on_error: float = 0.0
    base_dir: str = "."
    workers: int = 2

    def __post_init__(self) -> None:
        if (self.call is None) == (self.command is None):
            raise ExternalError("an external spec needs exactly one of call=... or command=...")
        if self.timeout <= 0 or self.workers < 1:
            raise ExternalError(f"{self.describe()}: timeout must be > 0 and workers >= 1")

    def describe(self) -> str:
        """How the spec reads in messages."""
        source = f"call={self.call!r}" if self.call else f"command={self.command!r}"
        return f"external({source})"


@dataclass
class ExternalItem:
    """One thing to score: the query, the candidate answer and its data record."""

    x: str
    candidate: str
    record: dict


@dataclass
class ExternalResult:
    """The score of one item; ``error`` is set (and ``score`` is ``on_error``) on failure."""

    score: float
    error: str | None = None
    feedback: str | None = None
    seconds: float = 0.0


Progress = Callable[[int, int], None]


def run_external(spec: ExternalSpec, items: list[ExternalItem],
                 progress: Progress | None = None) -> list[ExternalResult]:
    """Score ``items`` with ``spec``; results keep item order. ``progress(done, total)``.
    Failures are also tallied for :func:`failure_tally` (the CLI's end-of-run warning)."""
    if spec.command is not None:
        results = _run_commands(spec, items, progress)
    else:
        results = _run_calls(spec, items, progress)
    failed = [r.error for r in results if r.error is not None]
    with _TALLY_LOCK:
        _TALLY["calls"] += len(results)
        _TALLY["failed"] += len(failed)
        if failed and _TALLY["first"] is None:
            _TALLY["first"] = f"{spec.describe()}: {failed[0]}"
    return results


_TALLY: dict = {"calls": 0, "failed": 0, "first": None}
_TALLY_LOCK = threading.Lock()


def failure_tally(reset: bool = False) -> tuple[int, int, str | None]:
    """(external calls made, how many failed, the first error) in this process so far."""
    with _TALLY_LOCK:
        out = (_TALLY["calls"], _TALLY["failed"], _TALLY["first"])
        if reset:
            _TALLY.update(calls=0, failed=0, first=None)
    return out


def check_external(spec: ExternalSpec) -> None:
    """Raise ``ExternalError`` unless the spec can load (file/module/function/program exist)."""
    if spec.command is not None:
        _command_argv(spec)
        return
    _split_call(spec)
    worker = _Worker(spec)
    try:
        worker.start()
    finally:
        worker.close()


def check_external_static(spec: ExternalSpec) -> None:
    """Like :func:`check_external` but without running any user code: the command is an
    executable; the module or file exists and (when it is Python source) binds the function."""
    if spec.command is not None:
        _command_argv(spec)
        return
    target, name = _split_call(spec)
    base = Path(spec.base_dir).resolve()
    if target.endswith(".py") or os.sep in target:
        source: Path | None = base / target
    else:
        source = _module_source(target, [str(base), *sys.path])
        if source is None:
            raise ExternalError(f"{spec.describe()}: no module named {target!r} (looked in the "
                                "program's folder and the Python path); check the spelling or install it")
    if source is not None and source.suffix == ".py" and not _binds(source, name):
        raise ExternalError(f"{spec.describe()}: {source} defines no {name!r}; define "
                            f"def {name}(x, candidate, record) there")


def _module_source(dotted: str, path: list[str]) -> Path | None:
    """The file of module ``dotted`` found with the path finder alone (no package is imported);
    a Path("") when the module exists but has no source file to read."""
    from importlib.machinery import PathFinder

    search: list[str] | None = path
    found = None
    for part in dotted.split("."):
        if search is None:
            return None
        try:
            found = PathFinder.find_spec(part, search)
        except (ImportError, ValueError):
            found = None
        if found is None:
            if dotted in sys.builtin_module_names or dotted in sys.modules:
                return Path("")
            return None
        search = list(found.submodule_search_locations or []) or None
    return Path(found.origin) if found and found.origin and found.has_location else Path("")


def _binds(source: Path, name: str) -> bool:
    """True if the Python file binds ``name`` at top level (or might: ``import *``, ``__getattr__``)."""
    import ast

    try:
        tree = ast.parse(source.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return True  # loading it will report the real problem
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and \
                node.name in (name, "__getattr__"):
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                (a.asname or a.name.split(".")[0]) in (name, "*") for a in node.names):
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(n, ast.Name) and n.id == name for t in targets for n in ast.walk(t)):
                return True
    return False


def parse_reward(value: object) -> tuple[float, str | None]:
    """A function's or command's return value as (score, feedback); ValueError if malformed."""
    feedback = None
    if isinstance(value, dict):
        if "score" not in value:
            raise ValueError(f"returned a dict without a 'score' key: {_short(value)}")
        feedback = value.get("feedback")
        feedback = None if feedback is None else str(feedback)
        value = value["score"]
    if not isinstance(value, numbers.Real):
        raise ValueError(f"returned {type(value).__name__} {_short(value)}, expected a number "
                         "or {'score': number, 'feedback': text}")
    score = float(value)
    if not math.isfinite(score):
        raise ValueError(f"returned a non-finite score ({score})")
    return score, feedback


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tail(text: str, lines: int = _TAIL_LINES) -> str:
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def _failure(reason: str, detail: str = "") -> str:
    tail = _tail(detail)
    return reason + ("\n" + tail if tail else "")


# --------------------------------------------------------------------------------------------
# Commands: one fresh process per item.


def _command_argv(spec: ExternalSpec) -> list[str]:
    try:
        argv = shlex.split(spec.command or "")
    except ValueError as exc:
        raise ExternalError(f"{spec.describe()}: cannot split the command line ({exc})") from exc
    if not argv:
        raise ExternalError(f"{spec.describe()}: the command is empty")
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    base = Path(spec.base_dir).resolve()
    if os.sep in argv[0]:
        program = base / argv[0]
        if not (program.is_file() and os.access(program, os.X_OK)):
            raise ExternalError(f"{spec.describe()}: {program} is not an executable file; "
                                "check the path (relative to the program's folder) and chmod +x")
    elif shutil.which(argv[0]) is None:
        raise ExternalError(f"{spec.describe()}: program {argv[0]!r} not found on PATH; "
                            "give its path relative to the program's folder")
    return argv


def _run_commands(spec: ExternalSpec, items: list[ExternalItem],
                  progress: Progress | None) -> list[ExternalResult]:
    argv = _command_argv(spec)
    scorers = [lambda item: _run_command(spec, argv, item)] * min(spec.workers, len(items))
    return _map_parallel(spec, items, scorers, progress)


def _run_command(spec: ExternalSpec, argv: list[str], item: ExternalItem) -> ExternalResult:
    start = time.monotonic()
    payload = json.dumps(asdict(item), default=str).encode()
    try:
        proc = subprocess.Popen(argv, cwd=Path(spec.base_dir).resolve(), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    except OSError as exc:
        return _error(spec, start, f"cannot start the command: {exc}")
    try:
        out, err = proc.communicate(payload, timeout=spec.timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        out, err = proc.communicate()
        return _error(spec, start, f"timed out after {spec.timeout:g} s (process group killed)",
                      err.decode(errors="replace"))
    stderr = err.decode(errors="replace")
    if proc.returncode != 0:
        return _error(spec, start, f"command {_exit_text(proc.returncode)}", stderr)
    lines = [line for line in out.decode(errors="replace").splitlines() if line.strip()]
    if not lines:
        return _error(spec, start, "command printed nothing (expected a score on its last line)",
                      stderr)
    try:
        score, feedback = parse_reward(_parse_line(lines[-1]))
    except ValueError as exc:
        return _error(spec, start, f"command {exc}", stderr)
    return ExternalResult(score, None, feedback, time.monotonic() - start)


def _parse_line(line: str) -> object:
    text = line.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        try:
            return float(text)
        except ValueError:
            return text


def _exit_text(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by signal {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


def _error(spec: ExternalSpec, start: float, reason: str, detail: str = "") -> ExternalResult:
    return ExternalResult(spec.on_error, _failure(reason, detail), None, time.monotonic() - start)


Scorer = Callable[[ExternalItem], ExternalResult]


def _map_parallel(spec: ExternalSpec, items: list[ExternalItem], scorers: list[Scorer],
                  progress: Progress | None) -> list[ExternalResult]:
    """Score items on one thread per scorer, pulling from a shared queue; keeps item order."""
    results: list[ExternalResult] = [ExternalResult(spec.on_error, "not scored")] * len(items)
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(items)):
        todo.put(index)
    lock = threading.Lock()
    done = [0]

    def work(scorer: Scorer) -> None:
        while True:
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            start = time.monotonic()
            try:
                results[index] = scorer(items[index])
            except Exception as exc:  # noqa: BLE001  (one item's failure never stops the rest)
                results[index] = _error(spec, start, f"internal error: {type(exc).__name__}: {exc}")
            with lock:
                done[0] += 1
                if progress is not None:
                    progress(done[0], len(items))

    threads = [threading.Thread(target=work, args=(s,), daemon=True) for s in scorers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# --------------------------------------------------------------------------------------------
# Python functions: a pool of long-lived worker processes, restarted after a crash or a hang.


def _split_call(spec: ExternalSpec) -> tuple[str, str]:
    target, sep, name = (spec.call or "").rpartition(":")
    if not sep or not target or not name.isidentifier():
        raise ExternalError(f"{spec.describe()}: expected 'package.module:function' or "
                            "'path/to/file.py:function'")
    if target.endswith(".py") or os.sep in target:
        path = Path(spec.base_dir).resolve() / target
        if not path.is_file():
            raise ExternalError(f"{spec.describe()}: file {path} not found; paths are relative "
                                "to the program's folder")
    return target, name


def _run_calls(spec: ExternalSpec, items: list[ExternalItem],
               progress: Progress | None) -> list[ExternalResult]:
    _split_call(spec)
    workers = [_Worker(spec)]
    try:
        workers[0].start()  # a spec that cannot load raises ExternalError here, before any item
        workers += [_Worker(spec) for _ in range(1, min(spec.workers, len(items)))]
        return _map_parallel(spec, items, [w.score for w in workers], progress)
    finally:
        for worker in workers:
            worker.close()


class _Worker:
    """One worker subprocess speaking JSON lines on its stdin/stdout."""

    def __init__(self, spec: ExternalSpec) -> None:
        self.spec = replace(spec, base_dir=str(Path(spec.base_dir).resolve()))
        self.proc: subprocess.Popen | None = None
        self._buffer = b""
        self._folder = tempfile.mkdtemp(prefix="aldsl-external-")
        self._stderr_path = os.path.join(self._folder, "stderr.txt")

    def start(self) -> None:
        """Start the process and wait until it has loaded the function (ExternalError if not)."""
        bootstrap = _WORKER_BOOTSTRAP.format(root=_PACKAGE_ROOT, path=__file__)
        with open(self._stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", bootstrap, json.dumps(asdict(self.spec))],
                cwd=Path(self.spec.base_dir).resolve(), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        self._buffer = b""
        line = self._read_line(time.monotonic() + max(_LOAD_TIMEOUT_S, self.spec.timeout))
        message = _decode(line) if line else {}
        if message.get("ready"):
            return
        reason = message.get("load_error") or (
            "the worker did not start" + (" in time" if line is None else "")
            + "\n" + _tail(self._stderr_text(0)))
        self._stop()
        raise ExternalError(
            f"{self.spec.describe()}: cannot load the function: {reason}\nCheck the module or "
            f"file name (paths are relative to {Path(self.spec.base_dir).resolve()}) and that "
            "the function is defined there.")

    def score(self, item: ExternalItem) -> ExternalResult:
        """Score one item; restarts the worker after a crash or timeout."""
        start = time.monotonic()
        if self.proc is None or self.proc.poll() is not None:
            try:
                self.start()
            except ExternalError as exc:
                return _error(self.spec, start, f"could not restart the worker: {exc}")
        assert self.proc is not None and self.proc.stdin is not None
        offset = os.path.getsize(self._stderr_path)
        try:
            self.proc.stdin.write(json.dumps(asdict(item), default=str).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # the worker died: the read below sees end-of-file and reports it
        line = self._read_line(time.monotonic() + self.spec.timeout)  # restarts don't count
        if line is None:
            self._stop()
            return _error(self.spec, start, f"timed out after {self.spec.timeout:g} s (worker "
                          "killed and restarted)", self._stderr_text(offset))
        if not line:
            code = self._stop()
            return _error(self.spec, start, f"the worker process died ({_exit_text(code)})",
                          self._stderr_text(offset))
        reply = _decode(line)
        if "score" not in reply and "error" not in reply:
            self._stop()
            return _error(self.spec, start, "the worker sent a garbled reply (was its output "
                          "stream written to directly?)", self._stderr_text(offset))
        if "error" in reply:
            return _error(self.spec, start, reply["error"], reply.get("traceback", ""))
        return ExternalResult(reply["score"], None, reply.get("feedback"),
                              time.monotonic() - start)

    def close(self) -> None:
        """Stop the process (politely, then by force) and delete its files."""
        if self.proc is not None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=1.0)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._stop()
        shutil.rmtree(self._folder, ignore_errors=True)

    def _stop(self) -> int:
        if self.proc is None:
            return 0
        kill_group(self.proc.pid)
        code = self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self.proc = None
        return code

    def _read_line(self, deadline: float) -> bytes | None:
        """The next reply line; ``None`` past the deadline, ``b""`` at end-of-file."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b""
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _stderr_text(self, offset: int) -> str:
        with open(self._stderr_path, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")


def _decode(line: bytes) -> dict:
    try:
        message = json.loads(line)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


def _worker_main() -> None:
    """Worker process: load the function, then answer one JSON line per request line."""
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # the user's prints go to the stderr log, not into the protocol
    faulthandler.enable()

    def send(message: dict) -> None:
        replies.write(json.dumps(message).encode() + b"\n")
        replies.flush()

    spec = ExternalSpec(**json.loads(sys.argv[1]))
    try:
        fn = _load_function(spec)
    except ExternalError as exc:
        send({"load_error": str(exc)})
        return
    except Exception as exc:  # noqa: BLE001  (any import-time failure is a load error)
        send({"load_error": _failure(f"{type(exc).__name__}: {exc}", _user_traceback(exc))})
        return
    send({"ready": True})
    for line in requests:
        item = json.loads(line)
        try:
            value = fn(item["x"], item["candidate"], item["record"])
        except BaseException as exc:  # noqa: BLE001  (SystemExit etc. are per-item failures)
            send({"error": f"raised {type(exc).__name__}: {exc}",
                  "traceback": _user_traceback(exc)})
        else:
            try:
                score, feedback = parse_reward(value)
                send({"score": score, "feedback": feedback})
            except ValueError as exc:
                send({"error": f"{spec.call} {exc}"})
        sys.stdout.flush()
        sys.stderr.flush()


def _user_traceback(exc: BaseException) -> str:
    """The traceback without the frames of this module and of the import machinery."""
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
              if frame.filename != __file__ and "importlib" not in frame.filename]
    if not frames:
        return ""
    return "".join(["Traceback (most recent call last):\n", *traceback.format_list(frames),
                    *traceback.format_exception_only(type(exc), exc)])


def _load_function(spec: ExternalSpec) -> Callable[[str, str, dict], object]:
    target, name = _split_call(spec)
    base = Path(spec.base_dir).resolve()
    sys.path.insert(0, str(base))
    if target.endswith(".py") or os.sep in target:
        path = base / target
        sys.path.insert(0, str(path.parent))
        module_spec = importlib.util.spec_from_file_location(f"_aldsl_user_{path.stem}", path)
        if module_spec is None or module_spec.loader is None:
            raise ExternalError(f"{path} is not a Python file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ExternalError(f"{target} has no function {name!r}; define "
                            f"def {name}(x, candidate, record) there")
    return fn
