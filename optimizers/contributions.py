"""What each chosen knob contributed: the optimized values added to the defaults one group at a time.

The groups follow the paper's knobs: psi (the prompter), theta (the weights: a fine-tuning or a
checkpoint, and the fine-tuning's own settings) and L with its selection and decoding (samples,
select, reward, temperature: an L > 1 needs a temperature, so they move together). The path adds psi
first, then theta, then L: a fine-tuning is trained on the trial's prompts (theta and psi coupled),
so theta after psi reuses the checkpoint the search trained instead of fitting one for the default
prompter. Each step is scored on the same dev queries; the last step is the optimized program. The
steps are cumulative, so a contribution is measured given the groups before it (interactions go to
the later group).
"""

from __future__ import annotations

from typing import Any, Sequence

from aldsl.language.check import Checked

GROUPS = {"psi": "prompter (psi)", "theta": "weights (theta)", "L": "samples, selection, decoding (L, tau)"}
THETA_PARAMS = ("finetune", "checkpoint")


def group_of(name: str, checked: Checked) -> str:
    """``psi``, ``theta`` or ``L`` for a searched parameter ``decl.param[.sub]``."""
    decl_name, _, param = name.partition(".")
    decl = checked.decls.get(decl_name)
    kind = decl.kind if decl is not None else ""
    if kind == "prompter":
        return "psi"
    if kind == "finetune" or (kind == "generator" and param.split(".")[0] in THETA_PARAMS):
        return "theta"
    return "L"  # the flow's samples, select, reward, rounds; decoding; the rewards' own settings


def groups(checked: Checked | None, names: Sequence[str]) -> int:
    """How many knob groups the searched parameters ``names`` span (0 without the program's source)."""
    return len({group_of(n, checked) for n in names}) if checked else 0


def steps(defaults: dict[str, Any], values: dict[str, Any], checked: Checked
          ) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``[(group, its changed values, all values after adding it)]`` for each group the optimized values
    change, in path order (the last holds ``values``)."""
    changed = {k: v for k, v in values.items() if defaults.get(k) != v}
    current, out = {**defaults, **{k: v for k, v in values.items() if k not in changed}}, []
    for group in GROUPS:
        part = {k: v for k, v in changed.items() if group_of(k, checked) == group}
        if part:
            current = {**current, **part}
            out.append((group, part, dict(current)))
    return out
