"""The OS-level boundary around untrusted code: a bubblewrap (``bwrap``) command line and a
seccomp filter (libseccomp, through ``pyseccomp``), probed once per process.

Inside the boundary the process sees a fresh root: read-only binds of ``/usr`` (and its
``/bin``, ``/lib*`` links), the Python installation and its site-packages, a few loader files
of ``/etc``, a new ``/proc`` of its own PID namespace, a minimal ``/dev``, and one writable,
size-capped tmpfs, ``/sandbox`` (its working folder, also ``HOME`` and ``TMPDIR``). Nothing else
of the host's file system exists there. It has its own PID, network (no interfaces but a
down loopback), IPC, UTS and cgroup namespaces, a cleared environment, no capabilities, and
dies with its parent. As root, bwrap runs privileged and the child switches to a fresh,
unused uid before any untrusted code runs; otherwise bwrap runs in a user namespace and
further user namespaces are disabled. The seccomp filter refuses what would leave or
outgrow the box: namespaces and mounts, ``memfd_create``/SysV shared memory (memory outside
the limits), ``ptrace``, ``bpf``, ``io_uring``, ``userfaultfd``, ``perf_event_open``, keyrings,
non-Unix sockets and terminal injection.
"""

from __future__ import annotations

import os
import secrets
import shutil
import site
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache

WORKDIR = "/sandbox"
CHILD_PATH = "/aldsl/child.py"
OPT_IN_ENV = "ALDSL_ALLOW_UNSANDBOXED"
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
              "/etc/alternatives")
_EPERM, _ENOSYS, _EAFNOSUPPORT = 1, 38, 97
_DENIED = (
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "mount_setattr", "move_mount",
    "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "memfd_create", "memfd_secret",
    "shmget", "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "bpf",
    "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "open_by_handle_at", "name_to_handle_at",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "syslog", "acct", "quotactl", "vhangup", "personality",
)
_CLONE_NAMESPACES = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                     0x40000000, 0x00000080)  # NEWNS NEWCGROUP NEWUTS NEWIPC NEWUSER NEWPID NEWNET NEWTIME
_TIOCSTI, _AF_UNIX = 0x5412, 1


class BoundaryUnavailable(RuntimeError):
    """The OS boundary cannot be set up on this machine (the message says why)."""


@dataclass(frozen=True)
class Launch:
    """One bwrap command line and the descriptors it reads (closed by the caller after start)."""

    argv: list[str]
    pass_fds: tuple[int, ...]
    uid: int | None  # the uid the child switches to (privileged mode), else None


def opted_out() -> bool:
    """True when the user allows untrusted code to run without the boundary."""
    return os.environ.get(OPT_IN_ENV, "").strip().lower() in ("1", "true", "yes")


@lru_cache(maxsize=1)
def seccomp_program() -> bytes:
    """The compiled BPF filter (see the module docstring for what it refuses)."""
    import pyseccomp as sc

    flt = sc.SyscallFilter(defaction=sc.ALLOW)
    for name in _DENIED:
        try:
            flt.add_rule(sc.ERRNO(_EPERM), name)
        except (RuntimeError, ValueError, OSError):
            pass  # a syscall this kernel/libseccomp does not know cannot be made either
    for flag in _CLONE_NAMESPACES:
        flt.add_rule(sc.ERRNO(_EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    flt.add_rule(sc.ERRNO(_ENOSYS), "clone3")  # flags hidden in a struct: libc falls back to clone
    flt.add_rule(sc.ERRNO(_EAFNOSUPPORT), "socket", sc.Arg(0, sc.NE, _AF_UNIX))
    flt.add_rule(sc.ERRNO(_EPERM), "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, _TIOCSTI))
    with tempfile.TemporaryFile() as fh:
        flt.export_bpf(fh)
        fh.seek(0)
        return fh.read()


def _python_roots() -> list[str]:
    """The folders the interpreter and its packages live in (outside the system dirs)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
             *site.getsitepackages()}
    real = sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)} |
                  {os.path.abspath(p) for p in paths if os.path.isdir(p)})
    roots: list[str] = []
    for path in real:
        if path.startswith(tuple(d + "/" for d in _SYSTEM_DIRS)) or path in _SYSTEM_DIRS:
            continue
        if not any(path == r or path.startswith(r + "/") for r in roots):
            roots.append(path)
    return roots


def _ancestors(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[:i + 1]) for i in range(len(parts))]


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, 0)  # no CLOEXEC: bwrap reads it
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def launch(files: dict[str, bytes], env: dict[str, str], disk_bytes: int,
           child_source: bytes) -> Launch:
    """The bwrap command line (ending in ``--``: append the command) with ``files`` placed in
    the work folder and ``env`` as the whole environment."""
    exe = shutil.which("bwrap")
    if exe is None:
        raise BoundaryUnavailable("bubblewrap (bwrap) is not installed")
    privileged = os.geteuid() == 0
    argv = [exe, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
    if privileged:
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                 "--cap-add", "CAP_CHOWN"]
    else:
        argv += ["--unshare-user", "--disable-userns"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for path in _ETC_FILES:
        argv += ["--ro-bind-try", path, path]
    for path in _python_roots():
        for parent in _ancestors(path):  # bwrap would copy their modes (/root is 0700)
            argv += ["--perms", "0755", "--dir", parent]
        argv += ["--ro-bind", path, path]
    fds = [_memfd("child", child_source)]
    argv += ["--ro-bind-data", str(fds[0]), CHILD_PATH, "--proc", "/proc", "--dev", "/dev",
             "--size", str(disk_bytes), "--perms", "0700", "--tmpfs", WORKDIR]
    for name, data in files.items():
        fds.append(_memfd(name, data))
        argv += ["--perms", "0600", "--file", str(fds[-1]), f"{WORKDIR}/{name}"]
    fds.append(_memfd("seccomp", seccomp_program()))
    argv += ["--seccomp", str(fds[-1]), "--remount-ro", "/dev", "--remount-ro", "/",
             "--chdir", WORKDIR, "--"]
    uid = 2**30 + secrets.randbelow(2**29) if privileged else None
    return Launch(argv, tuple(fds), uid)


@lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """None when the boundary works here, else why not (probed once: a real sandboxed Python)."""
    if not sys.platform.startswith("linux"):
        return f"it needs Linux namespaces, and this is {sys.platform}"
    try:
        seccomp_program()
    except Exception as exc:  # noqa: BLE001  (ImportError, a missing libseccomp, ...)
        return f"the seccomp filter could not be built ({type(exc).__name__}: {exc}); " \
               "install libseccomp2 and the pyseccomp package"
    try:
        spec = launch({}, {"PATH": "/usr/bin"}, 2**20, b"")
    except BoundaryUnavailable as exc:
        return str(exc)
    try:
        probe = subprocess.run([*spec.argv, sys.executable, "-I", "-S", "-c", "pass"],
                               pass_fds=spec.pass_fds, capture_output=True,
                               stdin=subprocess.DEVNULL, env={"PATH": os.defpath}, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap could not start ({exc})"
    finally:
        for fd in spec.pass_fds:
            os.close(fd)
    if probe.returncode != 0:
        detail = probe.stderr.decode("utf-8", "replace").strip().splitlines()
        return "bwrap failed here: " + (detail[-1] if detail else f"exit {probe.returncode}") + \
            " (user namespaces may be disabled, or this is a container without the rights)"
    return None
