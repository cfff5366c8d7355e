"""The promotion claim: exactly one process promotes, checks ``optimized.alp`` and reads the report split.

Any number of ``aldsl optimize`` processes can run the trials of one study; those started without
``--worker`` are coordinators, and after the last trial each tries to take the claim. The claim is a
study named ``<study>:promotion:<n>`` in the same storage: creating a study is atomic in every Optuna
storage (a unique name in the RDB schema, the journal's lock), so of two coordinators only one can
create it; the other is told who holds it and stops. The holder beats a timestamp into the claim's
user attributes while it works and marks it ``done`` (or ``failed``) at the end; a later coordinator
(a rerun) takes claim ``n + 1`` once the previous one is finished, or stale: no beat for
``search.GRACE_S`` seconds, or its process known dead on this machine.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.study import StudyDirection

from aldsl.optimizers import search

SEPARATOR = ":promotion:"


@dataclass
class Claim:
    """A held claim: beats until :meth:`release`."""

    storage: optuna.storages.BaseStorage
    study_id: int
    name: str
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._beat = threading.Thread(target=self._beating, daemon=True, name="aldsl-claim")
        self._beat.start()

    def _beating(self) -> None:
        while not self._stop.wait(search.HEARTBEAT_S):
            try:
                self.storage.set_study_user_attr(self.study_id, "beat", time.time())
            except Exception:  # a storage hiccup: the next beat tries again, GRACE_S allows several misses
                pass

    def release(self, ok: bool) -> None:
        """Stop beating; mark the claim done (or failed, so the next coordinator may take over)."""
        self._stop.set()
        self._beat.join(5)
        self.storage.set_study_user_attr(self.study_id, "state", "done" if ok else "failed")


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def take(study: optuna.Study) -> Claim | str:
    """The claim on ``study``'s promotion, or (a string) who holds it now."""
    storage = study._storage  # the study's own storage object: no second connection pool
    n = 0
    while True:
        name = f"{study.study_name}{SEPARATOR}{n}"
        try:
            claim_id = storage.get_study_id_from_name(name)
        except KeyError:
            try:
                claim_id = storage.create_new_study([StudyDirection.MAXIMIZE], name)
            except DuplicatedStudyError:
                continue  # another coordinator created it first: read it on the next pass
            storage.set_study_user_attr(claim_id, "holder", holder_name())
            storage.set_study_user_attr(claim_id, "beat", time.time())
            return Claim(storage, claim_id, name)
        attrs = storage.get_study_user_attrs(claim_id)
        if attrs.get("state") in ("done", "failed") or _stale(attrs):
            n += 1
            continue
        return str(attrs.get("holder", "a process that is starting"))


def _stale(attrs: dict[str, object]) -> bool:
    beat = attrs.get("beat")
    if isinstance(beat, (int, float)) and time.time() - beat > search.GRACE_S:
        return True
    host, _, pid = str(attrs.get("holder", "")).rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and not search.alive(int(pid))
