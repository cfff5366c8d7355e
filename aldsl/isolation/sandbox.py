"""Run untrusted, LLM-written Python in a separate, restricted process.

``run_sandboxed(code, harness)`` writes the candidate to ``candidate.py`` in a fresh temporary
folder and runs a trusted ``harness`` (Python source that defines ``run(candidate, args)`` and
returns a JSON value) in a child Python process. Layers, outermost first:

1. **Process**: a separate ``python -I -B`` interpreter in its own session/process group,
   killed as a group on a wall-clock timeout; stdin is ``/dev/null``; stdout and stderr go to
   files in the temporary folder; the folder is deleted afterwards.
2. **Environment**: a scrubbed environment (no inherited variables, ``HOME`` and ``TMPDIR``
   point at the temporary folder, which is also the working directory).
3. **Kernel limits** (``setrlimit``, set by the child before anything else runs):
   ``RLIMIT_AS`` (memory), ``RLIMIT_CPU``, ``RLIMIT_FSIZE`` (largest file), ``RLIMIT_NOFILE``,
   ``RLIMIT_CORE = 0``.
4. **Network namespace**, only where ``unshare --net`` works for this user (probed once): the
   child then has no network interfaces at all. Without it, layer 5 still refuses sockets.
5. **Audit hook** (``sys.addaudithook``), installed after the harness and its imports (numpy,
   gymnasium, ...) are loaded and *before* the candidate is imported. It refuses: creating or
   using sockets; ``subprocess``, ``os.system``, ``exec*``, ``spawn*``, ``posix_spawn``,
   ``fork``; ``open`` for writing/appending/creating and ``remove``, ``unlink``, ``rmdir``,
   ``rename``, ``replace``, ``chmod``, ``chown``, ``truncate``, ``mkdir``, ``utime``,
   ``*xattr`` outside the folder; links and symlinks; ``chdir`` out of the folder; opening a
   directory outside the folder (closes the ``dir_fd`` route); ``kill``; ``setrlimit``;
   ``ctypes`` library loading, symbol lookup, foreign calls and raw memory access;
   ``gc`` object walking; and adding further audit hooks. Refusals are sticky: even when the
   candidate catches the ``PermissionError``, the run is reported as failed.

Guarantees and limits: the layers protect the host from *accidental* damage and from the
mistakes a code-writing model makes (infinite loops, huge allocations, stray file writes,
shelling out). **An audit hook is not a security boundary against a determined attacker**:
the candidate shares the interpreter with the hook and the harness, so it can tamper with
in-process state (including the value the harness reports), race the hook from threads, or
reach native code through modules that were already loaded. Files outside the folder stay
readable. The kernel limits, the process group kill and (where available) the network
namespace hold regardless of what happens inside the interpreter. For hostile code use a
container or VM around the whole program.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from aldsl.isolation import sandbox_child
from aldsl.isolation.procs import kill_group
from aldsl.isolation.sandbox_child import ARGS_FILE, MAX_FILE_BYTES, RESULT_FILE, TRACEBACK_LINES

_STDOUT_TAIL_BYTES = 20_000
CHILD_SCRIPT = os.path.abspath(sandbox_child.__file__)


@dataclass
class SandboxResult:
    """Outcome of one sandboxed run; ``error`` is one paragraph meant to be shown to an LLM."""

    ok: bool
    value: object | None
    error: str | None
    stdout: str
    seconds: float


def run_sandboxed(
    code: str,
    harness: str,
    *,
    timeout: float = 20.0,
    memory_mb: int = 1024,
    args: dict | None = None,
    preload: Sequence[str] = ("numpy",),
) -> SandboxResult:
    """Run ``harness.run(candidate_module, args)`` on ``code`` in a restricted child process.

    ``preload`` names modules imported before the audit hook goes live (module loading that
    needs ``ctypes`` or writes is refused afterwards); ones that are not installed are skipped.
    Never raises for anything the candidate does; every failure is ``ok=False`` with an error.
    """
    if timeout <= 0 or memory_mb <= 0:
        raise ValueError(f"timeout and memory_mb must be positive, got {timeout}, {memory_mb}")
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="aldsl-sandbox-"))
    start = time.monotonic()
    try:
        _write(workdir, "candidate.py", code)
        _write(workdir, "harness.py", harness)
        _write(workdir, ARGS_FILE, json.dumps(args or {}))
        setup = {"memory_mb": memory_mb, "cpu_s": int(timeout) + 1, "preload": list(preload)}
        argv = [*_netns_prefix(), sys.executable, "-I", "-B", CHILD_SCRIPT, workdir,
                json.dumps(setup)]
        with open(os.path.join(workdir, ".stdout"), "wb") as out, \
                open(os.path.join(workdir, ".stderr"), "wb") as err:
            proc = subprocess.Popen(argv, cwd=workdir, env=_scrubbed_env(workdir),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True)
            timed_out = False
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            kill_group(proc.pid)
            proc.wait()
        seconds = time.monotonic() - start
        return _collect(workdir, proc.returncode, timed_out, timeout, memory_mb, seconds)
    finally:
        _remove_tree(workdir)


def extract_python(text: str, defines: str | None = None) -> str:
    """The code in an LLM answer: the first fenced block (preferring one that contains
    ``def <defines>``), or the whole text when there is no fence."""
    blocks = re.findall(r"```[ \t]*(?:python|py)?[^\n]*\n(.*?)(?:```|$)", text, re.S)
    if defines is not None:
        for block in blocks:
            if f"def {defines}" in block:
                return block
    return blocks[0] if blocks else text


def _write(folder: str, name: str, text: str) -> None:
    with open(os.path.join(folder, name), "w", encoding="utf-8") as fh:
        fh.write(text)


def _scrubbed_env(workdir: str) -> dict[str, str]:
    return {
        "PATH": os.defpath, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


@lru_cache(maxsize=1)
def _netns_prefix() -> tuple[str, ...]:
    """``unshare`` arguments that give the child an empty network namespace, if this user may."""
    exe = shutil.which("unshare")
    if exe is None:
        return ()
    for prefix in ((exe, "--net"), (exe, "--map-root-user", "--net")):
        try:
            probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return prefix
    return ()


def _remove_tree(path: str) -> None:
    """Delete the sandbox folder even if the candidate removed permissions inside it."""
    for root, dirs, _files in os.walk(path):
        for name in dirs:
            try:
                os.chmod(os.path.join(root, name), 0o700)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)


def _read_text(path: str, tail_bytes: int = MAX_FILE_BYTES) -> str:
    """The last ``tail_bytes`` of a file ("" if it is missing)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - tail_bytes))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _collect(workdir: str, returncode: int, timed_out: bool, timeout: float, memory_mb: int,
             seconds: float) -> SandboxResult:
    stdout = _read_text(os.path.join(workdir, ".stdout"), _STDOUT_TAIL_BYTES)
    stderr = _read_text(os.path.join(workdir, ".stderr"), _STDOUT_TAIL_BYTES)
    stderr = stderr.replace(workdir + os.sep, "")
    raw = _read_text(os.path.join(workdir, RESULT_FILE))
    report: dict = {}
    if raw:
        try:
            report = json.loads(raw)
        except json.JSONDecodeError:
            report = {}
    if timed_out:
        error = f"Timed out: the candidate ran longer than {timeout:g} s and was killed."
        return SandboxResult(False, None, _with_tail(error, stderr), stdout, seconds)
    if not isinstance(report, dict):
        report = {}
    if report.get("ok") is True:
        return SandboxResult(True, report.get("value"), None, stdout, seconds)
    if report.get("error"):
        error = str(report["error"])
        if "MemoryError" in error:
            error = f"Memory limit of {memory_mb} MB exceeded. {error}"
        return SandboxResult(False, None, error, stdout, seconds)
    return SandboxResult(False, None, _with_tail(_exit_reason(returncode, memory_mb), stderr),
                         stdout, seconds)


def _exit_reason(returncode: int, memory_mb: int) -> str:
    if returncode < 0:
        sig = signal.Signals(-returncode)
        hint = {
            signal.SIGXCPU: "CPU time limit exceeded",
            signal.SIGKILL: f"killed: CPU time limit, or memory beyond {memory_mb} MB",
            signal.SIGSEGV: "segmentation fault",
        }.get(sig, "killed")
        return f"The candidate's process died from signal {sig.name} ({hint})."
    return f"The candidate's process exited with status {returncode} without reporting a result."


def _with_tail(message: str, stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()][-TRACEBACK_LINES:]
    return message + ("\n" + "\n".join(lines) if lines else "")
