"""The prompter P_psi: templates, few-shot demonstrations K_m(x), chat roles and feedback."""

from __future__ import annotations

import random
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Sequence

from aldsl.store.hashing import content_hash
from aldsl.compiler.specs import Prompter as PrompterSpec
from aldsl.compiler.specs import Template
from aldsl.errors import UserError
from aldsl.language.templates import MissingSlot, render

if TYPE_CHECKING:
    from aldsl.backends import Backend
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session


class Prompter:
    """Renders the prompts of one compiled ``prompt`` node spec for a batch of records."""

    def __init__(self, spec: PrompterSpec, session: Session, graph: ProgramGraph, backend: Backend | None):
        self.spec = spec
        self.session = session
        self.graph = graph
        self.backend = backend
        self._pool: list[dict[str, Any]] | None = None

    # ---- templates
    def templates_for(self, records: Sequence[dict[str, Any]]) -> list[Template]:
        """The template of each record: fixed, or chosen per query by a binary reward model."""
        t = self.spec.template
        if isinstance(t, Template):
            return [t] * len(records)
        chooser = self.session.reward(t.reward, self.graph)
        picks = chooser.choose(records)  # type: ignore[attr-defined]
        return [t.among[i] for i in picks]

    def first_prompts(self, records: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
        """Round 1: (prompt without prefill, prefill, template name) per record."""
        out = []
        for record, template in zip(records, self.templates_for(records)):
            values = {**record, "demos": self.demos_text(record, template)}
            body = self._render(template, values)
            if "{demos}" not in template.body and values["demos"]:
                body = values["demos"] + "\n\n" + body
            out.append((self.format(template, body), template.prefill or "", template.name))
        return out

    def feedback_prompt(self, record: dict[str, Any], history: str) -> tuple[str, str]:
        """Rounds t > 1 with a feedback template: (prompt without prefill, prefill)."""
        template = self.spec.followup
        assert isinstance(template, Template), "feedback prompts need a followup template"
        values = {**record, "history": history, "demos": self.demos_text(record, template)}
        return self.format(template, self._render(template, values)), template.prefill or ""

    def format(self, template: Template, body: str) -> str:
        """Apply chat roles (the model's chat template) when the prompter asks for chat."""
        if not self.spec.chat or self.backend is None:
            return (template.system + "\n\n" + body) if template.system else body
        messages = []
        if template.system:
            messages.append({"role": "system", "content": template.system})
        messages.append({"role": "user", "content": body})
        return self.backend.format_chat(messages)

    def _render(self, template: Template, values: dict[str, Any]) -> str:
        try:
            return render(template.body, values)
        except MissingSlot as e:
            fields = sorted(k for k in values if not k.startswith("_"))
            raise UserError(f"template {template.name!r} uses the slot {{{e.args[0]}}}, which this "
                            f"record does not have; available slots: {', '.join('{' + f + '}' for f in fields)}") from None

    # ---- demonstrations K_m(x)
    def pool(self) -> list[dict[str, Any]]:
        if self._pool is None:
            assert self.spec.demos is not None
            self._pool = self.session.split(self.graph, self.spec.demos.pool)
        return self._pool

    def demos_text(self, record: dict[str, Any], template: Template) -> str:
        if not self.spec.shows_demos:
            return ""
        chosen = self.pick_demos(record)
        try:
            return "\n\n".join(render(template.demo or "", d) for d in chosen)
        except MissingSlot as e:
            raise UserError(f"the demo format {template.demo!r} uses {{{e.args[0]}}}, which the demo records "
                            "do not have") from None

    def pick_demos(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        d = self.spec.demos
        assert d is not None
        pool = [r for r in self.pool() if r["id"] != record["id"] or r["x"] != record["x"]]
        k = min(d.k, len(pool))
        if d.pick == "fixed":
            if d.ids:
                by_id = {r["id"]: r for r in pool}
                missing = [i for i in d.ids if str(i) not in by_id]
                if missing:
                    raise UserError(f"demos(ids = ...): no record with id {missing[0]!r} in the demo pool")
                return [by_id[str(i)] for i in d.ids][:k]
            return pool[:k]
        if d.pick == "nearest":
            index = _tfidf(tuple(r["x"] for r in pool))
            return [pool[i] for i in index.nearest(record["x"], k)]
        rng = random.Random(content_hash(d.seed, record["id"], record["x"]))
        return rng.sample(pool, k)


class _TfidfIndex:
    def __init__(self, texts: tuple[str, ...]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        self.matrix = self.vectorizer.fit_transform(texts)

    def nearest(self, text: str, k: int) -> list[int]:
        sims = (self.matrix @ self.vectorizer.transform([text]).T).toarray().ravel()
        order = sorted(range(len(sims)), key=lambda i: (-sims[i], i))
        return order[:k]


@lru_cache(maxsize=16)
def _tfidf(texts: tuple[str, ...]) -> _TfidfIndex:
    return _TfidfIndex(texts)


def history_text(entries: Sequence[tuple[str, float | None, str | None]]) -> str:
    """Earlier thoughts with their rewards (and feedback), best first, for feedback templates."""
    lines = []
    for i, (text, reward, feedback) in enumerate(entries, 1):
        score = "n/a" if reward is None else f"{reward:.4g}"
        lines.append(f"Attempt {i} (score {score}):\n{text.strip()}")
        if feedback:
            lines.append(f"Feedback: {feedback.strip()}")
    return "\n\n".join(lines)
