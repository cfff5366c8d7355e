"""Run untrusted, LLM-written Python behind an OS boundary and score it from the outside.

``run_sandboxed(code, driver)`` starts one sandboxed process that imports the candidate
``code`` as the module ``candidate`` and then only answers calls. ``driver(candidate)`` is
*trusted* code that runs here, in the calling process: it calls the candidate's functions
(``candidate.call(name, *args)``, or ``candidate.map(name, argsets)`` for many calls in one
round trip), checks the values that come back and computes the score. The verdict is
therefore never something the candidate reports: it can only return values to calls, as
plain data (numbers, strings, bytes, None, lists, tuples, sets, dicts; never pickles).

What the sandbox guarantees (on Linux with bubblewrap and libseccomp, see
:mod:`aldsl.isolation.boundary`; ``make setup`` installs both):

* **Files**: the candidate sees only read-only system and Python folders and its own
  writable ``/sandbox`` tmpfs; it cannot create, change or delete anything outside, and nothing
  of the host's home, work or temporary folders exists for it. Total disk use is capped
  (``disk_mb``), each file by ``RLIMIT_FSIZE``.
* **Processes**: a PID namespace of its own; no process of the host is visible (``/proc`` is
  its own), and no child outlives the sandbox (killing the namespace's init kills all of
  them, ``setsid`` or not). The number of processes is capped (``processes``).
* **Secrets**: the environment is replaced by a fixed, minimal one; the parent's variables,
  command line and files are out of sight, so they cannot reach the feedback text.
* **Network**: none (an empty network namespace; non-Unix sockets are refused by seccomp).
* **Resources**: wall-clock ``timeout`` for the whole run, CPU time, address space
  (``memory_mb``), open files; no core dumps.
* **Results**: computed by the driver from returned values, on a pipe this process holds; a
  forged "result", a file it writes, its exit status or anything it prints cannot make a run
  succeed. An audit hook (a second layer, not the boundary) refuses spawning processes,
  sockets, ``ctypes``, sub-interpreters, and writes outside the folder; each refusal is sent to
  the parent as it happens and fails the run even if the candidate catches it.

What it does not guarantee: the candidate can read the system files it is shown (``/usr``,
the Python installation); it shares the host's kernel, so a kernel exploit is out of scope
(use a VM for that); it may burn its CPU and memory budget; the *tests* of ``code_tests``
and the driver are trusted and run here; and a candidate may still game a weak test (return
values that satisfy it). Without the boundary (no bubblewrap, not Linux, no user namespaces)
untrusted code is refused with an explanation, unless ``ALDSL_ALLOW_UNSANDBOXED=1`` is set:
then it runs with the limits and the audit hook only, which protects against accidents, not
attackers.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from aldsl.errors import UserError
from aldsl.isolation import boundary, sandbox_child
from aldsl.isolation.procs import kill_group
from aldsl.isolation.sandbox_child import (CANDIDATE_FILE, MAX_FILE_BYTES, MAX_FRAME_BYTES,
                                           TRACEBACK_LINES, decode, encode)

_TAIL_BYTES = 20_000
_CHILD_SOURCE = Path(sandbox_child.__file__).read_bytes()


class SandboxUnavailable(UserError):
    """Untrusted code was about to run on a machine without the OS boundary."""


class CandidateError(Exception):
    """The candidate failed a call (raised, crashed, timed out, returned garbage). Drivers
    raise it too when a returned value is unacceptable; the message is shown to the LLM."""

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        self.kind = kind


@dataclass
class SandboxResult:
    """Outcome of one sandboxed run; ``error`` is one paragraph meant to be shown to an LLM."""

    ok: bool
    value: object | None
    error: str | None
    stdout: str
    seconds: float


class _Tail:
    """The last bytes of a stream."""

    def __init__(self) -> None:
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        del self.data[:-_TAIL_BYTES]

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


class Candidate:
    """The driver's handle on the sandboxed candidate."""

    def __init__(self, proc: subprocess.Popen, requests: int, replies: int, out: int, err: int,
                 deadline: float, timeout: float, memory_mb: int):
        self._proc, self._requests, self._replies = proc, requests, replies
        self._deadline, self._timeout, self._memory_mb = deadline, timeout, memory_mb
        self._buffer = bytearray()
        self.stdout, self.stderr = _Tail(), _Tail()
        self.refusals: list[str] = []
        self._selector = selectors.DefaultSelector()
        self._selector.register(replies, selectors.EVENT_READ, None)
        self._selector.register(out, selectors.EVENT_READ, self.stdout)
        self._selector.register(err, selectors.EVENT_READ, self.stderr)
        self.names: dict[str, str] = {}

    def _handshake(self) -> None:
        ready = self._receive()
        if ready.get("ready") is not True:
            raise CandidateError(str(ready.get("error") or "the candidate did not load"))
        names = ready.get("names")
        self.names = {str(k): str(v) for k, v in names.items()} \
            if isinstance(names, dict) else {}

    def call(self, fn: str, *args: object) -> object:
        """``candidate.fn(*args)``, with plain-data arguments and result."""
        return self._request({"fn": fn, "args": encode(list(args)), "many": False})

    def map(self, fn: str, argsets: Sequence[Sequence[object]],
            arrays: Sequence[int] = ()) -> list:
        """``[candidate.fn(*args) for args in argsets]`` in one round trip; positional
        arguments at ``arrays`` arrive as float numpy arrays (when numpy is preloaded)."""
        value = self._request({"fn": fn, "args": [encode(list(a)) for a in argsets],
                               "many": True, "arrays": list(arrays)})
        if not isinstance(value, list) or len(value) != len(argsets):
            raise CandidateError("the sandboxed process answered with the wrong number of results")
        return value

    def value(self, name: str) -> object:
        """A top-level value of the candidate module (plain data)."""
        return self._request({"fn": name, "call": False})

    # ---- the protocol
    def _request(self, message: dict) -> object:
        self._send(json.dumps(message).encode("utf-8"))
        reply = self._receive()
        if reply.get("ok") is True and "value" in reply:
            try:
                return decode(reply["value"])
            except (ValueError, TypeError, RecursionError) as exc:
                raise CandidateError(f"the candidate's value could not be read: {exc}") from None
        error = reply.get("error")
        raise CandidateError(str(error) if error else "the sandboxed process sent a malformed "
                             "reply", str(reply.get("type") or "") or None)

    def _send(self, data: bytes) -> None:
        data = sandbox_child._HEADER.pack(len(data)) + data
        self._selector.register(self._requests, selectors.EVENT_WRITE, "send")
        try:
            while data:
                if self._wait() == "send":
                    try:
                        data = data[os.write(self._requests, data[:65536]):]
                    except BrokenPipeError:
                        raise self._died() from None
        finally:
            self._selector.unregister(self._requests)

    def _receive(self) -> dict:
        """The next reply frame; refusal frames are recorded on the way."""
        while True:
            frame = self._frame()
            if frame is None:
                self._pump_reply()
                continue
            if isinstance(frame, dict) and "refused" in frame and len(frame) == 1:
                self.refusals.append(str(frame["refused"])[:500])
                continue
            if not isinstance(frame, dict):
                raise CandidateError("the sandboxed process sent a malformed reply")
            return frame

    def _frame(self) -> object | None:
        size = sandbox_child._HEADER.size
        if len(self._buffer) < size:
            return None
        length = sandbox_child._HEADER.unpack(self._buffer[:size])[0]
        if length > MAX_FRAME_BYTES:
            raise CandidateError(f"the sandboxed process sent more than {MAX_FRAME_BYTES >> 20} MB "
                                 "in one reply")
        if len(self._buffer) < size + length:
            return None
        body = bytes(self._buffer[size:size + length])
        del self._buffer[:size + length]
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise CandidateError("the sandboxed process sent a malformed reply") from None

    def _pump_reply(self) -> None:
        while self._wait() != "reply":
            pass

    def _wait(self) -> str:
        """Block until the reply pipe has data ("reply") or the request pipe has room
        ("send"), draining stdout/stderr meanwhile; raises on timeout or death."""
        while True:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise CandidateError(f"Timed out: the candidate ran longer than {self._timeout:g} s "
                                     "and was killed.")
            for key, _ in self._selector.select(timeout=min(left, 1.0)):
                if key.data == "send":
                    return "send"
                chunk = os.read(key.fd, 1 << 16)
                if key.data is None:
                    if not chunk:
                        raise self._died()
                    self._buffer += chunk
                    return "reply"
                if chunk:
                    key.data.add(chunk)
                else:
                    self._selector.unregister(key.fd)

    def _died(self) -> CandidateError:
        try:
            returncode = self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            returncode = None
        self.drain()
        return CandidateError(_exit_reason(returncode, self._memory_mb))

    def drain(self) -> None:
        """Read what is left on stdout/stderr without waiting."""
        for key in list(self._selector.get_map().values()):
            if isinstance(key.data, _Tail):
                os.set_blocking(key.fd, False)
                try:
                    while chunk := os.read(key.fd, 1 << 16):
                        key.data.add(chunk)
                except (BlockingIOError, OSError):
                    pass


def run_sandboxed(
    code: str,
    driver: Callable[[Candidate], Any],
    *,
    timeout: float = 20.0,
    memory_mb: int = 1024,
    disk_mb: int = 64,
    processes: int = 16,
    preload: Sequence[str] = ("numpy",),
    audit_hook: bool = True,
) -> SandboxResult:
    """Import ``code`` in a fresh sandbox and return ``driver(candidate)``'s outcome.

    ``preload`` names modules imported before the audit hook goes live (module loading that
    needs ``ctypes`` or writes is refused afterwards); ones that are not installed are skipped.
    ``audit_hook=False`` leaves only the OS boundary (to test that it holds on its own).
    Raises :class:`SandboxUnavailable` when the boundary is missing and the user has not
    opted out; every failure of the candidate is ``ok=False`` with an error, never raised.
    """
    if timeout <= 0 or memory_mb <= 0 or disk_mb <= 0 or processes <= 0:
        raise ValueError("timeout, memory_mb, disk_mb and processes must be positive, got "
                         f"{timeout}, {memory_mb}, {disk_mb}, {processes}")
    isolated = _require_boundary()
    start = time.monotonic()
    pipes = [os.pipe() for _ in range(4)]  # requests, replies, stdout, stderr
    (req_r, req_w), (rep_r, rep_w), (out_r, out_w), (err_r, err_w) = pipes
    setup = {"memory_mb": memory_mb, "cpu_s": int(timeout) + 1, "preload": list(preload),
             "file_bytes": min(MAX_FILE_BYTES, disk_mb * 2**20), "processes": processes,
             "audit_hook": audit_hook}
    setup["requests_fd"], setup["replies_fd"] = req_r, rep_w
    files = {CANDIDATE_FILE: code.encode("utf-8", "surrogatepass")}
    scratch = None
    if isolated:
        spec = boundary.launch(files, _environment(boundary.WORKDIR), disk_mb * 2**20,
                               _CHILD_SOURCE)
        setup["uid"] = spec.uid
        command = [*spec.argv, sys.executable, "-I", "-B", "-u", boundary.CHILD_PATH, json.dumps(setup)]
        env, cwd, extra = {"PATH": os.defpath}, None, spec.pass_fds
    else:
        scratch = tempfile.mkdtemp(prefix="aldsl-sandbox-")
        Path(scratch, CANDIDATE_FILE).write_bytes(files[CANDIDATE_FILE])
        child = Path(scratch, ".child.py")
        child.write_bytes(_CHILD_SOURCE)
        command = [sys.executable, "-I", "-B", "-u", str(child), json.dumps(setup)]
        env, cwd, extra = _environment(scratch), scratch, ()
    try:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=out_w, stderr=err_w, pass_fds=(*extra, req_r, rep_w),
                                start_new_session=True)
    finally:
        for fd in (req_r, rep_w, out_w, err_w, *extra):
            os.close(fd)
    candidate = Candidate(proc, req_w, rep_r, out_r, err_r, start + timeout, timeout, memory_mb)
    try:
        try:
            candidate._handshake()
            value = driver(candidate)
            ok, error = True, None
        except CandidateError as exc:
            ok, value, error = False, None, str(exc)
        kill_group(proc.pid)
        proc.wait()
        refusals = candidate.refusals
        candidate.drain()
        stdout, stderr = candidate.stdout.text(), candidate.stderr.text()
        if refusals:
            ok, value, error = False, None, (
                "The sandbox refused: " + "; ".join(dict.fromkeys(refusals)) + ". The candidate "
                "may only compute, and read/write files in its own folder." +
                (f"\n{error}" if error else ""))
        if not ok:
            error = _with_tail(_memory_hint(error or "", memory_mb), stderr, error or "")
        return SandboxResult(ok, value, error, stdout, time.monotonic() - start)
    finally:
        kill_group(proc.pid)
        if proc.poll() is None:
            proc.wait()
        for fd in (req_w, rep_r, out_r, err_r):
            os.close(fd)
        if scratch:
            _remove_tree(scratch)


def _require_boundary() -> bool:
    """True when the OS boundary works; False when it does not but the user opted out."""
    reason = boundary.unavailable_reason()
    if reason is None:
        return True
    if boundary.opted_out():
        return False
    raise SandboxUnavailable(
        f"Running LLM-written code needs the sandbox's OS boundary, which is not available here: "
        f"{reason}. Install it (Debian/Ubuntu: apt-get install bubblewrap libseccomp2; "
        f"`make setup` does this), or set {boundary.OPT_IN_ENV}=1 to run the code anyway with only "
        "process limits and an audit hook, which do not stop a determined attacker.")


def _environment(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
        "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0",
    }


def _memory_hint(error: str, memory_mb: int) -> str:
    if "MemoryError" in error and "Memory limit" not in error:
        return f"Memory limit of {memory_mb} MB exceeded. {error}"
    return error


def _exit_reason(returncode: int | None, memory_mb: int) -> str:
    if returncode is None:
        return "The candidate's process stopped answering."
    if returncode < 0:
        sig = signal.Signals(-returncode)
        hint = {
            signal.SIGXCPU: "CPU time limit exceeded",
            signal.SIGKILL: f"killed: CPU time limit, or memory beyond {memory_mb} MB",
            signal.SIGSEGV: "segmentation fault",
            signal.SIGSYS: "a forbidden system call",
        }.get(sig, "killed")
        return f"The candidate's process died from signal {sig.name} ({hint})."
    return f"The candidate's process exited with status {returncode} before answering."


def _with_tail(message: str, stderr: str, already: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and line not in already]
    lines = lines[-TRACEBACK_LINES:]
    return message + ("\n" + "\n".join(lines) if lines else "")


def _remove_tree(path: str) -> None:
    """Delete the scratch folder even if the candidate removed permissions inside it."""
    import shutil

    for root, dirs, _files in os.walk(path):
        for name in dirs:
            try:
                os.chmod(os.path.join(root, name), 0o700)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)


def extract_python(text: str, defines: str | None = None) -> str:
    """The code in an LLM answer: the first fenced block (preferring one that contains
    ``def <defines>``), or the whole text when there is no fence."""
    blocks = re.findall(r"```[ \t]*(?:python|py)?[^\n]*\n(.*?)(?:```|$)", text, re.S)
    if defines is not None:
        for block in blocks:
            if f"def {defines}" in block:
                return block
    return blocks[0] if blocks else text


def finite_number(value: object, what: str) -> float:
    """``value`` as a float, or a CandidateError naming ``what`` (for drivers)."""
    if isinstance(value, numbers.Real) and math.isfinite(float(value)):
        return float(value)
    raise CandidateError(f"{what} must return a finite number, got {value!r}"[:300])
