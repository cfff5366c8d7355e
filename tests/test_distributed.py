"""Studies shared by many processes: a real PostgreSQL server started here on 127.0.0.1 (Debian's
``postgresql``, installed by ``make test``), a journal file, and the storage URLs' errors.

Workers (``--worker``) only run trials; of the coordinators exactly one takes the promotion claim,
promotes, checks ``optimized.alp`` and reads the report split."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from aldsl.errors import UserError
from aldsl.optimizers import search
from servers import free_port
from test_optimize import cli, finished, toy

TRIALS = 6


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb") or ""]
    if not found[-1]:
        pytest.fail("PostgreSQL is not installed: apt-get install postgresql (make test does it as root)")
    return Path(found[-1]).parent


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster on 127.0.0.1 (as the postgres user when we are root: the server
    refuses to run as root); yields the URL of its database ``aldsl``."""
    bindir, port = _pg_bin(), free_port()
    root = Path(tempfile.mkdtemp(prefix="aldsl-pg-", dir="/tmp"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log = root / "data", root / "log"

    def pg(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)

    pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "aldsl", "--no-sync")
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o",
       f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=100", "start")
    try:
        import psycopg

        with psycopg.connect(f"postgresql://aldsl@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE aldsl")
        yield f"postgresql://aldsl@127.0.0.1:{port}/aldsl"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def shared(storage: str, study: str, out: Path, *extra: str) -> list[str]:
    return ["--storage", storage, "--study", study, "--quiet", "--out", str(out), *extra]


def wait_all(procs: list[subprocess.Popen[bytes]]) -> list[str]:
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr.decode()[-2000:]
        outs.append(stdout.decode())
    return outs


def load(storage: str, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=search.storage_of(storage))


def trials_of(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    return load(storage, study).get_trials()


def check_one_study(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    trials = trials_of(storage, study)
    done = finished(trials)
    assert len(done) == TRIALS  # the budget exactly: none lost, none run twice
    assert len({t.number for t in done}) == TRIALS
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials)
    return done


def test_two_workers_and_two_coordinators_finish_one_study_with_one_report(postgres: str, tmp_path: Path):
    path = toy(tmp_path, trials=TRIALS)
    slow = {"ALDSL_TEST_SLEEP": "0.1"}
    workers = [cli(str(path), *shared(postgres, "pg", tmp_path / "w", "--worker"), env=slow) for _ in range(2)]
    time.sleep(1.0)
    coordinators = [cli(str(path), *shared(postgres, "pg", tmp_path / f"c{i}"), env=slow) for i in range(2)]
    wait_all(workers)
    said = wait_all(coordinators)
    done = check_one_study(postgres, "pg")
    assert len({t.user_attrs["worker"] for t in done}) >= 2
    reports = [tmp_path / f"c{i}" / "toy" / "report.md" for i in range(2)]
    assert sum(r.exists() for r in reports) == 1  # exactly one coordinator promoted and reported
    assert sum("promotes and reports this study" in s for s in said) == 1
    promoted = load(postgres, "pg").user_attrs["promoted"]
    assert promoted["trial"] in {t.number for t in done}
    # the promoted trial is one of the promote = 2 best by minibatch score (which values those are depends
    # on which process suggested what: a matter of timing with four processes on six trials)
    scores = sorted((t.value for t in done if t.state == optuna.trial.TrialState.COMPLETE), reverse=True)
    assert next(t for t in done if t.number == promoted["trial"]).value >= scores[min(1, len(scores) - 1)]
    assert not (tmp_path / "w" / "toy" / "report.md").exists()


def test_kill_9_of_a_worker_loses_no_completed_trial(postgres: str, tmp_path: Path):
    path = toy(tmp_path, trials=TRIALS)
    url = postgres
    victim = cli(str(path), *shared(postgres, "kill", tmp_path / "w", "--worker"), env={"ALDSL_TEST_SLEEP": "0.3"})
    deadline, before = time.time() + 120, []
    while time.time() < deadline and len(before) < 2:
        time.sleep(0.3)
        try:
            before = finished(trials_of(url, "kill"))
        except KeyError:  # no study yet
            continue
    assert len(before) >= 2, victim.stderr.read().decode() if victim.poll() is not None else "timed out"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    kept = {t.number: (t.params, t.values) for t in finished(trials_of(url, "kill"))}
    assert len(kept) < TRIALS
    coordinator = cli(str(path), *shared(postgres, "kill", tmp_path / "c"))
    assert "optimized" in wait_all([coordinator])[0]
    after = check_one_study(url, "kill")
    assert {t.number: (t.params, t.values) for t in after if t.number in kept} == kept  # kept, not redone
    assert (tmp_path / "c" / "toy" / "report.md").exists()


def test_a_journal_file_is_a_shared_storage(tmp_path: Path):
    path = toy(tmp_path, trials=TRIALS)
    storage = f"journal:///{tmp_path / 'study.log'}"
    procs = [cli(str(path), *shared(storage, "j", tmp_path / "w", "--worker")) for _ in range(2)]
    procs.append(cli(str(path), *shared(storage, "j", tmp_path / "c")))
    wait_all(procs)
    check_one_study(storage, "j")
    assert "promoted" in load(storage, "j").user_attrs
    assert (tmp_path / "c" / "toy" / "report.md").exists()


def test_storage_urls_name_their_driver_and_hide_passwords(monkeypatch: pytest.MonkeyPatch):
    port = free_port()  # nothing listens there
    with pytest.raises(UserError) as info:
        search.open_study(f"mysql://me:s3cret@127.0.0.1:{port}/db", "s", ["maximize"], optuna.samplers.RandomSampler(),
                          optuna.pruners.NopPruner(), "f", "p")
    assert "cannot open the study storage" in str(info.value) and "s3cret" not in str(info.value)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the postgres extra were not installed
    with pytest.raises(UserError, match=r"needs the psycopg driver: pip install 'aldsl\[postgres\]'"):
        search.storage_of("postgresql://me@127.0.0.1/db")
    assert search.redact("postgresql://me:pw@h:5432/db") == "postgresql://me:***@h:5432/db"
