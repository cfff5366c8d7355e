"""Process reward model (PRM) from Monte-Carlo step labels, Math-Shepherd style.

``samples`` solutions per train query are split into steps (their non-empty lines). From each
step prefix the generator rolls out ``rollouts`` completions; the step's label is whether any of
them reaches the golden answer (``label = hard``) or the fraction that does (``soft``). The
solution's own continuation counts as one more rollout, and the last step is labelled by the
solution's own outcome. The reward is fitted by BCE at every step (an LM backbone reads r at the
last token of each step of one sequence; a head scores the features of each (x, prefix)); a
candidate's reward is the minimum of r = logit P(step ok) over its steps, so partial thoughts (the
executor's ``continue`` rounds) get a dense reward too. Held-out metrics: step-label accuracy and
best-of-L selection among the held-out queries' solutions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from aldsl.backends import GenRequest
from aldsl.compiler.specs import Reward
from aldsl.ops.answers import extract
from aldsl.ops.prompter import Prompter
from aldsl.rewards.heads import auc
from aldsl.rewards.trained import (PASS, Learner, Scorer, by_query, golden_scores, held_mask,
                                   holdout_ids, rounded, sample_graded, sampler, selection_metrics, step_prefixes,
                                   training_records)

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session

MAX_STEPS = 8  # steps labelled per solution (longer ones: the first MAX_STEPS - 1 and the whole)


def build(spec: Reward, session: Session, graph: ProgramGraph) -> Scorer:
    records = training_records(spec, session, graph)
    learner = Learner(spec, session, graph)

    def fit(folder: Path) -> dict[str, Any]:
        solutions, owners, texts, outcome = sample_graded(spec, session, graph, records)
        steps = mc_step_labels(spec, session, graph, records, solutions, outcome)
        labels: list[list[float]] = [[] for _ in texts]
        for s, _, label in steps:
            labels[s].append(label)
        held_ids = holdout_ids(records)
        held = held_mask([str(o["id"]) for o in owners], held_ids)
        r_held, info = learner.points(folder, [(o["x"], t) for o, t in zip(owners, texts)], labels, held)
        flat_r = np.concatenate(r_held) if r_held else np.zeros(0)
        held_labels = np.array([v for i in np.flatnonzero(held) for v in labels[i]]) >= PASS
        all_labels = np.array([v for ls in labels for v in ls])
        metrics = {"step_accuracy": float(np.mean((flat_r >= 0) == held_labels)) if len(flat_r) else float("nan"),
                   "step_auc": auc(flat_r, held_labels), "step_positive_rate": float(np.mean(all_labels >= PASS))}
        answers = [extract(spec.answer.kind, t, spec.answer.arg) for t in texts]
        solution_r = np.array([r.min() for r in r_held])
        metrics.update(selection_metrics(by_query(owners, held, solution_r, list(outcome), answers)))
        return {"metrics": rounded(metrics), "solutions": len(texts), "steps": len(steps), **info}

    return learner.ensure(records, fit, steps=True)


def mc_step_labels(spec: Reward, session: Session, graph: ProgramGraph, records: Sequence[dict[str, Any]],
                   solutions: Sequence[Sequence[str]], outcome: Sequence[float]) -> list[tuple[int, str, float]]:
    """(solution index, step prefix, label) for the labelled steps of every solution, from rollouts."""
    assert spec.prompter is not None
    tau = sampler(spec).with_decoding(temperature=spec["temperature"])
    backend = session.backend(tau, graph)
    bases = [base for base, _, _ in Prompter(spec.prompter, session, graph, backend).first_prompts(records)]
    M = spec["rollouts"]
    steps: list[tuple[int, str, float]] = []
    requests: list[GenRequest] = []
    owners: list[tuple[int, int]] = []  # (index into steps, solution index) of each rollout request
    s = 0
    for q, texts in enumerate(solutions):
        for text in texts:
            prefixes = step_prefixes(text)
            if len(prefixes) > MAX_STEPS:
                prefixes = prefixes[:MAX_STEPS - 1] + [prefixes[-1]]
            for k, prefix in enumerate(prefixes):
                last = k == len(prefixes) - 1
                steps.append((s, prefix, outcome[s]))
                if not last:  # the last step is labelled by the solution's own outcome
                    requests.append(GenRequest(bases[q] + prefix + "\n", tuple(range(M))))
                    owners.append((len(steps) - 1, s))
            s += 1
    flat_records = [r for r, texts in zip(records, solutions) for _ in texts]
    if requests:
        with session.reporter.task(f"{spec.name}: rolling out {len(requests)} step prefixes x {M}",
                                   total=len(requests)) as advance:
            outputs = backend.generate(requests, tau.decoding, progress=lambda n, tok: advance(n, tokens=tok))
        prefix_of = {i: steps[i][1] for i, _ in owners}
        texts = [prefix_of[i] + "\n" + c.text for (i, _), row in zip(owners, outputs) for c in row]
        recs = [flat_records[sol] for (_, sol), row in zip(owners, outputs) for _ in row]
        correct = np.asarray(golden_scores(session, spec.evaluator, spec.answer, texts, recs, graph)) >= PASS
        for j, (i, sol) in enumerate(owners):
            hits = correct[j * M:(j + 1) * M].tolist() + [outcome[sol] >= PASS]  # the solution is one more rollout
            label = float(any(hits)) if spec["label"] == "hard" else float(np.mean(hits))
            steps[i] = (sol, steps[i][1], label)
    return steps
