"""The result of an optimization and its report: ``report.md`` (tables with bootstrap confidence
intervals and token cost), ``report.json`` (everything, per query) and PNG plots."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from aldsl.optimizers.evaluation import Evaluation

if TYPE_CHECKING:
    import optuna

RESAMPLES = 2000


def bootstrap_ci(scores: Sequence[float], seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over queries (seeded; scipy.stats.bootstrap)."""
    from scipy.stats import bootstrap

    if not scores:
        return (0.0, 0.0)
    x = np.asarray(scores, dtype=float)
    if len(x) < 2 or np.all(x == x[0]):  # no spread: every resample has the same mean
        return float(x.mean()), float(x.mean())
    ci = bootstrap((x,), np.mean, confidence_level=level, n_resamples=RESAMPLES, method="percentile",
                   random_state=np.random.default_rng(seed)).confidence_interval
    return float(ci.low), float(ci.high)


def verdict(result: "OptimizeResult") -> str | None:
    """The result in words: whether the defaults won, and whether the held-out difference is clear."""
    d = result.extra.get("difference")
    if d is None:
        return None
    changed = [k for k, v in result.values.items() if result.defaults.get(k) != v]
    if not changed:
        return (f"**The defaults won**: no trial beat the program as written on {result.settings.get('on', 'dev')}, "
                "so the optimized program is the defaults. More trials, a larger minibatch or a wider space "
                "(space = auto) may find better.")
    where = f"on the held-out {d['split']} split ({d['n']} queries)"
    if d["lo"] > 0:
        return f"**The optimized program is better than the defaults** {where}: {d['mean']:+.3f}, the 95% CI is above zero."
    if d["hi"] < 0:
        return (f"**The optimized program is worse than the defaults** {where}: {d['mean']:+.3f}, the 95% CI is below "
                "zero (the dev minibatch misled the search; use more queries).")
    return (f"**No clear difference** {where}: {d['mean']:+.3f}, and the 95% CI [{d['lo']:+.3f}, {d['hi']:+.3f}] "
            "includes zero.")


def paired_difference(a: Evaluation, b: Evaluation, seed: int) -> tuple[float, float, float]:
    """Mean of b - a over the same queries, with its paired bootstrap 95% interval."""
    by_id = dict(zip(a.ids, a.scores))
    diffs = [s - by_id[i] for i, s in zip(b.ids, b.scores) if i in by_id]
    lo, hi = bootstrap_ci(diffs, seed)
    return (float(np.mean(diffs)) if diffs else 0.0), lo, hi


@dataclass
class Row:
    """One line of the result table: a program variant on a split."""

    label: str
    split: str
    evaluation: Evaluation
    ci: tuple[float, float]

    @staticmethod
    def of(label: str, split: str, evaluation: Evaluation, seed: int) -> "Row":
        return Row(label, split, evaluation, bootstrap_ci(evaluation.scores, seed))

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "split": self.split, "ci95": list(self.ci), **self.evaluation.to_json()}


@dataclass
class OptimizeResult:
    """What ``optimize`` did and where it wrote it."""

    program: str
    method: str
    objective: str
    folder: Path
    seed: int
    rows: list[Row] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    optimized: Path | None = None
    report: Path | None = None
    study: str | None = None
    storage: str | None = None
    budget: int = 0
    ran: int = 0
    promoted_by: str | None = None  # a coordinator that found the promotion claim held: the holder
    trials: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def row(self, label: str, split: str) -> Row:
        for r in self.rows:
            if r.label == label and r.split == split:
                return r
        raise KeyError(f"no row {label!r} on {split!r}")

    def score(self, label: str, split: str) -> float:
        return self.row(label, split).evaluation.mean

    def to_json(self) -> dict[str, Any]:
        return {"program": self.program, "method": self.method, "objective": self.objective, "seed": self.seed,
                "folder": str(self.folder), "optimized": str(self.optimized) if self.optimized else None,
                "values": self.values, "defaults": self.defaults, "study": self.study, "storage": self.storage,
                "budget": self.budget, "ran_here": self.ran, "settings": self.settings, "notes": self.notes,
                "rows": [r.to_json() for r in self.rows], "trials": self.trials, "extra": self.extra,
                "artifacts": self.artifacts, "plots": self.plots, "seconds": self.seconds}


# ---------------------------------------------------------------- report.md / report.json
def write_report(result: OptimizeResult, study: optuna.Study | None = None, length_param: str | None = None) -> Path:
    """Write plots, ``report.json`` and ``report.md`` into ``result.folder``; returns report.md."""
    folder = result.folder
    folder.mkdir(parents=True, exist_ok=True)
    if study is not None:
        result.plots = _search_plots(result, study, length_param)
    elif result.method == "oirl":
        result.plots = [p for p in [_oirl_plot(result)] if p]
    _atomic_write(folder / "report.json", json.dumps(result.to_json(), indent=1, default=str))
    path = folder / "report.md"
    _atomic_write(path, markdown(result))
    result.report = path
    return path


def markdown(result: OptimizeResult) -> str:
    s = result.settings
    out = [f"# {result.program}: optimization report", ""]
    out.append(f"Method **{result.method}**, objective `{result.objective}`, seed {result.seed}. " +
               " ".join(result.notes))
    out += ["", "## Result", "", *result_table(result), ""]
    if "difference" in result.extra:
        d = result.extra["difference"]
        out.append(f"{d['label']}: {d['mean']:+.3f} (95% CI [{d['lo']:+.3f}, {d['hi']:+.3f}], paired bootstrap "
                   f"over the {d['n']} {d['split']} queries).")
        out += ["", verdict(result) or "", ""]
    changed = {k: v for k, v in result.values.items() if result.defaults.get(k) != v}
    if result.values:
        out += ["## Values", "", "| parameter | default | optimized |", "|---|---|---|"]
        out += [f"| `{k}` | {_v(result.defaults.get(k))} | {'**' + _v(v) + '**' if k in changed else _v(v)} |"
                for k, v in result.values.items()]
        out.append("")
    if result.extra.get("contributions"):
        out += contributions_table(result)
    if result.trials:
        out += _trials_table(result)
    if result.extra.get("pareto"):
        out += ["## Pareto front (score against generated tokens per query, minibatch)", "",
                "| trial | score | tokens/query |", "|---|---|---|"]
        out += [f"| {p['number']} | {p['score']:.3f} | {p['tokens']:.1f} |" for p in result.extra["pareto"]]
        out.append("")
    if result.extra.get("binary_metrics"):
        out += ["## Binary reward model (Prompt-OIRL)", ""]
        out += [f"- {k}: {_v(v)}" for k, v in result.extra["binary_metrics"].items()]
        out.append("")
    if result.plots:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in result.plots] + [""]
        complete = sum(t["state"] == "COMPLETE" for t in result.trials)
        if any(Path(p).name == "importances.png" for p in result.plots):
            out += [f"Parameter importances are fANOVA estimates from {complete} complete trials"
                    + (": with so few trials they are rough, and a parameter the sampler rarely varied can look "
                       "unimportant. Read them as hints, not measurements." if complete < 30 else "."), ""]
    out += ["## Protocol", ""]
    out += [f"- {line}" for line in result.extra.get("protocol", [])]
    if result.optimized:
        out.append(f"- `{result.optimized.name}` pins every searched value; run it with "
                   f"`aldsl run {result.optimized}` or `aldsl.load_optimized({str(result.folder)!r})`.")
    if result.artifacts:
        out.append(f"- artifacts shipped in `artifacts/`: {', '.join(result.artifacts)}")
    out += ["", f"Settings: `{json.dumps(s, default=str)}`", ""]
    return "\n".join(out)


def result_table(result: OptimizeResult) -> list[str]:
    lines = [f"| program | split | queries | {result.objective} | 95% CI | tokens/query |", "|---|---|---|---|---|---|"]
    for r in result.rows:
        e = r.evaluation
        lines.append(f"| {r.label} | {r.split} | {len(e.scores)} | {e.mean:.3f} | [{r.ci[0]:.3f}, {r.ci[1]:.3f}] | "
                     f"{e.tokens_per_query:.1f} |")
    return lines


def contributions_table(result: OptimizeResult) -> list[str]:
    """The knobs' contributions on dev: the defaults, then each changed group added in turn."""
    steps = result.extra["contributions"]
    split = steps[0]["split"]
    defaults = next((r.evaluation.mean for r in result.rows if r.label == "defaults" and r.split == split), None)
    out = [f"## What each knob contributed ({split}, {steps[0]['n']} queries)", "",
           "The optimized values added to the defaults one group at a time (psi, then theta, then L with its "
           "selection and decoding); each row is scored on the same queries, so a change is measured given the "
           "rows above it.", "", f"| step | values | {result.objective} | change |", "|---|---|---|---|"]
    if defaults is not None:
        out.append(f"| defaults | | {defaults:.3f} | |")
    for step in steps:
        values = ", ".join(f"`{k} = {_v(v)}`" for k, v in step["changed"].items())
        out.append(f"| + {step['label']} | {values} | {step['score']:.3f} | {step['delta']:+.3f} |")
    out.append("")
    return out


def _trials_table(result: OptimizeResult) -> list[str]:
    names = list(result.values) or sorted({k for t in result.trials for k in t.get("values", {})})
    out = ["## Trials", "", f"| # | state | minibatch | full {result.settings.get('on', 'dev')} | tokens/query | " +
           " | ".join(f"`{n}`" for n in names) + " |", "|---|---|---|---|---|" + "---|" * len(names)]
    for t in result.trials:
        full = f"{t['full']:.3f}" if t.get("full") is not None else ""
        score = f"{t['score']:.3f}" if t.get("score") is not None else ""
        tokens = f"{t['tokens']:.1f}" if t.get("tokens") is not None else ""
        values = " | ".join(_v(t.get("values", {}).get(n)) for n in names)
        best = " (best)" if t.get("best") else ""
        out.append(f"| {t['number']}{best} | {t['state']} | {score} | {full} | {tokens} | {values} |")
    out.append("")
    return out


def _v(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _search_plots(result: OptimizeResult, study: optuna.Study, length_param: str | None) -> list[str]:
    paths = [_history(result), _importances(result, study)]
    if length_param and any(length_param in t.get("values", {}) for t in result.trials):
        paths.append(_score_against(result, length_param, "score_vs_L.png", "L (samples per prompt)"))
    if result.extra.get("pareto"):
        paths.append(_pareto(result))
    if result.extra.get("contributions") and result.rows:
        paths.append(_contributions_plot(result))
    return [str(p) for p in paths if p is not None]


def _history(result: OptimizeResult) -> Path | None:
    trials = [t for t in result.trials if t.get("score") is not None]
    if not trials:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    done = [t for t in trials if t["state"] == "COMPLETE"]
    pruned = [t for t in trials if t["state"] == "PRUNED"]
    ax.scatter([t["number"] for t in done], [t["score"] for t in done], label="trial (minibatch)", color="C0")
    if pruned:
        ax.scatter([t["number"] for t in pruned], [t["score"] for t in pruned], marker="x", color="grey",
                   label="pruned (score when stopped)")
    best, xs, ys = float("-inf"), [], []
    for t in sorted(done, key=lambda t: t["number"]):
        best = max(best, t["score"])
        xs.append(t["number"])
        ys.append(best)
    ax.step(xs, ys, where="post", color="C1", label="running best")
    full = [t for t in trials if t.get("full") is not None]
    if full:
        ax.scatter([t["number"] for t in full], [t["full"] for t in full], marker="*", s=160, color="C3",
                   label=f"promoted (full {result.settings.get('on', 'dev')})")
    ax.set_xlabel("trial")
    ax.set_ylabel(result.objective)
    ax.set_title(f"{result.program}: optimization history")
    ax.legend(fontsize=8)
    return _save(fig, result.folder / "history.png")


def _importances(result: OptimizeResult, study: optuna.Study) -> Path | None:
    """Optuna's own importance plot (fANOVA), for the first objective."""
    from optuna.visualization.matplotlib import plot_param_importances

    plt = _pyplot()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ax = plot_param_importances(study, target=lambda t: t.values[0], target_name=result.objective)
    except (RuntimeError, ValueError) as e:
        result.notes.append(f"(No parameter importances: {e})")
        return None
    if not ax.patches:  # no parameter to rank
        plt.close(ax.figure)
        return None
    ax.set_title(f"{result.program}: parameter importances (fANOVA)")
    return _save(ax.figure, result.folder / "importances.png")


def _score_against(result: OptimizeResult, param: str, name: str, label: str) -> Path | None:
    points = [(t["values"][param], t["score"]) for t in result.trials
              if t["state"] == "COMPLETE" and param in t.get("values", {})]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([p[0] for p in points], [p[1] for p in points], alpha=0.6, label="trials (minibatch)")
    levels = sorted({p[0] for p in points})
    means = [np.mean([s for v, s in points if v == x]) for x in levels]
    ax.plot(levels, means, color="C1", marker="o", label="mean per value")
    ax.set_xlabel(label)
    ax.set_ylabel(result.objective)
    ax.set_title(f"{result.program}: {result.objective} against {param}")
    ax.legend(fontsize=8)
    return _save(fig, result.folder / name)


def _pareto(result: OptimizeResult) -> Path | None:
    done = [t for t in result.trials if t["state"] == "COMPLETE"]
    front = result.extra["pareto"]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([t["tokens"] for t in done], [t["score"] for t in done], alpha=0.5, label="trials")
    front = sorted(front, key=lambda p: p["tokens"])
    ax.plot([p["tokens"] for p in front], [p["score"] for p in front], color="C3", marker="o", label="Pareto front")
    ax.set_xlabel("generated tokens per query")
    ax.set_ylabel(result.objective)
    ax.set_title(f"{result.program}: score against cost (minibatch)")
    ax.legend(fontsize=8)
    return _save(fig, result.folder / "pareto.png")


def _contributions_plot(result: OptimizeResult) -> Path:
    """Held-out defaults against optimized (with their CIs), beside the dev path from the defaults to the
    optimized program, one group of knobs at a time."""
    plt = _pyplot()
    grey, gain, loss = "#9e9e9e", "#2e7d32", "#c62828"
    fig, (held, path) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1, 2]})
    report = result.settings.get("report", "test")
    rows = [r for r in result.rows if r.split == report]
    means = [r.evaluation.mean for r in rows]
    errors = np.array([[r.evaluation.mean - r.ci[0], r.ci[1] - r.evaluation.mean] for r in rows]).T
    held.bar([r.label for r in rows], means, yerr=errors, capsize=4, color=[grey, gain][:len(rows)])
    for i, (m, r) in enumerate(zip(means, rows)):
        held.text(i + 0.08, m, f"{m:.3f}", ha="left", va="bottom")
    held.set_ylim(0, max([r.ci[1] for r in rows] + [0.05]) * 1.15)
    held.set_ylabel(f"{result.objective} (95% CI)")
    held.set_title(f"held out: {report}, {len(rows[0].evaluation.scores) if rows else 0} queries", fontsize=10)
    steps = result.extra["contributions"]
    split = steps[0]["split"]
    start = next(r.evaluation.mean for r in result.rows if r.label == "defaults" and r.split == split)
    labels, bottoms, heights, colors = ["defaults"], [0.0], [start], [grey]
    level = start
    for step in steps:
        labels.append("+ " + step["label"].replace(" (", "\n("))
        bottoms.append(min(level, step["score"]))
        heights.append(abs(step["delta"]))
        colors.append(gain if step["delta"] > 0 else loss if step["delta"] < 0 else grey)
        level = step["score"]
    path.bar(range(len(labels)), heights, bottom=bottoms, color=colors)
    for i, step in enumerate(steps, start=1):
        if step["delta"] == 0:  # no bar to see: a line at the level
            path.hlines(bottoms[i], i - 0.4, i + 0.4, color=grey, linewidth=2)
        path.text(i, bottoms[i] + heights[i], f"{step['delta']:+.3f}", ha="center", va="bottom")
    path.set_ylim(0, max(b + h for b, h in zip(bottoms, heights)) * 1.15 + 0.01)
    path.set_xticks(range(len(labels)), labels, fontsize=8)
    path.set_ylabel(f"{result.objective} on {split}")
    path.set_title(f"what each chosen knob added ({split}, {steps[0]['n']} queries)", fontsize=10)
    fig.suptitle(f"{result.program}: defaults against optimized")
    return _save(fig, result.folder / "contributions.png")


def _oirl_plot(result: OptimizeResult) -> str | None:
    rows = [r for r in result.rows if r.split == result.settings.get("on")]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.5))
    labels = [r.label for r in rows][::-1]
    means = [r.evaluation.mean for r in rows][::-1]
    errors = np.array([[r.evaluation.mean - r.ci[0], r.ci[1] - r.evaluation.mean] for r in rows][::-1]).T
    ax.barh(labels, means, xerr=errors, color="C0", capsize=3)
    ax.set_xlabel(f"{result.objective} on {result.settings.get('on')} (95% CI)")
    ax.set_title(f"{result.program}: prompts against the per-query choice")
    return str(_save(fig, result.folder / "prompts.png"))


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path
