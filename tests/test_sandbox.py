"""The sandbox against hostile candidates: each is stopped or refused; nothing outside changes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aldsl.evaluators.code_tests import run_tests
from aldsl.isolation.sandbox import extract_python, run_sandboxed

HARNESS = "def run(candidate, args):\n    return candidate.main(**args)\n"


def sandboxed(body: str, timeout: float = 5.0, **args):
    code = "import os, socket, subprocess\n\ndef main(**args):\n" + "".join(
        f"    {line}\n" for line in body.strip().splitlines())
    return run_sandboxed(code, HARNESS, timeout=timeout, memory_mb=512, args=args)


def test_benign_candidate_returns_value_and_stdout():
    result = sandboxed("print('working')\nimport numpy as np\n"
                       "return float(np.arange(args['n']).sum())", n=10)
    assert result.ok and result.error is None
    assert result.value == 45.0
    assert result.stdout == "working\n"


def test_candidate_may_use_its_own_folder():
    result = sandboxed("open('notes.txt', 'w').write('kept')\nos.mkdir('sub')\n"
                       "os.rename('notes.txt', 'sub/n.txt')\nreturn open('sub/n.txt').read()")
    assert result.ok and result.value == "kept"


def test_infinite_loop_is_killed_at_the_timeout():
    start = time.monotonic()
    result = sandboxed("while True:\n    pass", timeout=1.5)
    assert time.monotonic() - start < 5.0
    assert not result.ok and "Timed out" in result.error and "1.5 s" in result.error


def test_huge_allocation_hits_the_memory_limit():
    result = sandboxed("data = bytearray(8 * 2**30)\nreturn len(data)")
    assert not result.ok
    assert "Memory limit of 512 MB exceeded" in result.error and "MemoryError" in result.error
    assert 'File "candidate.py", line' in result.error  # the candidate's own traceback line


def test_writing_outside_the_folder_is_refused(tmp_path: Path):
    target = tmp_path / "escaped.txt"
    result = sandboxed(f"open({str(target)!r}, 'w').write('x')")
    assert not result.ok and "refused" in result.error and str(target) in result.error
    assert not target.exists()


def test_refusal_is_sticky_even_when_caught(tmp_path: Path):
    target = tmp_path / "escaped.txt"
    result = sandboxed(f"try:\n    open({str(target)!r}, 'a')\nexcept PermissionError:\n"
                       "    pass\nreturn 'carried on'")
    assert not result.ok and "refused" in result.error
    assert not target.exists()


def test_opening_a_socket_is_refused():
    result = sandboxed("s = socket.socket()\ns.connect(('127.0.0.1', 9))")
    assert not result.ok and "socket" in result.error


def test_deleting_a_file_outside_is_refused(tmp_path: Path):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    result = sandboxed(f"os.remove({str(victim)!r})")
    assert not result.ok and "os.remove" in result.error
    assert victim.read_text() == "precious"


def test_chmod_rename_and_mkdir_outside_are_refused(tmp_path: Path):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    for body in (f"os.chmod({str(victim)!r}, 0)", f"os.rename({str(victim)!r}, 'mine.txt')",
                 f"os.mkdir({str(tmp_path / 'new')!r})", "os.chdir('/')"):
        result = sandboxed(body)
        assert not result.ok and "refused" in result.error, body
    assert victim.read_text() == "precious" and not (tmp_path / "new").exists()
    assert victim.stat().st_mode & 0o600


def test_spawning_processes_is_refused(tmp_path: Path):
    marker = tmp_path / "spawned"
    for body in (f"subprocess.run(['touch', {str(marker)!r}])",
                 f"os.system('touch {marker}')", "os.fork()", "import _posixsubprocess"):
        result = sandboxed(body)
        assert not result.ok and "refused" in result.error, body
    assert not marker.exists()


def test_loading_native_libraries_is_refused():
    result = sandboxed("import ctypes\nctypes.CDLL('libc.so.6')")
    assert not result.ok and "ctypes.dlopen" in result.error


def test_syntax_error_and_exit_are_reported():
    syntax = run_sandboxed("def main(:\n    pass\n", HARNESS)
    assert not syntax.ok and "SyntaxError" in syntax.error and "candidate.py" in syntax.error
    exited = sandboxed("os._exit(3)")
    assert not exited.ok and "status 3" in exited.error


def test_the_folder_is_deleted_afterwards():
    result = sandboxed("return os.getcwd()")
    assert result.ok and result.value.startswith("/") and not Path(result.value).exists()


def test_run_tests_passes_and_fails_code_against_asserts():
    answer = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```"
    assert run_tests(answer, {"tests": "assert add(2, 3) == 5"}) == 1.0
    assert run_tests(answer, {"tests": "assert add(2, 3) == 6"}) == 0.0
    assert run_tests("def add(a, b):\n    return a - b", {"tests": "assert add(1, 1) == 2"}) == 0.0


@pytest.mark.parametrize("text, expected", [
    ("```python\nx = 1\n```", "x = 1\n"),
    ("intro\n```\ny = 2\n```\nmore", "y = 2\n"),
    ("```py\na = 0\n```\n```python\ndef f():\n    pass\n```", "def f():\n    pass\n"),
    ("def f():\n    return 3", "def f():\n    return 3"),
])
def test_extract_python(text, expected):
    assert extract_python(text, defines="f") == expected
