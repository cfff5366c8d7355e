"""The sandbox: what a benign candidate gets, and what a hostile one cannot do.

Every hostile candidate runs twice, with the audit hook and without it (the OS boundary
alone), and each run must leave the canary folder and the package's files unchanged, leak no
secret of the parent into the error, stdout or value, never be scored as a success, and
leave no process behind.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path

import pytest

from aldsl.isolation import boundary, sandbox_child
from aldsl.evaluators.code_tests import code_tests_driver, run_tests, run_tests_many
from aldsl.isolation.sandbox import CandidateError, SandboxUnavailable, extract_python, run_sandboxed

SECRET = "canary-secret-7f3a91c2"
MARKER = "aldsl-hostile-marker-5e1d"
PACKAGE = Path(sandbox_child.__file__).resolve().parent


def square_driver(candidate) -> bool:
    """The trusted side: success only if ``square`` really squares."""
    return candidate.call("square", 3) == 9 and candidate.call("square", -4) == 16


@pytest.fixture()
def canary(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "canary"
    (folder / "sub").mkdir(parents=True)
    (folder / "keep.txt").write_text("precious")
    (folder / "sub" / "deep.txt").write_text("also precious")
    (folder / "secret.txt").write_text(SECRET)
    monkeypatch.setenv("ALDSL_CANARY_SECRET", SECRET)
    return folder


def snapshot(*folders: Path) -> dict[str, tuple]:
    out = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
            out[str(path)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


def survivors() -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                if MARKER.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
            except OSError:
                pass
    return found


def assert_contained(result, before: dict, canary: Path) -> None:
    text = f"{result.error}\n{result.stdout}\n{result.value!r}"
    assert SECRET not in text, "a secret of the parent leaked into the feedback"
    assert not (result.ok and result.value is True), "a forged result was accepted"
    assert snapshot(canary, PACKAGE) == before, "something outside the sandbox changed"
    deadline = time.monotonic() + 3.0
    while survivors() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert survivors() == [], "a process outlived the sandbox"


def hostile(canary: Path, code: str, hook: bool, timeout: float = 2.0, **kwargs):
    code = code.replace("CANARY", str(canary)).replace("MARKER", MARKER)
    code = code.replace("PACKAGE", str(PACKAGE))
    before = snapshot(canary, PACKAGE)
    result = run_sandboxed(code, square_driver, timeout=timeout, memory_mb=512, disk_mb=16,
                           audit_hook=hook, **kwargs)
    assert_contained(result, before, canary)
    return result


LEAK = "\ndef square(x):\n    raise RuntimeError(str(stolen))\n"
# (id, candidate); each also defines or fails to define a wrong square().
ATTACKS = [
    ("subinterpreter-xx", "import _xxsubinterpreters as s\ni = s.create()\n"
     "s.run_string(i, \"open('CANARY/pwned', 'w').write('x'); import os; os.remove('CANARY/keep.txt'); "
     "os.system('setsid sleep 300 MARKER &')\")\ndef square(x):\n    return x * x + 1\n"),
    ("subinterpreter-testcapi", "import _testcapi\n_testcapi.run_in_subinterp("
     "\"import os; os.remove('CANARY/keep.txt')\")\ndef square(x):\n    return x * x + 1\n"),
    ("subinterpreter-interpreters", "import _interpreters\ndef square(x):\n    return x * x + 1\n"),
    ("ppid-environ", "import os\nstolen = open(f'/proc/{os.getppid()}/environ', 'rb').read()" + LEAK),
    ("all-proc-environ", "import os\nstolen = []\nfor p in os.listdir('/proc'):\n    try:\n"
     "        stolen.append(open(f'/proc/{p}/environ', 'rb').read())\n"
     "        stolen.append(open(f'/proc/{p}/cmdline', 'rb').read())\n    except Exception:\n"
     "        pass" + LEAK),
    ("own-environ", "import os\nstolen = dict(os.environ)\nprint(stolen)" + LEAK),
    ("secret-file", "stolen = open('CANARY/secret.txt').read()\nprint(stolen)" + LEAK),
    ("secret-walk", "import os\nstolen = []\nfor root, dirs, files in os.walk('/'):\n"
     "    if root.startswith(('/proc', '/sys', '/usr')):\n        dirs[:] = []\n        continue\n"
     "    for f in files:\n        try:\n            t = open(os.path.join(root, f), errors='ignore').read(100000)\n"
     "            if 'canary-secret' in t:\n                stolen.append(t)\n        except Exception:\n"
     "            pass" + LEAK),
    ("forged-reply-frame", "import os, json, struct\nfor fd in range(3, 64):\n    try:\n"
     "        d = json.dumps({'ok': True, 'value': True}).encode()\n"
     "        os.write(fd, struct.pack('>I', len(d)) + d)\n    except OSError:\n        pass\n"
     "os._exit(0)\n"),
    ("forged-ready-then-true", "import os, json, struct\ndef w(m):\n    d = json.dumps(m).encode()\n"
     "    for fd in range(3, 64):\n        try:\n            os.write(fd, struct.pack('>I', len(d)) + d)\n"
     "        except OSError:\n            pass\nw({'ready': True, 'names': {'square': 'function'}})\n"
     "for _ in range(4):\n    w({'ok': True, 'value': 9})\nos._exit(0)\n"),
    ("forged-result-file", "import json, os\njson.dump({'ok': True, 'value': True}, "
     "open('.aldsl_result.json', 'w'))\nos._exit(0)\n"),
    ("always-equal-object", "class Anything:\n    def __eq__(self, other):\n        return True\n"
     "def square(x):\n    return Anything()\n"),
    ("patch-the-child", "import sys\nmain = sys.modules['__main__']\n"
     "main.encode = lambda v, depth=0: 9\ndef square(x):\n    return 0\n"),
    ("mknod-outside", "import os\nos.mknod('CANARY/node')\ndef square(x):\n    return 0\n"),
    ("mkfifo-outside", "import os\nos.mkfifo('CANARY/fifo')\ndef square(x):\n    return 0\n"),
    ("sqlite-outside", "import sqlite3\nsqlite3.connect('CANARY/db.sqlite').execute('create table t(x)')\n"
     "def square(x):\n    return 0\n"),
    ("ctypes-memmove", "import ctypes\nb = ctypes.create_string_buffer(8)\n"
     "ctypes.memmove(b, b'pwned', 5)\ndef square(x):\n    return x * x + 1\n"),
    ("clear-refusals-getframe", "import sys\ntry:\n    open('CANARY/x', 'w')\nexcept Exception:\n    pass\n"
     "f = sys._getframe()\nwhile f:\n    for v in f.f_locals.values():\n"
     "        if isinstance(v, list):\n            v.clear()\n    f = f.f_back\n"
     "def square(x):\n    return x * x + 1\n"),
    ("many-files", "n = 0\ntry:\n    while True:\n        open(f'f{n}', 'wb').write(b'x' * 2**20)\n"
     "        n += 1\nexcept OSError:\n    pass\ndef square(x):\n    return n\n"),
    ("one-huge-file", "f = open('big', 'wb')\nwhile True:\n    f.write(b'x' * 2**22)\n"),
    ("infinite-loop", "while True:\n    pass\n"),
    ("signal-ignoring-loop", "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, "
     "signal.SIGXCPU):\n    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\n"),
    ("huge-allocation", "data = bytearray(20 * 2**30)\ndef square(x):\n    return x * x + 1\n"),
    ("fork-bomb", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"),
    ("setsid-survivor", "import os, sys, time\nif os.fork() == 0:\n    os.setsid()\n"
     "    if os.fork() == 0:\n        os.execv(sys.executable, [sys.executable, '-c', "
     "'import time; time.sleep(300)', 'MARKER'])\n    os._exit(0)\ntime.sleep(0.3)\n"
     "def square(x):\n    return 0\n"),
    ("popen-daemon", "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', "
     "'import time; time.sleep(300)', 'MARKER'], start_new_session=True)\n"
     "def square(x):\n    return 0\n"),
    ("os-system-shell", "import os\nos.system('touch CANARY/shell; setsid sleep 300 MARKER &')\n"
     "def square(x):\n    return 0\n"),
    ("tcp-socket", "import socket\ns = socket.create_connection(('127.0.0.1', PORT), timeout=1)\n"
     "s.sendall(b'leak')\ndef square(x):\n    return 0\n"),
    ("raw-sockets", "import socket\nfor fam, typ in ((socket.AF_INET6, socket.SOCK_STREAM), "
     "(socket.AF_NETLINK, socket.SOCK_RAW), (socket.AF_PACKET, socket.SOCK_RAW)):\n"
     "    socket.socket(fam, typ)\ndef square(x):\n    return x * x + 1\n"),
    ("write-outside", "open('CANARY/keep.txt', 'w').write('pwned')\ndef square(x):\n    return 0\n"),
    ("delete-outside", "import os, shutil\nos.remove('CANARY/keep.txt')\nshutil.rmtree('CANARY/sub')\n"
     "def square(x):\n    return 0\n"),
    ("rename-chmod-utime-outside", "import os\nos.chmod('CANARY/keep.txt', 0)\n"
     "os.utime('CANARY/keep.txt', (0, 0))\nos.rename('CANARY/keep.txt', 'mine')\n"
     "def square(x):\n    return 0\n"),
    ("modify-package-source", "open('PACKAGE/sandbox_child.py', 'a').write('# pwned')\n"
     "def square(x):\n    return 0\n"),
    ("dir-fd-escape", "import os\nfd = os.open('CANARY', os.O_RDONLY)\n"
     "os.open('escaped', os.O_CREAT | os.O_WRONLY, dir_fd=fd)\ndef square(x):\n    return 0\n"),
    ("subclasses-popen", "P = [c for c in object.__subclasses__()[0].__subclasses__() if 'Popen' in "
     "c.__name__]\nfor c in ().__class__.__base__.__subclasses__():\n    if c.__name__ == '_wrap_close':\n"
     "        c.__init__.__globals__['system']('touch CANARY/subclass')\ndef square(x):\n    return 0\n"),
    ("memfd-unbounded", "import os\nfds = []\nwhile True:\n    fd = os.memfd_create('x')\n"
     "    os.write(fd, b'x' * 2**24)\n    fds.append(fd)\n"),
    ("namespace-and-mount", "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
     "assert libc.unshare(0x10000000 | 0x00020000) != 0\n"
     "assert libc.mount(b'none', b'/sandbox', b'tmpfs', 0, None) != 0\ndef square(x):\n    return 0\n"),
    ("ptrace-and-kill-all", "import ctypes, os, signal\nlibc = ctypes.CDLL(None, use_errno=True)\n"
     "libc.ptrace(16, 1, 0, 0)\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\n"
     "def square(x):\n    return 0\n"),
    ("output-flood", "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"),
    ("reply-flood", "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'\\xff\\xff\\xff\\xff')\n"
     "    except OSError:\n        pass\ndef square(x):\n    return x * x + 1\n"),
    ("deep-recursion", "def square(x):\n    return square(x)\n"),
    ("host-paths", "import os\nstolen = [p for p in ('/home', 'CANARY', '/etc/shadow', '/etc/passwd', "
     "'/var/run', '/sys', '/root/.bashrc') if os.path.exists(p)]\nassert not stolen, stolen\n"
     "def square(x):\n    return 0\n"),
]


# What the audit hook (the second layer) names when it refuses these.
REFUSED_BY_HOOK = {
    "subinterpreter-xx": "import _xxsubinterpreters", "subinterpreter-testcapi": "import _testcapi",
    "subinterpreter-interpreters": "import _interpreters", "ctypes-memmove": "ctypes.memmove",
    "sqlite-outside": "sqlite3.connect", "write-outside": "open(", "delete-outside": "os.remove",
    "os-system-shell": "os.system", "popen-daemon": "subprocess.Popen", "fork-bomb": "os.fork",
    "setsid-survivor": "os.fork", "tcp-socket": "socket", "modify-package-source": "open(",
    "clear-refusals-getframe": "open(", "rename-chmod-utime-outside": "os.chmod",
    "namespace-and-mount": "ctypes",
}


def test_there_are_at_least_thirty_hostile_candidates():
    assert len(ATTACKS) >= 30


@pytest.fixture()
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.setblocking(False)
    yield server
    server.close()


@pytest.mark.parametrize("hook", [True, False], ids=["with-hook", "boundary-only"])
@pytest.mark.parametrize("name, code", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_hostile_candidate_is_contained(canary, listener, name, code, hook):
    code = code.replace("PORT", str(listener.getsockname()[1]))
    result = hostile(canary, code, hook)
    if hook and name in REFUSED_BY_HOOK:
        assert "The sandbox refused" in result.error and REFUSED_BY_HOOK[name] in result.error
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing connected from inside


def test_hook_refusals_are_reported_and_sticky(canary):
    result = hostile(canary, "try:\n    open('CANARY/x', 'w')\nexcept PermissionError:\n    pass\n"
                             "def square(x):\n    return x * x + 1\n", hook=True)
    assert not result.ok and "The sandbox refused: open(" in result.error


def test_disk_is_capped_in_total(canary):
    code = ("n = 0\ntry:\n    while True:\n        open(f'f{n}', 'wb').write(b'x' * 2**20)\n        n += 1\n"
            "except OSError as e:\n    err = str(e)\ndef written():\n    return n, err\n")
    result = run_sandboxed(code, lambda c: c.call("written"), disk_mb=8)
    assert result.ok and result.value[0] <= 8 and "No space left" in result.value[1]


def test_process_count_is_capped():
    code = ("import os, time\nkids = 0\ntry:\n    while kids < 200:\n        if os.fork() == 0:\n"
            "            time.sleep(5)\n            os._exit(0)\n        kids += 1\nexcept OSError:\n"
            "    pass\ndef count():\n    return kids\n")
    result = run_sandboxed(code, lambda c: c.call("count"), processes=8, audit_hook=False)
    assert result.ok and result.value < 8


def test_the_sandbox_sees_only_itself(canary):
    code = ("import os\ndef look(canary):\n    return (os.getcwd(), sorted(os.environ), "
            "[p for p in os.listdir('/proc') if p.isdigit()], os.path.exists(canary), "
            "sorted(os.listdir('/')))\n")
    result = run_sandboxed(code, lambda c: c.call("look", str(canary)))
    cwd, env, pids, seen, top = result.value
    assert cwd == boundary.WORKDIR and "ALDSL_CANARY_SECRET" not in env
    assert len(pids) <= 3 and not seen
    shown = {p.strip("/").split("/")[0] for p in boundary._python_roots()}
    assert set(top) <= {"aldsl", "bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc",
                        "sandbox", "sbin", "usr"} | shown


def test_benign_candidate_returns_values_and_stdout():
    code = ("import numpy as np\nprint('working')\nLIMIT = (1, 2)\n"
            "def total(n):\n    return float(np.arange(n).sum())\n"
            "def echo(v):\n    return v\n")
    value = {"a": (1, 2.5, None), "b": {3, 4}, "c": b"\x00", 5: [float("inf")], "d": 1j}

    def drive(c):
        return c.call("total", 10), c.call("echo", value), c.value("LIMIT"), \
            c.map("total", [(3,), (4,)])

    result = run_sandboxed(code, drive)
    assert result.ok and result.error is None and result.stdout == "working\n"
    assert result.value == (45.0, value, (1, 2), [3.0, 6.0])


def test_candidate_may_use_its_own_folder():
    code = ("import os\nopen('notes.txt', 'w').write('kept')\nos.mkdir('sub')\n"
            "os.rename('notes.txt', 'sub/n.txt')\ndef read():\n    return open('sub/n.txt').read()\n")
    result = run_sandboxed(code, lambda c: c.call("read"))
    assert result.ok and result.value == "kept"


def test_timeout_and_memory_errors_say_what_happened():
    start = time.monotonic()
    looped = run_sandboxed("while True:\n    pass\n", square_driver, timeout=1.5)
    assert time.monotonic() - start < 5.0
    assert not looped.ok and "Timed out" in looped.error and "1.5 s" in looped.error
    big = run_sandboxed("def f():\n    return len(bytearray(8 * 2**30))\n", lambda c: c.call("f"),
                        memory_mb=512)
    assert "Memory limit of 512 MB exceeded" in big.error and "MemoryError" in big.error
    assert 'File "/sandbox/candidate.py", line 2' in big.error or 'candidate.py", line 2' in big.error


def test_syntax_error_and_exit_are_reported():
    syntax = run_sandboxed("def main(:\n    pass\n", square_driver)
    assert not syntax.ok and "SyntaxError" in syntax.error and "candidate.py" in syntax.error
    exited = run_sandboxed("import os\nos._exit(3)\n", square_driver)
    assert not exited.ok and "status 3" in exited.error


def test_driver_errors_become_failures_and_values_stay_data():
    not_data = run_sandboxed("def f():\n    return object()\n", lambda c: c.call("f"))
    assert not not_data.ok and "not plain data" in not_data.error

    def reject(c):
        raise CandidateError("the value was unacceptable")

    assert run_sandboxed("x = 1\n", reject).error == "the value was unacceptable"


def test_run_tests_passes_and_fails_code_against_asserts():
    answer = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```"
    assert run_tests(answer, {"tests": "assert add(2, 3) == 5"}) == 1.0
    assert run_tests(answer, {"tests": "assert add(2, 3) == 6"}) == 0.0
    assert run_tests("def add(a, b):\n    return a - b", {"tests": "assert add(1, 1) == 2"}) == 0.0
    raising = "def f(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n"
    expects = "try:\n    f(-1)\n    assert False\nexcept ValueError:\n    pass\nassert f(2) == 2"
    assert run_tests(raising, {"tests": expects}) == 1.0


def test_forged_code_test_results_score_zero(canary):
    forged = ("import os, json, struct\nd = json.dumps({'ok': True, 'value': 5}).encode()\n"
              "for fd in range(3, 64):\n    try:\n        os.write(fd, struct.pack('>I', len(d)) + d)\n"
              "    except OSError:\n        pass\ndef add(a, b):\n    return 0\n")
    assert run_tests(forged, {"tests": "assert add(2, 3) == 5"}) == 0.0
    result = run_sandboxed(forged, code_tests_driver("assert add(2, 3) == 5"))
    assert not result.ok


def test_unavailable_boundary_refuses_unless_opted_in(monkeypatch):
    monkeypatch.setattr(boundary, "unavailable_reason", lambda: "bwrap is not installed (test)")
    monkeypatch.delenv(boundary.OPT_IN_ENV, raising=False)
    with pytest.raises(SandboxUnavailable, match="bwrap is not installed.*ALDSL_ALLOW_UNSANDBOXED"):
        run_sandboxed("x = 1\n", lambda c: True)
    monkeypatch.setenv(boundary.OPT_IN_ENV, "1")
    result = run_sandboxed("def f():\n    return 2\n", lambda c: c.call("f"))
    assert result.ok and result.value == 2


@pytest.mark.parametrize("text, expected", [
    ("```python\nx = 1\n```", "x = 1\n"),
    ("intro\n```\ny = 2\n```\nmore", "y = 2\n"),
    ("```py\na = 0\n```\n```python\ndef f():\n    pass\n```", "def f():\n    pass\n"),
    ("def f():\n    return 3", "def f():\n    return 3"),
])
def test_extract_python(text, expected):
    assert extract_python(text, defines="f") == expected


def test_run_tests_many_scores_each_answer():
    answers = ["def inc(x):\n    return x + 1\n", "def inc(x):\n    return x\n",
               "import os\nos._exit(0)\n"]
    records = [{"tests": "assert inc(1) == 2"}] * 3
    assert run_tests_many(answers, records) == [1.0, 0.0, 0.0]


def test_the_documented_example_runs(capsys):
    doc = (Path(__file__).resolve().parent.parent / "docs" / "sandbox.md").read_text()
    example = extract_python(doc)
    exec(compile(example, "docs/sandbox.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "True [1, 4, 9] None"
