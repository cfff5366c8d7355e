"""The child side of the sandbox (see :mod:`aldsl.isolation.sandbox`): the process that holds
the candidate and answers calls into it. Standard library only: it never imports the aldsl
package (the parent passes this file's text into the sandbox) and the parent imports nothing
from here but constants and the value codec.

Protocol, on two pipes the parent passes as file descriptors: frames of a 4-byte big-endian
length and a UTF-8 JSON object. The child sends ``{"ready": true, "names": {...}}`` once the
candidate is imported (or ``{"ready": false, "error": ...}``), then answers each request
``{"fn", "args", "many", "arrays"}`` with ``{"ok": true, "value"}`` or ``{"ok": false,
"error"}``. The audit hook reports every refusal at once as ``{"refused": what}``: what is
sent cannot be taken back. Nothing this process sends is trusted by the parent: it only
carries the candidate's return values, never a verdict.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import struct
import subprocess  # noqa: F401  loaded before the hook, whose setup then disarms its fork_exec
import sys
import traceback

MAX_FILE_BYTES = 64 * 2**20
MAX_OPEN_FILES = 64
TRACEBACK_LINES = 12
MAX_FRAME_BYTES = 64 * 2**20
CANDIDATE_FILE = "candidate.py"
_HEADER = struct.Struct(">I")


# ---- the value codec (both sides): JSON with tags for what JSON lacks. pickle is unsafe on
# untrusted bytes, JSON has no tuple/set/bytes, ast.literal_eval has no nan/inf: hence these lines.
def encode(value: object, depth: int = 0) -> object:
    """Plain data as JSON-ready objects; numpy scalars/arrays become Python numbers/lists."""
    if depth > 100:
        raise ValueError("the value is nested more than 100 levels deep")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return encode(value.tolist(), depth + 1)
    if isinstance(value, list):
        return [encode(v, depth + 1) for v in value]
    if isinstance(value, tuple):
        return {"$t": [encode(v, depth + 1) for v in value]}
    if isinstance(value, (set, frozenset)):
        return {"$f" if isinstance(value, frozenset) else "$s": [encode(v, depth + 1) for v in value]}
    if isinstance(value, dict):
        return {"$d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if isinstance(value, (bytes, bytearray)):
        return {"$b": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, complex):
        return {"$c": [value.real, value.imag]}
    raise TypeError(f"a {type(value).__name__} is not plain data (numbers, strings, bytes, None, "
                    "lists, tuples, sets, dicts)")


def decode(value: object, depth: int = 0) -> object:
    """The inverse of :func:`encode`; raises ValueError on anything it did not produce."""
    if depth > 100:
        raise ValueError("nested more than 100 levels deep")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [decode(v, depth + 1) for v in value]
    if isinstance(value, dict) and len(value) == 1:
        (tag, body), = value.items()
        if tag == "$b" and isinstance(body, str):
            return base64.b64decode(body, validate=True)
        if isinstance(body, list):
            items = [decode(v, depth + 1) for v in body]
            if tag == "$t":
                return tuple(items)
            if tag in ("$s", "$f"):
                return set(items) if tag == "$s" else frozenset(items)
            if tag == "$d" and all(isinstance(p, list) and len(p) == 2 for p in items):
                return {k: v for k, v in items}
            if tag == "$c" and len(items) == 2 and all(isinstance(v, float) for v in items):
                return complex(*items)
    raise ValueError(f"not an encoded value: {str(value)[:80]}")


def write_frame(fd: int, message: dict) -> None:
    data = json.dumps(message).encode("utf-8")
    data = _HEADER.pack(len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def _read_exactly(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> dict | None:
    """The next frame from the parent (trusted), or None at end of input."""
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    body = _read_exactly(fd, _HEADER.unpack(header)[0])
    return None if body is None else json.loads(body)


# ---- the child process
def _child_main(setup: dict) -> None:
    requests, replies = setup["requests_fd"], setup["replies_fd"]
    workdir = os.getcwd()
    if setup.get("uid") is not None:
        _drop_privileges(workdir, setup["uid"])
    _set_limits(setup)
    sys.path.insert(0, workdir)
    _preload(setup["preload"])
    sys.modules.pop("_posixsubprocess", None)  # reachable only through the modules loaded so far
    if setup["audit_hook"]:
        _disarm_process_spawning()
        _install_audit_hook(workdir, replies)
    try:
        candidate = _load_candidate(workdir)
        names = {name: _kind(value) for name, value in vars(candidate).items()
                 if not name.startswith("__")}
        write_frame(replies, {"ready": True, "names": names})
    except BaseException as exc:  # noqa: BLE001  (the candidate may raise anything)
        write_frame(replies, {"ready": False, "error": _describe_failure(exc, workdir)})
        return
    while (request := read_frame(requests)) is not None:
        write_frame(replies, _answer(candidate, request, workdir))


def _kind(value: object) -> str:
    return "function" if callable(value) else "value"


def _load_candidate(workdir: str) -> object:
    import types

    path = os.path.join(workdir, CANDIDATE_FILE)
    with open(path, encoding="utf-8") as fh:
        source = fh.read()
    module = types.ModuleType("candidate")
    module.__file__ = path
    sys.modules["candidate"] = module
    exec(compile(source, path, "exec"), vars(module))
    return module


def _answer(candidate: object, request: dict, workdir: str) -> dict:
    try:
        fn = getattr(candidate, request["fn"])
        if not request.get("call", True):
            return {"ok": True, "value": encode(fn)}
        arrays = set(request.get("arrays", ()))
        argsets = request["args"] if request["many"] else [request["args"]]
        results = [fn(*_arguments(decode(args), arrays)) for args in argsets]
        return {"ok": True, "value": encode(results if request["many"] else results[0])}
    except BaseException as exc:  # noqa: BLE001
        return {"ok": False, "error": _describe_failure(exc, workdir),
                "type": type(exc).__name__}


def _arguments(args: list, arrays: set[int]) -> list:
    if arrays and "numpy" in sys.modules:
        numpy = sys.modules["numpy"]
        return [numpy.asarray(a, dtype=float) if i in arrays else a for i, a in enumerate(args)]
    return args


def _preload(modules: list[str]) -> None:
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # the candidate gets its own ImportError if it needs the module


def _drop_privileges(workdir: str, uid: int) -> None:
    """Running as root in the sandbox (the parent is root): give the work folder to ``uid`` and
    become it for good; changing all three uids drops every capability."""
    for root, dirs, files in os.walk(workdir):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), uid, uid, follow_symlinks=False)
    os.chown(workdir, uid, uid)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def _set_limits(setup: dict) -> None:
    _lower_limit(resource.RLIMIT_AS, setup["memory_mb"] * 2**20)
    _lower_limit(resource.RLIMIT_CPU, setup["cpu_s"], hard_extra=1)
    _lower_limit(resource.RLIMIT_FSIZE, setup["file_bytes"])
    _lower_limit(resource.RLIMIT_NOFILE, MAX_OPEN_FILES)
    _lower_limit(resource.RLIMIT_NPROC, setup["processes"])
    _lower_limit(resource.RLIMIT_CORE, 0)
    _lower_limit(resource.RLIMIT_MEMLOCK, 0)
    _lower_limit(resource.RLIMIT_MSGQUEUE, 0)


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
              if os.path.basename(f.filename) == CANDIDATE_FILE]
    head = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    lines = [f"Traceback ({CANDIDATE_FILE} frames):"] if frames else []
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
    "ctypes.cdata", "ctypes.cdata/buffer", "ctypes.string_at", "ctypes.wstring_at",
    "ctypes.addressof", "ctypes.PyObj_FromPtr", "gc.get_objects", "gc.get_referrers",
    "gc.get_referents", "sys.addaudithook", "cpython.PyInterpreterState_New",
})
# Events whose first argument is a path (or fd) that must lie inside the sandbox, mapped to
# the position of their ``dir_fd`` argument (None: the event has none).
_PATH_EVENTS: dict[str, int | None] = {
    "os.remove": 1, "os.rmdir": 1, "os.chmod": 2, "os.chown": 3, "os.mkdir": 2, "os.utime": 3,
    "os.truncate": None, "os.setxattr": None, "os.removexattr": None, "os.chflags": None,
    "os.lchflags": None, "sqlite3.connect": None, "shutil.rmtree": 1,
}
# Modules that run code with no audit hook (sub-interpreters) or poke the interpreter's insides.
_REFUSED_IMPORTS = ("_posixsubprocess", "_xxsubinterpreters", "_interpreters", "_xxinterpchannels",
                    "_interpchannels", "_interpqueues", "_test", "_xxtestfuzz", "_ctypes_test")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _install_audit_hook(workdir: str, replies: int) -> None:
    """Install the refusing hook. Each refusal is written to the parent before it is raised."""
    root = os.path.realpath(workdir)
    send, readlink, realpath, getcwd = write_frame, os.readlink, os.path.realpath, os.getcwd

    def resolve(path: object) -> str | None:
        if isinstance(path, int):
            try:
                return readlink(f"/proc/self/fd/{path}")
            except OSError:
                return None
        try:
            path = os.fsdecode(os.fspath(path))
        except TypeError:
            return None
        return realpath(os.path.join(getcwd(), path))

    def inside(path: object) -> bool:
        resolved = resolve(path)
        return resolved is not None and (resolved == root or resolved.startswith(root + os.sep))

    def refuse(what: str) -> None:
        send(replies, {"refused": what})
        raise PermissionError(f"sandbox: {what} is not allowed")

    def hook(event: str, args: tuple) -> None:
        if event in _ALWAYS_REFUSED or event.startswith("socket."):
            refuse(event)
        elif event == "import" and str(args[0]).startswith(_REFUSED_IMPORTS):
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
            target = args[0]
            if event == "sqlite3.connect" and str(target) in (":memory:", ""):
                return
            if not inside(target) or dir_fd not in (None, -1):
                refuse(f"{event}({target!r}) outside the sandbox")
        elif event == "os.rename":
            if not (inside(args[0]) and inside(args[1])) or any(
                    fd not in (None, -1) for fd in args[2:4]):
                refuse(f"os.rename/replace({args[0]!r}, {args[1]!r}) outside the sandbox")
        elif event == "os.chdir" and not inside(args[0]):
            refuse(f"os.chdir({args[0]!r}) out of the sandbox")

    def refusing(name: str):
        def stub(*_args: object, **_kwargs: object) -> None:
            refuse(name)
        return stub

    # ctypes' raw-memory helpers raise no audit event; unlink them (numpy loads ctypes early).
    for module in (sys.modules.get("ctypes"), sys.modules.get("_ctypes")):
        for name in ("memmove", "memset", "_memmove_addr", "_memset_addr", "_string_at_addr",
                     "_wstring_at_addr", "_cast_addr"):
            if module is not None and hasattr(module, name):
                setattr(module, name, refusing(f"ctypes.{name}"))
    sys.addaudithook(hook)


if __name__ == "__main__":
    _child_main(json.loads(sys.argv[1]))
