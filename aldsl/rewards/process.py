"""Process reward model (PRM) from Monte-Carlo step labels, Math-Shepherd style.

``samples`` solutions per train query are split into steps (their non-empty lines). From each
step prefix the generator rolls out ``rollouts`` completions; the step's label is whether any of
them reaches the golden answer (``label = hard``) or the fraction that does (``soft``). The
solution's own continuation counts as one more rollout, and the last step is labelled by the
solution's own outcome. A head on the features of (x, prefix) is fitted by BCE; a candidate's
reward is the minimum of r = logit P(step ok) over its step prefixes, so partial thoughts (the
executor's ``continue`` rounds) get a dense reward too. Held-out metrics: step-label accuracy and
best-of-L selection among the held-out queries' solutions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from aldsl.compiler.specs import Reward
from aldsl.ops.answers import extract
from aldsl.backends import GenRequest
from aldsl.ops.prompter import Prompter
from aldsl.rewards.base import RewardItem, Scored
from aldsl.rewards.features import Features, feature_text
from aldsl.rewards.heads import auc, load_head, save_head
from aldsl.rewards.trained import (PASS, HeadReward, by_query, ensure_artifact, feature_generator, generator_identity, golden_scores,
                      head_config, held_mask, holdout_ids, probe_and_fit, rounded, sample_graded,
                      sampler, selection_metrics, training_records)

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session

MAX_STEPS = 8  # steps labelled per solution (longer ones: the first MAX_STEPS - 1 and the whole)


def step_prefixes(text: str) -> list[str]:
    """The text up to and including each non-empty line (the whole text if it has none)."""
    lines = text.split("\n")
    prefixes = ["\n".join(lines[:i + 1]) for i, line in enumerate(lines) if line.strip()]
    return prefixes or [text]


class ProcessReward(HeadReward):
    """r(x, y) = min over the step prefixes p of y of head(features(x, p))."""

    def step_rewards(self, xs: Sequence[str], candidates: Sequence[str]) -> list[np.ndarray]:
        """r of every step prefix of every candidate, batched."""
        prefixes = [step_prefixes(c) for c in candidates]
        flat = self.head.predict(self.features.embed([feature_text(x, p) for x, ps in zip(xs, prefixes) for p in ps]))
        out, start = [], 0
        for ps in prefixes:
            out.append(flat[start:start + len(ps)])
            start += len(ps)
        return out

    def score(self, items: Sequence[RewardItem]) -> list[Scored]:
        steps = self.step_rewards([i.x for i in items], [i.candidate for i in items])
        return [Scored(float(s.min())) for s in steps]


def build(spec: Reward, session: Session, graph: ProgramGraph) -> ProcessReward:
    records = training_records(spec, session, graph)
    features = Features(spec["features"], session, feature_generator(spec.generator), graph)

    def fit(folder: Path) -> dict[str, Any]:
        solutions, owners, texts, outcome = sample_graded(spec, session, graph, records)
        steps = mc_step_labels(spec, session, graph, records, solutions, outcome)
        x = features.embed([feature_text(owners[s]["x"], prefix) for s, prefix, _ in steps])
        labels = [label for _, _, label in steps]
        held_ids = holdout_ids(records)
        held = held_mask([str(owners[s]["id"]) for s, _, _ in steps], held_ids)
        r_held, head, losses = probe_and_fit(x, labels, held, head_config(spec))
        save_head(head, folder)
        held_labels = np.asarray(labels)[held] >= PASS
        metrics = {"step_accuracy": float(np.mean((r_held >= 0) == held_labels)) if held.any() else float("nan"),
                   "step_auc": auc(r_held, held_labels), "step_positive_rate": float(np.mean(np.asarray(labels) >= PASS))}
        metrics.update(_selection(spec, steps, owners, texts, outcome, held_ids, r_held, held))
        return {"metrics": rounded(metrics), "solutions": len(texts), "steps": len(steps),
                "final_loss": round(losses[-1], 5)}

    identities = [generator_identity(session, spec.generator, graph), features.identity]
    head, meta = ensure_artifact(spec, session, records, identities, fit, load_head)
    return ProcessReward(spec.name, features, head, meta["metrics"])


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


def _selection(spec: Reward, steps: list[tuple[int, str, float]], owners: list[dict[str, Any]],
               texts: list[str], outcome: Sequence[float], held_ids: set[str], r_held: np.ndarray,
               held: np.ndarray) -> dict[str, float]:
    """Best-of-L by min-over-steps r among each held-out query's sampled solutions."""
    solution_r: dict[int, float] = {}
    for (s, _, _), r in zip([steps[i] for i in np.flatnonzero(held)], r_held):
        solution_r[s] = min(solution_r.get(s, np.inf), float(r))
    held_solutions = held_mask([str(o["id"]) for o in owners], held_ids)
    order = np.flatnonzero(held_solutions)
    answers = [extract(spec.answer.kind, t, spec.answer.arg) for t in texts]
    return selection_metrics(by_query(owners, held_solutions, np.array([solution_r[int(i)] for i in order]),
                                      list(outcome), answers))
