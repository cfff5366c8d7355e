"""The settings of one optimization: the optimize declaration with command-line overrides, and the
job every method runs (the one small contract of :data:`optimizers.run.METHODS`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aldsl.errors import UserError
from aldsl.language.schema import BY_KIND
from aldsl.program import CompiledProgram
from aldsl.runtime.session import Session
from aldsl.optimizers.search import redact

OPTUNA_DEFAULTS = {p.name: p.default for p in BY_KIND["optimize"]["optuna"].params}


@dataclass(frozen=True)
class Settings:
    """The optimize declaration, with command-line overrides applied."""

    method: str
    objective: str
    data: str
    on: str
    report: str
    trials: int
    sampler: str
    pruner: str
    queries: int
    report_queries: int
    minibatch: int
    promote: int
    seed: int
    cost: bool
    storage: str
    study: str
    reward: str | None
    budget_s: float | None = None  # budget = "20m": wall-clock seconds for the whole optimization
    budget_tokens: int | None = None  # budget = "200k tokens": generated tokens of the trials
    space: str = "declared"
    batch: int = 1  # trials asked at once and run together (their generations share the model's batches)

    @staticmethod
    def resolve(compiled: CompiledProgram, folder: Path, trials: int | None, storage: str | None, study: str | None,
                seed: int | None) -> "Settings":
        spec = compiled.graph.graph.get("optimize")
        if not spec:
            raise UserError(f"program {compiled.name!r} has no optimize declaration; add one, e.g.\n"
                            "  optimize search = optuna(objective = acc, on = problems.dev, trials = 20)")
        report = spec["report"]
        if report["split"] == spec["on"]["split"]:
            raise UserError(f"optimize: the report split {report['split']!r} is the split the search scores on; "
                            "report on a held-out split (report = DATA.test)")

        def setting(key: str) -> Any:
            """The declared value, else the schema's default (an oirl declaration has no search settings)."""
            return spec[key] if key in spec else OPTUNA_DEFAULTS[key]

        n = setting("trials") if trials is None else trials
        if spec["method"] == "optuna" and n < 1:
            raise UserError(f"--trials must be at least 1, got {n}")
        for key in ("queries", "report_queries", "minibatch", "promote"):
            if setting(key) < 0:
                raise UserError(f"optimize: {key} must be 0 or more, got {setting(key)}")
        url = storage or setting("storage") or f"sqlite:///{(folder / 'study.db').resolve()}"
        return Settings(method=spec["method"], objective=spec["objective"], data=spec["on"]["data"],
                        on=spec["on"]["split"], report=report["split"], trials=n, sampler=setting("sampler"),
                        pruner=setting("pruner"), queries=setting("queries"), report_queries=setting("report_queries"),
                        minibatch=setting("minibatch"), promote=max(1, setting("promote")),
                        seed=setting("seed") if seed is None else seed, cost=bool(setting("cost")), storage=url,
                        study=study or setting("study") or compiled.name, reward=spec.get("reward"),
                        **_budget(spec.get("budget")), space=spec.get("space", "declared"),
                        batch=setting("batch"))

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "storage": redact(self.storage)}

    def later_queries(self, pool: int, minibatch: int, groups: int) -> tuple[int, int]:
        """Queries of the phases after the search, for budget estimates: (those the winner's and the best
        trials' programs run: promotion on the pool beyond the minibatch, one partial program per knob group
        but the winner's own, the winner's report; the defaults' report queries)."""
        report = self.report_queries or pool
        return self.promote * max(0, pool - minibatch) + max(0, groups - 1) * pool + report, report


@dataclass
class Job:
    """What a method gets: the program, its settings, the session, the output folder, the values the
    user pinned (``--set``), and how the work is shared (``workers`` processes; ``worker``: a process
    that runs trials and leaves promotion and the report to a coordinator, see ``optimizers.claim``)."""

    compiled: CompiledProgram
    settings: Settings
    session: Session
    folder: Path
    pinned: dict[str, Any]
    workers: int = 1
    worker: bool = False


_UNITS = {"s": 1, "m": 60, "h": 3600}
_SCALE = {"": 1, "k": 1_000, "m": 1_000_000}


def _budget(text: str | None) -> dict[str, Any]:
    """``"20m"`` / ``"90s"`` / ``"1.5h"`` -> budget_s; ``"200k tokens"`` -> budget_tokens."""
    if text is None:
        return {}
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*tokens?\s*", text)
    if m:
        return {"budget_tokens": int(float(m.group(1)) * _SCALE[m.group(2).lower()])}
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh])\s*", text)
    if m and float(m.group(1)) > 0:
        return {"budget_s": float(m.group(1)) * _UNITS[m.group(2)]}
    raise UserError(f"optimize: budget = {text!r} is neither a time nor a token count; write e.g. budget = \"20m\", "
                    "\"90s\", \"1h\" (wall clock) or budget = \"200k tokens\"")
