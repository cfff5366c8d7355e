"""The ``aldsl`` command line. User errors print one paragraph and exit 2, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from aldsl import __version__
from aldsl.compiler import render
from aldsl.errors import UserError

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    COMMANDS[fn.__name__.removeprefix("cmd_").replace("_", "-")] = fn
    return fn


def _compile(path: str, sets: list[str] | None = None):
    from aldsl.program import compile

    values = parse_sets(sets or [])
    return compile(Path(path), values)


def parse_sets(sets: list[str]) -> dict[str, object]:
    """``--set name=value`` pairs; values are read as JSON when they parse, else as strings."""
    import json

    out: dict[str, object] = {}
    for s in sets:
        name, eq, raw = s.partition("=")
        if not eq or not name:
            raise UserError(f"--set {s!r}: write --set NAME=VALUE, e.g. --set main.samples=4")
        try:
            out[name.strip()] = json.loads(raw)
        except ValueError:
            out[name.strip()] = None if raw == "none" else raw
    return out


def _print_warnings(compiled) -> None:
    for w in compiled.checked.warnings if compiled.checked else []:
        pos = f":{w.pos.line}:{w.pos.col}" if w.pos else ""
        err_console.print(f"[yellow]{compiled.checked.program.path}{pos}: warning: {w.message}[/]")


@command
def cmd_check(args: argparse.Namespace) -> int:
    compiled = _compile(args.file)
    _print_warnings(compiled)
    g = compiled.graph
    console.print(f"[green]ok[/] {args.file}: program {compiled.name!r}, {g.number_of_nodes()} nodes, "
                  f"{len(compiled.search_space)} search parameters")
    _print_auto(compiled)
    return 0


def _print_auto(compiled: Any) -> None:
    """space = auto: the proposed space and why."""
    reasons = compiled.graph.graph.get("auto_space") or []
    if reasons:
        console.print("space = auto proposed:\n" + "\n".join(f"  - {r}" for r in reasons))
        console.print("  searched: " + ", ".join(f"{p.name} {p.describe()}" for p in compiled.search_space))


@command
def cmd_compile(args: argparse.Namespace) -> int:
    from aldsl.store.paths import writable_dir

    writable_dir(Path(args.out), "the --out folder")
    compiled = _compile(args.file, args.set)
    _print_warnings(compiled)
    path = compiled.save(args.out)
    console.print(f"wrote {path}")
    dot = path.with_name(f"{compiled.name}.dot")
    dot.write_text(render.to_dot(compiled.program_graph, compiled.search_space), encoding="utf-8")
    console.print(f"wrote {dot}")
    if args.png:
        png = render.to_png(compiled.program_graph, path.with_name(f"{compiled.name}.png"), compiled.search_space)
        console.print(f"wrote {png}")
    return 0


@command
def cmd_graph(args: argparse.Namespace) -> int:
    if args.file.endswith(".json"):
        from aldsl.program import load_graph

        compiled = load_graph(args.file)
    else:
        compiled = _compile(args.file, args.set)
        _print_warnings(compiled)
    pg = compiled.program_graph
    table = Table(title=f"{compiled.name}: {pg.g.number_of_nodes()} nodes, {pg.g.number_of_edges()} edges, "
                        f"T = {pg.rounds}")
    for col in ("node", "op", "detail", "inputs"):
        table.add_column(col)
    for node, op, detail in render.summary(pg):
        table.add_row(node, op, detail, ", ".join(sorted(pg.g.predecessors(node))))
    console.print(table)
    space = Table(title="search space" if len(compiled.search_space) else "search space: empty (the program is concrete)")
    for col in ("parameter", "kind", "domain", "default", "sets"):
        space.add_column(col)
    for p in compiled.search_space:
        space.add_row(p.name, p.kind, p.describe(), "none" if p.default is None else str(p.default), ", ".join(p.targets))
    console.print(space)
    _print_auto(compiled)
    return 0


@command
def cmd_run(args: argparse.Namespace) -> int:
    from aldsl.progress import Reporter
    from aldsl.runtime.session import Session

    compiled = _compile(args.file, args.set)
    _print_warnings(compiled)
    from aldsl.isolation.external import failure_tally

    session = Session(reporter=Reporter(enabled=not args.quiet), use_cache=not args.no_cache)
    failure_tally(reset=True)
    if args.input:
        if args.split:
            raise UserError("--input FILE runs on that file's records; drop --split (or drop --input)")
        from aldsl.store.data import read_inputs

        result = compiled.run(read_inputs(args.input, compiled.input_data), limit=args.limit, session=session)
    else:
        split = args.split or "dev"
        if split == "test":
            err_console.print("note: test is the held-out split; read it once for a final figure, never to choose "
                              "between variants (use dev for that)", markup=False)
        result = compiled.run(split=split, limit=args.limit, session=session)
    if args.out:
        console.print(f"wrote {result.to_jsonl(args.out, traces=not args.input)}")
    elif args.input:
        print_answers(result)
    print_run(result)
    calls, failed, first = failure_tally()
    if failed:
        err_console.print(f"warning: {failed} of {calls} external reward/evaluator calls failed and scored their "
                          f"on_error value; the first error:\n{first}", markup=False)
    return 0


def print_answers(result, shown: int = 20) -> None:
    """The first answers of a run on new inputs (``--out`` writes them all)."""
    table = Table(title=f"answers ({min(shown, len(result.traces))} of {len(result.traces)}; --out FILE writes all)")
    for col in ("id", "input", "answer"):
        table.add_column(col, overflow="fold")
    for t in result.traces[:shown]:
        table.add_row(t.id, t.x[:80], t.answer[:120])
    console.print(table)


def print_run(result) -> None:
    """The final table of a run: evaluator scores and cost."""
    if result.scores:
        table = Table(title=f"{result.program} on {result.split} ({len(result.traces)} queries)")
        table.add_column("evaluator")
        table.add_column("mean score", justify="right")
        for name, score in result.scores.items():
            table.add_row(name, f"{score:.3f}")
        console.print(table)
    else:
        console.print(f"{result.program} on {result.split} ({len(result.traces)} queries): not scored (the records "
                      "have no target field)", markup=False)
    s = result.stats
    tokens = s.get("generated_tokens", 0)
    console.print(f"generated {tokens} new tokens ({tokens / max(s['seconds'], 1e-9):.0f} tok/s), "
                  f"{result.tokens_per_query():.1f} tokens per query; cache {s.get('hits', 0)} hits, "
                  f"{s.get('misses', 0)} misses; {s['seconds']:.1f} s")


@command
def cmd_optimize(args: argparse.Namespace) -> int:
    from aldsl.optimizers.run import optimize

    from aldsl.progress import Reporter
    from aldsl.runtime.session import Session

    if args.track:  # before the search, not after it
        from aldsl.errors import require_extra

        require_extra("mlflow", "track", "--track mlflow")
    compiled = _compile(args.file, args.set)
    _print_warnings(compiled)
    pinned = {name: compiled.values[name] for name in parse_sets(args.set or []) if name in compiled.values}
    session = Session(reporter=Reporter(enabled=not args.quiet))
    if args.plan:
        from aldsl.optimizers.plan import plan
        from aldsl.optimizers.settings import Settings

        settings = Settings.resolve(compiled, Path(args.out) / compiled.name, args.trials, args.storage, args.study,
                                    args.seed)
        for line in plan(compiled, settings, session).lines:
            console.print(line, markup=False)
        return 0
    result = optimize(compiled, session=session, out_dir=args.out, trials=args.trials, storage=args.storage,
                      study=args.study, seed=args.seed, workers=args.workers, worker=args.worker,
                      pinned=pinned)
    if args.worker or result.promoted_by:
        done = sum(t["state"] in ("COMPLETE", "PRUNED") for t in result.trials)
        console.print(f"worker: ran {result.ran} trial(s); study {result.study!r} has {done} of {result.budget} "
                      f"finished ({result.storage})", markup=False)
        if result.promoted_by:
            console.print(f"{result.promoted_by} promotes and reports this study; this process stops here",
                          markup=False)
        return 0
    print_optimize(result)
    if args.track:
        console.print(f"tracked in MLflow: {track_mlflow(result, args.track_uri)}", markup=False)
    return 0


def track_mlflow(result, uri: str | None) -> str:
    """Log the study's trials (one nested run each) and the report of an optimization to MLflow."""
    import optuna

    from aldsl.optimizers.search import storage_of
    from aldsl.tracking import MLflowTracker

    tracker = MLflowTracker(result.program, uri, run_name=f"{result.program} ({result.method})")
    if result.storage and result.study:
        study = optuna.load_study(study_name=result.study, storage=storage_of(result.storage))
        for trial in study.get_trials(deepcopy=False):
            tracker(study, trial)
    metrics = {f"{r.label}.{r.split}.{result.objective}": r.evaluation.mean for r in result.rows}
    metrics.update({f"{r.label}.{r.split}.tokens_per_query": r.evaluation.tokens_per_query for r in result.rows})
    files = [p for p in (result.report, result.optimized, result.folder / "report.json") if p is not None]
    run_id = tracker.finish(metrics, result.values, [Path(p) for p in [*files, *result.plots]])
    return f"{tracker.uri} (run {run_id})"


def print_optimize(result) -> None:
    """The final table of an optimization: each variant on dev and on the held-out split."""
    table = Table(title=f"{result.program}: {result.method}, objective {result.objective}")
    for col in ("program", "split", "queries", result.objective, "95% CI", "tokens/query"):
        table.add_column(col, justify="left" if col in ("program", "split") else "right")
    for r in result.rows:
        e = r.evaluation
        table.add_row(r.label, r.split, str(len(e.scores)), f"{e.mean:.3f}", f"[{r.ci[0]:.3f}, {r.ci[1]:.3f}]",
                      f"{e.tokens_per_query:.1f}")
    console.print(table)
    d = result.extra.get("difference")
    if d:
        console.print(f"{d['label']}: {d['mean']:+.3f} (95% CI [{d['lo']:+.3f}, {d['hi']:+.3f}])")
    from aldsl.optimizers.report import verdict

    said = verdict(result)
    if said:
        console.print(said.replace("**", ""), markup=False)
    for note in result.notes:
        if note.startswith("Budget:"):
            console.print(note, markup=False)
    changed = {k: v for k, v in result.values.items() if result.defaults.get(k) != v}
    if changed:
        console.print("changed: " + ", ".join(f"{k} = {v}" for k, v in changed.items()), markup=False)
    steps = result.extra.get("contributions")
    if steps:
        console.print(f"contributions on {steps[0]['split']}: " +
                      ", ".join(f"{s['label']} {s['delta']:+.3f}" for s in steps), markup=False)
    for note in result.notes:
        if note.startswith("Warning"):
            err_console.print(f"[yellow]{note}[/]")
    pictures = [p for p in result.plots if Path(p).name == "contributions.png"]
    console.print(f"wrote {', '.join(str(p) for p in [result.optimized, result.report, *pictures])} "
                  f"({result.seconds:.0f} s)", markup=False)


@command
def cmd_reward(args: argparse.Namespace) -> int:
    """``aldsl reward fit FILE``: train (or load) the program's reward models and print held-out metrics."""
    from aldsl.progress import Reporter
    from aldsl.program import fit_program_rewards
    from aldsl.runtime.session import Session

    compiled = _compile(args.file, args.set)
    _print_warnings(compiled)
    fitted = fit_program_rewards(compiled, Session(reporter=Reporter(enabled=not args.quiet)), args.reward)
    for name, (family, metrics) in fitted.items():
        table = Table(title=f"reward {name} ({family}): held-out metrics on its train split")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for metric, value in metrics.items():
            table.add_row(metric, f"{value:.4g}")
        console.print(table)
    return 0


@command
def cmd_cache(args: argparse.Namespace) -> int:
    """``aldsl cache info``: sizes per kind; ``aldsl cache prune``: remove by age or to a size."""
    from aldsl.store import usage
    from aldsl.store.paths import cache_dir

    root = cache_dir()
    if args.action == "info":
        table = Table(title=f"cache {root}")
        for col in ("kind", "items", "size", "oldest change"):
            table.add_column(col, justify="left" if col == "kind" else "right")
        kinds: dict[str, list] = {}
        for u in usage.units(root):
            kinds.setdefault(u.kind, []).append(u)
        for kind, found in sorted(kinds.items()):
            oldest = time.strftime("%Y-%m-%d", time.localtime(found[0].mtime))
            table.add_row(kind, str(len(found)), usage.human(sum(u.size for u in found)), oldest)
        console.print(table)
        console.print(f"total {usage.human(sum(u.size for found in kinds.values() for u in found))}", markup=False)
        return 0
    if args.older_than is None and args.max_size is None and not args.unreferenced:
        raise UserError("aldsl cache prune: say what to remove: --older-than 30d, --max-size 5G and/or "
                        "--unreferenced BUILD_DIR")
    removed = []
    if args.unreferenced:
        removed = usage.unreferenced(root, [Path(d) for d in args.unreferenced])
        usage.remove(removed, args.dry_run)
    if args.older_than is not None or args.max_size is not None:
        removed += usage.prune(root, None if args.older_than is None else usage.parse_age(args.older_than),
                               None if args.max_size is None else usage.parse_size(args.max_size),
                               generations=args.generations, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for u in removed:
        console.print(f"{verb} {u.path} ({usage.human(u.size)})", markup=False)
    console.print(f"{verb} {len(removed)} item(s), {usage.human(sum(u.size for u in removed))}; each is rebuilt "
                  "when a program needs it again", markup=False)
    return 0


@command
def cmd_init(args: argparse.Namespace) -> int:
    from aldsl.templates import write_starter

    folder = write_starter(Path(args.dir), args.model)
    console.print(f"wrote a starter project to {folder}; next: cd {folder} && aldsl check program.alp && "
                  "aldsl run program.alp --limit 4 (README.md says more)", markup=False)
    return 0


@command
def cmd_doc(args: argparse.Namespace) -> int:
    from aldsl.language.docs import reference

    print(reference(args.kind))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aldsl", description="Compile, run and optimize LLM programs (.alp).")
    parser.add_argument("--version", action="version", version=f"aldsl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("check", help="parse and check a program")
    p.add_argument("file")
    p = sub.add_parser("compile", help="compile a program to its execution graph (JSON, DOT, PNG)")
    p.add_argument("file")
    p.add_argument("--out", default="build", help="output folder (default: build/)")
    p.add_argument("--png", action="store_true", help="also render the graph to PNG")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="pin a search parameter")
    p = sub.add_parser("graph", help="print the graph's nodes and the search space")
    p.add_argument("file", help="a .alp program or a compiled .graph.json")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="pin a search parameter")
    p = sub.add_parser("run", help="run a program on a split of its data and print evaluator scores")
    p.add_argument("file")
    p.add_argument("--split", help="which split of the program's data to run on (default: dev; test is held out)")
    p.add_argument("--input", metavar="FILE", help="run on the records of this .jsonl or .csv file instead (read "
                                                   "with the data's field names; scored where they have the target)")
    p.add_argument("--limit", type=int, help="only the first N queries")
    p.add_argument("--out", help="write per-query traces as JSON lines to this file (with --input: id, x, answer, "
                                 "y and scores per record)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="pin a search parameter")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the generation cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p = sub.add_parser("optimize", help="search the program's declared space; write build/<program>/ with "
                                        "optimized.alp and a report")
    p.add_argument("file")
    p.add_argument("--trials", type=int, help="trial budget (default: the program's; a resumed study runs only "
                                              "the missing trials)")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///OUT/<program>/study.db)")
    p.add_argument("--study", help="study name (default: the program name)")
    p.add_argument("--out", default="build", help="output folder (default: build/)")
    p.add_argument("--seed", type=int, help="seed of the sampler and minibatches (default: the program's)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="pin a search parameter (not searched)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes on this machine sharing the study: this one and N-1 --worker children")
    p.add_argument("--worker", action="store_true",
                   help="join the study (--storage, --study) as a worker: run trials until the budget is handed "
                        "out, then exit; one process without --worker promotes and reports (docs/scaling.md)")
    p.add_argument("--search-only", dest="worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--track", choices=["mlflow"], help="log every trial and the report to an experiment tracker "
                                                       "(needs aldsl[track]); default store: ./mlruns")
    p.add_argument("--track-uri", help="the tracking store (default: ./mlruns: sqlite:///mlruns/mlflow.db)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--plan", action="store_true", help="measure throughput on a few queries and print the estimated "
                   "cost of a trial, the fits and the whole run; search nothing")
    p = sub.add_parser("reward", help="trained reward models: `aldsl reward fit FILE` trains them, prints metrics")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("fit", help="train (or reuse) the program's reward models and print held-out metrics")
    p.add_argument("file")
    p.add_argument("--reward", action="append", metavar="NAME", help="only this reward (repeatable)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="pin a search parameter")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p = sub.add_parser("cache", help="the cache folder ($ALDSL_CACHE): `aldsl cache info`, `aldsl cache prune`")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("info", help="sizes per kind (models, artifacts, generations, crashes)")
    p = actions.add_parser("prune", help="remove what changed longest ago: by age and/or down to a size")
    p.add_argument("--older-than", metavar="AGE", help="remove items unchanged for longer than AGE (30d, 12h)")
    p.add_argument("--max-size", metavar="SIZE", help="then remove the oldest until the cache is at most SIZE (5G)")
    p.add_argument("--generations", action="store_true", help="the generation cache may go too (whole)")
    p.add_argument("--unreferenced", action="append", metavar="BUILD_DIR",
                   help="remove fine-tuned checkpoints that no report.json under BUILD_DIR (the --out folder of "
                        "aldsl optimize) references (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p = sub.add_parser("init", help="write a starter project (a program, data, a README of next steps) to DIR")
    p.add_argument("dir")
    p.add_argument("--model", default="smollm2-135m", help="the model the program uses (default: the embedded "
                                                           "smollm2-135m); a folder, a .gguf file or a model id")
    p = sub.add_parser("doc", help="print the language reference (all constructors and parameters)")
    p.add_argument("kind", nargs="?", help="only this declaration kind (data, generator, reward, ...)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        err_console.print(e.render(), markup=False)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted; work finished so far is saved (rerun to resume)")
        return 130
    except Exception as e:  # an aldsl bug: say so, keep the traceback in a private file
        where = _crash_report(traceback.format_exc())
        err_console.print(f"internal error: {type(e).__name__}: {e}\nThis is a bug in aldsl; {where}. Please "
                          "report it with the program that triggered it.", markup=False)
        return 1


def _crash_report(text: str) -> str:
    """Write a traceback to a new private file under the cache folder; says where it went."""
    from aldsl.store.paths import cache_dir, private_file

    try:
        fd, path = private_file(cache_dir() / "crashes", "crash-", ".log")
    except OSError:
        try:  # mkstemp: O_EXCL, mode 0600, safe in a shared temporary folder
            fd, name = tempfile.mkstemp(prefix="aldsl-crash-", suffix=".log")
            path = Path(name)
        except OSError:
            return "the traceback could not be saved:\n" + text
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return f"the traceback is in {path}"


if __name__ == "__main__":
    sys.exit(main())
