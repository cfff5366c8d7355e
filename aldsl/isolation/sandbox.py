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

import importlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

_MAX_FILE_BYTES = 64 * 2**20
_MAX_OPEN_FILES = 256
_STDOUT_TAIL_BYTES = 20_000
_TRACEBACK_LINES = 12
_RESULT_FILE = ".aldsl_result.json"
_ARGS_FILE = ".aldsl_args.json"


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
        _write(workdir, _ARGS_FILE, json.dumps(args or {}))
        setup = {"memory_mb": memory_mb, "cpu_s": int(timeout) + 1, "preload": list(preload)}
        argv = [*_netns_prefix(), sys.executable, "-I", "-B", os.path.abspath(__file__), workdir,
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
            _kill_group(proc.pid)
            proc.wait()
        seconds = time.monotonic() - start
        return _collect(workdir, proc.returncode, timed_out, timeout, memory_mb, seconds)
    finally:
        _remove_tree(workdir)


_TESTS_HARNESS = """\
def run(candidate, args):
    namespace = dict(vars(candidate))
    exec(compile(args["tests"], "tests", "exec"), namespace)
    return True
"""


def extract_python(text: str, defines: str | None = None) -> str:
    """The code in an LLM answer: the first fenced block (preferring one that contains
    ``def <defines>``), or the whole text when there is no fence."""
    blocks = re.findall(r"```[ \t]*(?:python|py)?[^\n]*\n(.*?)(?:```|$)", text, re.S)
    if defines is not None:
        for block in blocks:
            if f"def {defines}" in block:
                return block
    return blocks[0] if blocks else text


def run_tests(answer: str, record: dict, field: str = "tests", timeout: float = 10.0) -> float:
    """1.0 if the code in ``answer`` passes ``record[field]`` (Python asserts run in the
    candidate's namespace, in the sandbox), else 0.0."""
    result = run_sandboxed(extract_python(answer), _TESTS_HARNESS, timeout=timeout,
                           args={"tests": str(record[field])})
    return 1.0 if result.ok else 0.0


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


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _remove_tree(path: str) -> None:
    """Delete the sandbox folder even if the candidate removed permissions inside it."""
    for root, dirs, _files in os.walk(path):
        for name in dirs:
            try:
                os.chmod(os.path.join(root, name), 0o700)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)


def _read_text(path: str, tail_bytes: int = _MAX_FILE_BYTES) -> str:
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
    raw = _read_text(os.path.join(workdir, _RESULT_FILE))
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
    lines = [line for line in stderr.splitlines() if line.strip()][-_TRACEBACK_LINES:]
    return message + ("\n" + "\n".join(lines) if lines else "")


# --------------------------------------------------------------------------------------------
# Child side: everything below runs in the sandboxed interpreter (``python -I sandbox.py``),
# which never imports the aldsl package.


def _child_main(workdir: str, setup: dict) -> None:
    _set_limits(setup["memory_mb"], setup["cpu_s"])
    sys.path.insert(0, workdir)
    report: dict
    try:
        _preload(setup["preload"])
        import harness  # trusted; its imports load before the hook

        with open(os.path.join(workdir, _ARGS_FILE), encoding="utf-8") as fh:
            args = json.load(fh)
        _disarm_process_spawning()
        violations = _install_audit_hook(workdir)
        try:
            import candidate

            value = harness.run(candidate, args)
            json.dumps(value)  # fail here, with a traceback, if it is not JSON
            report = {"ok": True, "value": value}
        except BaseException as exc:  # noqa: BLE001  (the candidate may raise anything)
            report = {"ok": False, "error": _describe_failure(exc, workdir)}
        if violations:
            report = {"ok": False, "error": "The sandbox refused: " + "; ".join(violations)
                      + ". The candidate may only compute, and read/write files in its own "
                      "folder." + _suffix(report)}
    except BaseException as exc:  # noqa: BLE001  (harness failures are reported, not raised)
        report = {"ok": False, "error": "The harness failed: " + _describe_failure(exc, workdir)}
    with open(os.path.join(workdir, _RESULT_FILE), "w", encoding="utf-8") as fh:
        json.dump(report, fh)


def _preload(modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # the candidate gets its own ImportError if it needs the module


def _suffix(report: dict) -> str:
    return f"\n{report['error']}" if report.get("error") else ""


def _set_limits(memory_mb: int, cpu_s: int) -> None:
    _lower_limit(resource.RLIMIT_AS, memory_mb * 2**20)
    _lower_limit(resource.RLIMIT_CPU, cpu_s, hard_extra=1)
    _lower_limit(resource.RLIMIT_FSIZE, _MAX_FILE_BYTES)
    _lower_limit(resource.RLIMIT_NOFILE, _MAX_OPEN_FILES)
    _lower_limit(resource.RLIMIT_CORE, 0)


def _lower_limit(kind: int, value: int, hard_extra: int = 0) -> None:
    """Set soft and hard limits to ``value`` (never above an existing hard limit)."""
    _soft, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
        hard_extra = min(hard_extra, hard - value)
    resource.setrlimit(kind, (value, value + hard_extra))


def _describe_failure(exc: BaseException, workdir: str) -> str:
    """One line saying what went wrong, then the candidate's own traceback lines."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if os.path.basename(f.filename) == "candidate.py"]
    head = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    lines = ["Traceback (candidate.py frames):"] if frames else []
    lines += [line.rstrip() for line in traceback.format_list(frames)]
    text = "\n".join([*lines[-_TRACEBACK_LINES:], head])
    return text.replace(workdir + os.sep, "")


def _disarm_process_spawning() -> None:
    """``_posixsubprocess.fork_exec`` raises no audit event: unlink it before the hook is live."""
    module = sys.modules.pop("_posixsubprocess", None)
    if module is None:
        return
    doomed = (module, module.fork_exec)
    for loaded in list(sys.modules.values()):
        namespace = getattr(loaded, "__dict__", None)
        if isinstance(namespace, dict):
            for name, value in list(namespace.items()):
                if any(value is target for target in doomed):
                    namespace[name] = None


_ALWAYS_REFUSED = frozenset({
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
    "os.forkpty", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill",
    "os.link", "os.symlink", "resource.setrlimit", "resource.prlimit",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.call_function",
    "ctypes.cdata", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    "sys.addaudithook",
})
# Events whose first argument is a path (or fd) that must lie inside the sandbox, mapped to
# the position of their ``dir_fd`` argument (None: the event has none).
_PATH_EVENTS: dict[str, int | None] = {
    "os.remove": 1, "os.rmdir": 1, "os.chmod": 2, "os.chown": 3, "os.mkdir": 2, "os.utime": 3,
    "os.truncate": None, "os.setxattr": None, "os.removexattr": None, "os.chflags": None,
    "os.lchflags": None,
}
_REFUSED_IMPORTS = frozenset({"_posixsubprocess"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _install_audit_hook(workdir: str) -> list[str]:
    """Install the refusing hook; returns the (live) list of refusals it records."""
    violations: list[str] = []
    root = os.path.realpath(workdir)

    def resolve(path: object) -> str | None:
        if isinstance(path, int):
            try:
                return os.readlink(f"/proc/self/fd/{path}")
            except OSError:
                return None
        try:
            path = os.fsdecode(os.fspath(path))
        except TypeError:
            return None
        return os.path.realpath(os.path.join(os.getcwd(), path))

    def inside(path: object) -> bool:
        resolved = resolve(path)
        return resolved is not None and (resolved == root or resolved.startswith(root + os.sep))

    def refuse(what: str) -> None:
        violations.append(what)
        raise PermissionError(f"sandbox: {what} is not allowed")

    def hook(event: str, args: tuple) -> None:
        if event in _ALWAYS_REFUSED or event.startswith("socket."):
            refuse(event)
        elif event == "import" and args[0] in _REFUSED_IMPORTS:
            refuse(f"import {args[0]}")
        elif event == "open":
            path, mode, flags = args
            writing = (flags or 0) & _WRITE_FLAGS or (isinstance(mode, str) and any(
                c in mode for c in "wax+"))
            if isinstance(path, int) or path == os.devnull or inside(path):
                return
            if writing:
                refuse(f"open({path!r}, {mode or 'flags=' + str(flags)!r}) outside the sandbox")
            resolved = resolve(path)
            if resolved is not None and os.path.isdir(resolved):
                refuse(f"opening the directory {path!r} outside the sandbox")
        elif event in _PATH_EVENTS:
            at = _PATH_EVENTS[event]
            dir_fd = args[at] if at is not None and at < len(args) else None
            if not inside(args[0]) or dir_fd not in (None, -1):
                refuse(f"{event}({args[0]!r}) outside the sandbox")
        elif event == "os.rename":
            if not (inside(args[0]) and inside(args[1])) or any(
                    fd not in (None, -1) for fd in args[2:4]):
                refuse(f"os.rename/replace({args[0]!r}, {args[1]!r}) outside the sandbox")
        elif event == "os.chdir" and not inside(args[0]):
            refuse(f"os.chdir({args[0]!r}) out of the sandbox")

    sys.addaudithook(hook)
    return violations


if __name__ == "__main__":
    _child_main(sys.argv[1], json.loads(sys.argv[2]))
