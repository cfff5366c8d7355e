"""The child side of the sandbox: runs as ``python -I -B sandbox_child.py WORKDIR SETUP`` inside the
restricted process (see :mod:`aldsl.isolation.sandbox`). Standard library only: it never imports
the aldsl package, and the parent imports nothing from here but constants."""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess  # noqa: F401  loaded before the hook, whose setup then disarms its fork_exec
import sys
import traceback

MAX_FILE_BYTES = 64 * 2**20
MAX_OPEN_FILES = 256
TRACEBACK_LINES = 12
RESULT_FILE = ".aldsl_result.json"
ARGS_FILE = ".aldsl_args.json"


def _child_main(workdir: str, setup: dict) -> None:
    _set_limits(setup["memory_mb"], setup["cpu_s"])
    sys.path.insert(0, workdir)
    report: dict
    try:
        _preload(setup["preload"])
        import harness  # trusted; its imports load before the hook

        with open(os.path.join(workdir, ARGS_FILE), encoding="utf-8") as fh:
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
    with open(os.path.join(workdir, RESULT_FILE), "w", encoding="utf-8") as fh:
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
    _lower_limit(resource.RLIMIT_FSIZE, MAX_FILE_BYTES)
    _lower_limit(resource.RLIMIT_NOFILE, MAX_OPEN_FILES)
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
    text = "\n".join([*lines[-TRACEBACK_LINES:], head])
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
