"""The default backend: a Hugging Face causal LM driven by our own batched sampling loop.

Why not ``model.generate``: the L samples of a prompt share one prefill (the prompt's KV
cache is computed once and copied to one row per sample), prompts share the prefill of the
prefixes they have in common, every sample draws from its own random stream seeded by (seed,
prompt, sample index) so it never depends on what else is in the batch, and rows that finish
leave the batch.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from aldsl.backends.base import (
    CAPABILITIES,
    Arrivals,
    BackendError,
    Completion,
    Decoding,
    GenCalls,
    ManyCalls,
    ManyFinished,
    ModelNotFound,
    ModelSpec,
    OutOfMemory,
    Progress,
)
from aldsl.backends.chat import format_chat
from aldsl.backends.registry import (
    ResolvedModel,
    checkpoint_dir,
    model_identity,
    quiet_loading,
    resolve_model,
)
from aldsl.backends.torch_utils import autocast_dtype

log = logging.getLogger(__name__)

CPU_BATCH_TOKENS = 32768  # rows x (prompt + max_tokens) per batch on CPU (measured: larger is no faster)
NUCLEUS_CANDIDATES = 256  # top-p looks at this many best tokens first; a full sort only if they fall short
COMPACT_FRACTION = 8  # drop finished rows from the batch once they are 1/8 of it
PAD_LIMIT = 1.5  # prompts prefilled together: the longest (+ max_tokens) at most this many times the shortest
SHARE_MIN_TOKENS = 32  # a prompt prefix is prefilled once for all prompts that share it when that saves this many


def choose_tokens(logits: torch.Tensor, decoding: Decoding, uniforms: torch.Tensor | None) -> torch.Tensor:
    """Pick one token per row: argmax at temperature 0, else inverse-CDF sampling with ``uniforms``.

    Each row's choice depends only on that row's logits and uniform, so a sample does not
    change with batch composition. Top-k and top-p are applied like Hugging Face's warpers.
    """
    if decoding.temperature <= 0:
        return logits.argmax(-1)
    assert uniforms is not None
    scores = logits.float() / decoding.temperature
    vocab = scores.shape[-1]
    top_k = decoding.top_k if 0 < decoding.top_k < vocab else vocab
    if decoding.top_p >= 1.0:
        if top_k == vocab:
            return _inverse_cdf(torch.softmax(scores, -1), uniforms)
        values, index = scores.topk(top_k)
        return index.gather(-1, _inverse_cdf(torch.softmax(values, -1), uniforms)[:, None]).squeeze(-1)
    if top_k < vocab:
        values, index = scores.topk(top_k)
        return index.gather(-1, _nucleus(values, values.logsumexp(-1), decoding.top_p, uniforms)[:, None]).squeeze(-1)
    # Nucleus over the whole vocabulary: the best candidates nearly always hold top_p of the mass.
    lse = scores.logsumexp(-1)
    values, index = scores.topk(min(NUCLEUS_CANDIDATES, vocab))
    chosen = index.gather(-1, _nucleus(values, lse, decoding.top_p, uniforms)[:, None]).squeeze(-1)
    short = ((values - lse[:, None]).exp().sum(-1) < decoding.top_p).nonzero().squeeze(-1)
    if short.numel():
        values, index = scores[short].sort(-1, descending=True)
        picked = _nucleus(values, lse[short], decoding.top_p, uniforms[short])
        chosen[short] = index.gather(-1, picked[:, None]).squeeze(-1)
    return chosen


def _choose_rows(logits: torch.Tensor, decodings: list[Decoding], uniforms: torch.Tensor | None) -> torch.Tensor:
    """:func:`choose_tokens` for rows that may each have their own decoding (one call per decoding)."""
    first = decodings[0]
    if all(d == first for d in decodings):
        return choose_tokens(logits, first, uniforms)
    chosen = torch.empty(len(decodings), dtype=torch.long, device=logits.device)
    groups: dict[Decoding, list[int]] = {}
    for i, d in enumerate(decodings):
        groups.setdefault(d, []).append(i)
    for d, rows in groups.items():
        index = torch.tensor(rows, device=logits.device)
        chosen[index] = choose_tokens(logits[index], d, None if uniforms is None else uniforms[index])
    return chosen


def _nucleus(sorted_scores: torch.Tensor, lse: torch.Tensor, top_p: float, uniforms: torch.Tensor) -> torch.Tensor:
    """Position sampled from the smallest prefix of descending scores holding ``top_p`` of the mass."""
    probs = (sorted_scores - lse[:, None]).exp()
    before = probs.cumsum(-1) - probs
    return _inverse_cdf(probs.masked_fill(before >= top_p, 0.0), uniforms)


def _inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Index drawn from unnormalised non-negative ``weights`` (rows) by inverse CDF of ``uniforms``."""
    cdf = weights.cumsum(-1)
    target = (uniforms.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
    index = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    overshoot = index >= weights.shape[-1]  # rounding put the target at the very top: take the mode
    return torch.where(overshoot, weights.argmax(-1), index)


@dataclass
class _Unit:
    """One prompt of one call in a batch and the sample indices drawn from it (one batch row each)."""

    prompt: str
    ids: list[int]
    samples: list[int]
    call: int = 0  # which (requests, decoding) of a generate_many call it belongs to


def _too_long(shortest: _Unit, unit: _Unit, max_tokens: int) -> bool:
    return len(unit.ids) + max_tokens > PAD_LIMIT * (len(shortest.ids) + max_tokens)


@dataclass
class _Shared:
    """A run of prompt tokens ``[start, end)`` that several prompts share, prefilled once on top of ``parent``
    (an earlier node's index, -1 for none)."""

    parent: int
    start: int
    end: int
    prompt: int  # a prompt that holds the run


def _prefix_plan(seqs: list[list[int]], min_saved: int = SHARE_MIN_TOKENS) -> tuple[list[_Shared], list[tuple[int, int]]]:
    """The prefix tree of distinct token sequences, cut to what is worth a pass of its own.

    Returns the shared runs (a parent always before its children) and, for each sequence, the run its
    remaining tokens extend and where they start (at least one token is always left, for the last
    logits). A run is shared only when it saves ``min_saved`` prefill tokens; shorter runs are recomputed
    by each sequence that needs them, which costs less than the extra forward pass."""
    nodes: list[_Shared] = []
    leaves: list[tuple[int, int]] = [(-1, 0)] * len(seqs)

    def split(group: list[int], start: int, parent: int) -> None:  # group: lexicographically sorted
        if len(group) == 1:
            leaves[group[0]] = (parent, start)
            return
        common = len(os.path.commonprefix([seqs[group[0]], seqs[group[-1]]]))  # the group's (it is sorted)
        end = min(common, min(len(seqs[g]) for g in group) - 1)
        if end > start and (len(group) - 1) * (end - start) >= min_saved:
            nodes.append(_Shared(parent, start, end, group[0]))
            parent, start = len(nodes) - 1, end
        if end < common:  # the shortest prompt begins every other one: its last token is a leaf of its own
            shortest = min(group, key=lambda g: len(seqs[g]))
            leaves[shortest] = (parent, start)
            split([g for g in group if g != shortest], start, parent)
            return
        runs: list[list[int]] = []
        for g in group:
            if runs and seqs[runs[-1][0]][end] == seqs[g][end]:
                runs[-1].append(g)
            else:
                runs.append([g])
        for run in runs:
            split(run, start, parent)

    split(sorted(range(len(seqs)), key=seqs.__getitem__), 0, -1)
    return nodes, leaves


def _static_cache_fits(config: object) -> bool:
    """Whether every layer of ``config``'s model caches plain full-length keys and values (no sliding
    window or recurrent state), so that its prefill caches can be padded and joined in a StaticCache."""
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer

    try:
        layers = StaticCache(config=config, max_cache_len=8).layers
    except (TypeError, ValueError, AttributeError):
        return False
    return bool(layers) and all(type(layer) is StaticLayer for layer in layers)


def _rows(batch: list[_Unit]) -> int:
    return sum(len(u.samples) for u in batch)


def _halve(batch: list[_Unit]) -> list[list[_Unit]]:
    """Split a batch into two with half the rows each (a prompt's samples may be split)."""
    flat = [(u, s) for u in batch for s in u.samples]
    halves: list[list[_Unit]] = []
    for part in (flat[: len(flat) // 2], flat[len(flat) // 2 :]):
        units: list[_Unit] = []
        for unit, sample in part:
            if units and units[-1].prompt == unit.prompt and units[-1].call == unit.call:
                units[-1].samples.append(sample)
            else:
                units.append(_Unit(unit.prompt, unit.ids, [sample], unit.call))
        halves.append(units)
    return halves


def _is_oom(error: BaseException) -> bool:
    oom_type = getattr(torch, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(error, oom_type):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class TransformersBackend(ManyCalls):
    """A causal LM from transformers, on CUDA when present else CPU, in bf16 where the device computes it
    natively else fp32 (:func:`pick_dtype`)."""

    capabilities = CAPABILITIES["transformers"]

    def __init__(self, spec: ModelSpec) -> None:
        from transformers import AutoTokenizer

        self.spec = spec
        self.resolved: ResolvedModel = resolve_model(spec.name)
        self.device = pick_device(spec.device)
        self.dtype: torch.dtype = pick_dtype(spec.dtype, self.device)
        # Samples differ between dtypes: a non-fp32 model has its own cache entries.
        suffix = "" if self.dtype == torch.float32 else "+" + str(self.dtype).removeprefix("torch.")
        self.identity = model_identity(self.resolved, spec.checkpoint) + suffix
        tokenizer_dir = self.resolved.path
        if spec.checkpoint is not None and (checkpoint_dir(spec.checkpoint) / "tokenizer_config.json").is_file():
            tokenizer_dir = checkpoint_dir(spec.checkpoint)
        with quiet_loading():
            self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
            self.model = _load_model(self.resolved, spec.checkpoint, self.dtype).to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.eos_token_ids: frozenset[int] = frozenset(i for i in eos_ids if i is not None)
        pad = self.tokenizer.pad_token_id
        self.pad_token_id: int = pad if pad is not None else min(self.eos_token_ids, default=0)
        self.max_batch_tokens: int = spec.max_batch_tokens or self._default_batch_tokens()
        self._row_cap: int | None = None  # learned from out-of-memory errors
        forward = inspect.signature(self.model.forward).parameters
        self._last_logits_only = {"logits_to_keep": 1} if "logits_to_keep" in forward else {}
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"  # renamed in transformers 5
        self._static = _static_cache_fits(self.model.config)

    # ---------------------------------------------------------------- generation
    def generate_many(self, calls: GenCalls, progress: Progress | None = None,
                      finished: ManyFinished | None = None) -> list[list[list[Completion]]]:
        """Several generate calls, each with its own decoding, in shared batches (rows of different
        decodings side by side); result ``[c]`` is what ``generate`` gives for ``calls[c]`` (``generate``
        is the one-call case).
        ``finished(c, items)`` as samples of call ``c`` are done."""
        for _, decoding in calls:
            decoding.check()
        arrivals = [Arrivals(requests, decoding.greedy) for requests, decoding in calls]
        units: list[_Unit] = []
        for c, arrival in enumerate(arrivals):
            prompts = list(arrival.wanted)
            units += [_Unit(p, t, list(arrival.wanted[p]), c) for p, t in zip(prompts, self._tokenize(prompts))]
        decodings = [decoding for _, decoding in calls]
        step = None if progress is None else (lambda n_tokens: progress(0, n_tokens))  # tokens as they come
        for results, _ in self._run_batches(units, decodings, step):
            by_call: dict[int, list[tuple[str, int, Completion]]] = {}
            for (c, prompt, sample), completion in results.items():
                by_call.setdefault(c, []).append((prompt, sample, completion))
            complete = 0
            for c, items in by_call.items():
                complete += arrivals[c].arrive(items)
                if finished is not None:
                    finished(c, items)
            if progress is not None:
                progress(complete, 0)
        return [arrival.results() for arrival in arrivals]

    def _run_batches(
        self, units: list[_Unit], decodings: list[Decoding], step: Callable[[int], None] | None = None
    ) -> Iterator[tuple[dict[tuple[int, str, int], Completion], int]]:
        """Decode packed batches; on out-of-memory halve the batch, remember the limit, retry."""
        queue = deque(self._pack(units, decodings))
        while queue:
            batch = queue.popleft()
            rows = _rows(batch)
            if self._row_cap is not None and rows > self._row_cap:
                queue.extendleft(reversed(_halve(batch)))
                continue
            try:
                result = self._decode_batch(batch, decodings, step)
            except OutOfMemory as error:
                if rows == 1:
                    raise BackendError(
                        f"One sequence of {len(batch[0].ids)} prompt tokens + {decodings[batch[0].call].max_tokens} "
                        "new tokens does not fit in memory. Lower max_tokens, shorten the prompt or use a bigger device."
                    ) from error
                result = None  # leave the except block first: the error's traceback holds the batch's tensors
            if result is None:
                self._row_cap = rows // 2
                log.warning("batch of %d rows ran out of memory; retrying with %d rows", rows, rows // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                queue.extendleft(reversed(_halve(batch)))
                continue
            yield result

    def _pack(self, units: list[_Unit], decodings: list[Decoding]) -> list[list[_Unit]]:
        """Sort prompts by length and pack rows so rows x (longest prompt + max_tokens) fits the budget."""
        batches: list[list[_Unit]] = []
        batch: list[_Unit] = []
        longest = max(d.max_tokens for d in decodings)  # a batch decodes until its longest row is done
        for unit in sorted(units, key=lambda u: (len(u.ids), u.call)):
            samples = list(unit.samples)
            capacity = max(1, self.max_batch_tokens // (len(unit.ids) + longest))
            if not self._static and batch and _too_long(batch[0], unit, longest):
                batches.append(batch)  # padding the batch's shortest rows this far costs more than a new batch
                batch = []
            while samples:
                room = capacity - _rows(batch)
                if room <= 0:
                    batches.append(batch)
                    batch = []
                    continue
                batch.append(_Unit(unit.prompt, unit.ids, samples[:room], unit.call))
                samples = samples[room:]
        if batch:
            batches.append(batch)
        return batches

    def _decode_batch(self, batch: list[_Unit], decodings: list[Decoding], step: Callable[[int], None] | None = None
                      ) -> tuple[dict[tuple[int, str, int], Completion], int]:
        rows = _rows(batch)
        if self.spec.max_batch_rows is not None and rows > self.spec.max_batch_rows:
            raise OutOfMemory(f"{rows} rows exceed max_batch_rows={self.spec.max_batch_rows}")
        try:
            with torch.inference_mode():
                return self._sample(batch, decodings, step)
        except RuntimeError as error:
            if _is_oom(error):
                raise OutOfMemory(str(error)) from error
            raise

    def _sample(self, batch: list[_Unit], decodings: list[Decoding], on_step: Callable[[int], None] | None = None
                ) -> tuple[dict[tuple[int, str, int], Completion], int]:
        """Prefill each prompt once, fan out to one row per sample, decode until every row finishes
        (each row with its own call's decoding); ``on_step(k)`` after each decoding step that added k
        tokens (progress)."""
        device = self.device
        row_keys = [(u.call, u.prompt, s) for u in batch for s in u.samples]
        row_decoding = [decodings[c] for c, _, _ in row_keys]
        max_tokens = max(d.max_tokens for d in row_decoding)
        n_rows = len(row_keys)
        cache, logits, mask, next_pos, unit_rows = self._prefill(batch, max_tokens)
        expand = [row for row, u in zip(unit_rows, batch) for _ in u.samples]  # one row per sample
        if expand != list(range(len(logits))):
            index = torch.tensor(expand, device=device)
            cache.reorder_cache(index)
            logits, mask, next_pos = logits[index], mask[index], next_pos[index]
        uniforms = None
        if any(d.temperature > 0 for d in row_decoding):  # greedy rows draw nothing: zeros stand in
            streams = [np.random.default_rng(d.sample_seed(p, s)).random(max_tokens) if d.temperature > 0
                       else np.zeros(max_tokens) for d, (_, p, s) in zip(row_decoding, row_keys)]
            uniforms = torch.from_numpy(np.stack(streams)).to(device)
        tokens: list[list[int]] = [[] for _ in row_keys]
        finish: list[str | None] = [None] * n_rows
        present = list(range(n_rows))  # which row each batch position holds
        windows = [4 * max((len(s) for s in d.stop), default=0) + 2 for d in row_decoding]
        for step in range(max_tokens):
            step_uniforms = None if uniforms is None else uniforms[present, step]
            chosen = _choose_rows(logits, [row_decoding[r] for r in present], step_uniforms)
            check: list[int] = []
            added = 0
            for row, token in zip(present, chosen.tolist()):
                if finish[row] is not None:
                    continue
                tokens[row].append(token)
                added += 1
                if token in self.eos_token_ids:
                    finish[row] = "eos"
                elif len(tokens[row]) == row_decoding[row].max_tokens:
                    finish[row] = "length"
                if row_decoding[row].stop and finish[row] != "eos":
                    check.append(row)
            if check:
                tails = self.tokenizer.batch_decode([tokens[r][-windows[r]:] for r in check], skip_special_tokens=True)
                for row, tail in zip(check, tails):
                    stop = row_decoding[row].stop
                    if any(s in tail for s in stop) and self._stop_at(tokens[row], row_decoding[row]) is not None:
                        finish[row] = "stop"
            if on_step is not None:
                on_step(added)
            live = [i for i, row in enumerate(present) if finish[row] is None]
            if not live:
                break
            if len(present) - len(live) >= max(1, len(present) // COMPACT_FRACTION):
                keep = torch.tensor(live, device=device)
                cache.reorder_cache(keep)
                chosen, mask, next_pos = chosen[keep], mask[keep], next_pos[keep]
                present = [present[i] for i in live]
            mask = torch.cat([mask, mask.new_ones((len(present), 1))], dim=-1)
            out = self.model(
                input_ids=chosen[:, None],
                attention_mask=mask,
                position_ids=next_pos[:, None],
                use_cache=True,
                **{self._cache_arg: cache},
            )
            cache, logits = self._cache_of(out), out.logits[:, -1, :]
            del out
            next_pos = next_pos + 1
        results = {key: self._completion(tokens[r], finish[r] or "length", row_decoding[r])
                   for r, key in enumerate(row_keys)}
        return results, sum(len(t) for t in tokens)

    def _prefill(self, batch: list[_Unit], max_tokens: int
                 ) -> tuple[object, torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
        """The batch's prompts through the model: its KV cache, last logits, attention mask, next positions
        and, for each unit of ``batch``, its row in them.

        Without a static cache this is one left-padded forward pass, a row per unit. With one, each distinct
        prompt gets a row and is prefilled on top of the prefixes it shares with others (a chat template's
        system prompt, a template's instructions, demos that trials have in common), each such prefix once
        (:func:`_prefix_plan`); the tails of the prompts that continue one prefix are prefilled together,
        left-padded after it. The parts are joined in one preallocated ``StaticCache`` that the whole batch
        decodes in: a decode step only pays attention for the padding, and the cache is written in place
        instead of copied each step."""
        from transformers import StaticCache

        if not self._static:
            out, mask, positions = self._forward_after(None, [u.ids for u in batch], 0)
            return self._cache_of(out), out.logits[:, -1, :], mask, positions[:, -1] + 1, list(range(len(batch)))
        keys = [tuple(u.ids) for u in batch]
        distinct: dict[tuple[int, ...], int] = {}  # each distinct prompt's index in seqs
        for key in keys:
            distinct.setdefault(key, len(distinct))
        seqs = [list(key) for key in distinct]
        nodes, leaves = _prefix_plan(seqs)
        shared: list[list[tuple[torch.Tensor, torch.Tensor]]] = []  # each run's keys and values from position 0
        for node in nodes:
            tokens = seqs[node.prompt][node.start:node.end]
            out, _, _ = self._forward_after(shared[node.parent] if node.parent >= 0 else None, [tokens], node.start)
            shared.append([(layer.keys, layer.values) for layer in self._cache_of(out).layers])
            del out
        tails: dict[tuple[int, int], list[int]] = {}
        for i, leaf in enumerate(leaves):
            tails.setdefault(leaf, []).append(i)
        parts, order = [], []
        for (parent, start), members in tails.items():
            members.sort(key=lambda i: len(seqs[i]))
            chunks: list[list[int]] = []
            for i in members:  # tails of similar length together: padding costs prefill compute
                if not chunks or len(seqs[i]) - start > PAD_LIMIT * (len(seqs[chunks[-1][0]]) - start) + 8:
                    chunks.append([i])
                else:
                    chunks[-1].append(i)
            for chunk in chunks:
                out, mask, positions = self._forward_after(
                    shared[parent] if parent >= 0 else None, [seqs[i][start:] for i in chunk], start)
                parts.append((self._cache_of(out), out.logits[:, -1, :], mask, positions[:, -1] + 1))
                order += chunk
                del out
        del shared
        caches, logits, masks, next_pos = zip(*parts)
        width = max(m.shape[1] for m in masks)
        pads = [width - m.shape[1] for m in masks]  # left padding that right-aligns each part
        static = StaticCache(config=self.model.config, max_cache_len=width + max_tokens)
        for i, layer in enumerate(static.layers):
            layer.update(torch.cat([F.pad(c.layers[i].keys, (0, 0, pad, 0)) for c, pad in zip(caches, pads)]),
                         torch.cat([F.pad(c.layers[i].values, (0, 0, pad, 0)) for c, pad in zip(caches, pads)]))
        mask = torch.cat([F.pad(m, (pad, 0)) for m, pad in zip(masks, pads)])
        row_of = {seq: row for row, seq in enumerate(order)}  # parts' rows are in the order of their passes
        return static, torch.cat(logits), mask, torch.cat(next_pos), [row_of[distinct[key]] for key in keys]

    def _forward_after(self, prefix: list[tuple[torch.Tensor, torch.Tensor]] | None, tails: list[list[int]],
                       start: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """One forward pass of ``tails`` (left-padded) on top of a shared ``prefix`` cache of ``start``
        tokens (None: from scratch): the model's output, the full attention mask and the positions."""
        from transformers import DynamicCache

        ids, tail_mask = self._left_pad(tails)
        rows = len(tails)
        mask = torch.cat([tail_mask.new_ones((rows, start)), tail_mask], dim=-1)
        positions = start + (tail_mask.cumsum(-1) - 1).clamp(min=0)
        cache = None
        if prefix is not None:
            cache = DynamicCache(ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1))
                                                 for k, v in prefix])
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         **{self._cache_arg: cache}, **self._last_logits_only)
        return out, mask, positions

    def _cache_of(self, out: object) -> object:
        return getattr(out, self._cache_arg)

    def _stop_at(self, tokens: list[int], decoding: Decoding) -> int | None:
        """Where the first stop string starts in the decoded text, or None."""
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        found = [i for i in (text.find(s) for s in decoding.stop) if i >= 0]
        return min(found) if found else None

    def _completion(self, tokens: list[int], finish: str, decoding: Decoding) -> Completion:
        body = tokens[:-1] if finish == "eos" else tokens
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        if finish == "stop":
            text = text[: self._stop_at(tokens, decoding)]
        return Completion(text=text, tokens=len(tokens), finish=finish)

    # ---------------------------------------------------------------- features and scores
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled last hidden states over non-pad tokens, float32, one row per text.

        A text whose tokens begin another text's (a process reward's step prefixes) is pooled from
        that text's pass: under causal attention its hidden states are the same."""
        hidden_size = self.model.get_input_embeddings().embedding_dim
        features = np.zeros((len(texts), hidden_size), dtype=np.float32)
        ids = self._tokenize(list(texts))
        owner = _prefix_owners(ids)
        readers: dict[int, list[int]] = {}
        for i, o in enumerate(owner):
            readers.setdefault(o, []).append(i)
        passes = list(readers)
        for chunk in self._chunks([len(ids[o]) for o in passes]):
            input_ids, mask = self._right_pad([ids[passes[j]] for j in chunk])
            with torch.inference_mode():
                hidden = self.model.base_model(input_ids=input_ids, attention_mask=mask).last_hidden_state
                # sums[r, n - 1]: the sum over the first n positions of row r (one copy to the host per chunk)
                sums = hidden.float().cumsum(1).cpu().numpy()
            for r, j in enumerate(chunk):
                for i in readers[passes[j]]:
                    features[i] = sums[r, len(ids[i]) - 1] / len(ids[i])
        return features

    def logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Sum of log p(continuation | prompt) for each pair, batched. Pairs whose continuation is one
        token share one forward pass of their prompt (an LLM judge asks for several yes/no words of
        each prompt: one pass instead of one per word)."""
        if len(prompts) != len(continuations):
            raise BackendError(f"logprobs got {len(prompts)} prompts but {len(continuations)} continuations")
        heads = self._tokenize(list(prompts))
        tails = self.tokenizer(list(continuations), add_special_tokens=False)["input_ids"]
        jobs: dict[tuple[int, ...], list[int]] = {}  # sequence -> the pairs it scores
        for i in range(len(prompts)):
            if tails[i]:
                jobs.setdefault(tuple(heads[i] + (tails[i] if len(tails[i]) > 1 else [])), []).append(i)
        sequences = list(jobs)
        totals = [0.0] * len(prompts)
        lm_head = self.model.get_output_embeddings()
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        for chunk in self._chunks([len(seq) for seq in sequences]):
            input_ids, mask = self._right_pad([list(sequences[j]) for j in chunk])
            rows, cols, targets, owners = [], [], [], []
            for r, j in enumerate(chunk):
                for i in jobs[sequences[j]]:
                    start = len(heads[i])
                    rows += [r] * len(tails[i])
                    cols += range(start - 1, start - 1 + len(tails[i]))
                    targets += tails[i]
                    owners += [i] * len(tails[i])
            row_index, col_index, target_ids = (torch.tensor(v, device=self.device) for v in (rows, cols, targets))
            with torch.inference_mode():
                hidden = self.model.base_model(input_ids=input_ids, attention_mask=mask).last_hidden_state
                logits = lm_head(hidden[row_index, col_index]).float()
                if softcap:
                    logits = torch.tanh(logits / softcap) * softcap
                picked = logits.log_softmax(-1).gather(-1, target_ids[:, None]).squeeze(-1).tolist()
            for i, value in zip(owners, picked):
                totals[i] += value
        return totals

    def format_chat(self, messages: Sequence[dict[str, str]]) -> str:
        """The tokenizer's chat template with a generation prompt (see :func:`chat.format_chat`)."""
        return format_chat(self.tokenizer, messages)

    # ---------------------------------------------------------------- helpers
    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids with the tokenizer's special tokens, never a doubled BOS (chat templates add one).

        An empty text becomes the BOS token (or pad) so that there is something to condition on.
        """
        if not texts:
            return []
        ids = self.tokenizer(texts, add_special_tokens=True)["input_ids"]
        bos = self.tokenizer.bos_token_id
        starter = [bos if bos is not None else self.pad_token_id]
        return [(t[1:] if bos is not None and t[:2] == [bos, bos] else t) or starter for t in ids]

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if s:
                ids[i, width - len(s) :] = torch.tensor(s)
                mask[i, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _right_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(1, max(len(s) for s in seqs))
        ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _chunks(self, lengths: list[int]) -> Iterator[list[int]]:
        """Indices sorted by length, grouped so rows x longest length stays within the token budget."""
        chunk: list[int] = []
        for i in sorted(range(len(lengths)), key=lengths.__getitem__):
            if chunk and (len(chunk) + 1) * max(lengths[i], 1) > self.max_batch_tokens:
                yield chunk
                chunk = []
            chunk.append(i)
        if chunk:
            yield chunk

    def _default_batch_tokens(self) -> int:
        """Token budget per batch: a share of free GPU memory; on CPU a fixed size unless memory is short."""
        config = self.model.config.get_text_config()
        heads = getattr(config, "num_attention_heads", 1)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        element = torch.finfo(self.model.dtype).bits // 8
        per_token = 2 * config.num_hidden_layers * kv_heads * head_dim * element + 8 * config.hidden_size * element
        per_token *= 2  # the prefill caches and the joined cache (or a growing DynamicCache and its copy) coexist
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return max(1024, int(0.6 * free / per_token))
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 0
        return max(1024, min(CPU_BATCH_TOKENS, int(0.25 * free / per_token))) if free > 0 else CPU_BATCH_TOKENS


def pick_device(device: str) -> torch.device:
    """``auto``: CUDA when present, else CPU; a CUDA device asked for on a machine without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(f"device '{device}' was asked for but no CUDA GPU is available; use device = \"cpu\"")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 where ``device`` computes it natively (a GPU, a CPU with AMX), else fp32
    (emulated bf16 is 2.5-3x slower than fp32 on a CPU without it); a named dtype is taken as is."""
    if dtype == "auto":
        return autocast_dtype(device) or torch.float32
    choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in choices:
        raise BackendError(f"dtype '{dtype}' is not one of auto, {', '.join(choices)}")
    return choices[dtype]


def _load_model(resolved: ResolvedModel, checkpoint: str | None, dtype: torch.dtype) -> torch.nn.Module:
    """The base weights, or a checkpoint: a full model directory or a PEFT adapter (merged)."""
    from transformers import AutoModelForCausalLM

    if checkpoint is None:
        return AutoModelForCausalLM.from_pretrained(str(resolved.path), dtype=dtype)
    path = checkpoint_dir(checkpoint)
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(str(resolved.path), dtype=dtype)
        return PeftModel.from_pretrained(base, str(path)).merge_and_unload()
    if (path / "config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    raise ModelNotFound(
        f"Checkpoint {path} has neither config.json (a full model) nor adapter_config.json (a PEFT adapter)."
    )


def _prefix_owners(ids: Sequence[Sequence[int]]) -> list[int]:
    """For each token sequence, the index of a sequence it is a prefix of (itself when none), so that
    one forward pass serves all. In lexicographic order a prefix comes right before its extensions:
    walking that order backwards, a sequence that begins the last owner seen is read from it."""
    owners = list(range(len(ids)))
    current: int | None = None
    for i in sorted(range(len(ids)), key=lambda k: ids[k], reverse=True):
        if current is not None and list(ids[current][:len(ids[i])]) == list(ids[i]):
            owners[i] = current
        else:
            current = i
    return owners
