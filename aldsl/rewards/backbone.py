"""LM-backbone rewards: a causal LM with a scalar value head, fine-tuned on a reward family's labels.

A value model is a Hugging Face ``AutoModelForTokenClassification`` with one label whose logit at a
token is the reward r of the text up to that token (Cobbe et al.'s token-level verifier). Families
read it where their loss puts it: the last token of (x, y) for outcome, discriminator and
Bradley-Terry rewards, the last token of every step for the process reward (Math-Shepherd). The
LM starts from the generator's base weights unless ``backbone`` names another model. ``tune``:

- ``top``: the top ``layers`` decoder layers, the final norm and the head, over the hidden states
  of the lower layers, computed once without gradients and kept in memory (the cheap path on CPU);
- ``lora``: LoRA adapters on every attention projection (peft) and the head;
- ``full``: every weight.

``verifier = generative`` makes it a generative verifier (Zhang et al., 2024): the text ends with
:data:`VERIFY` and the value head starts as the LM's own output rows for " Yes" minus " No", so r is
logit P(Yes) - logit P(No) of the pretrained LM at that token before training, fine-tuned by the
family's loss; the artifact stays a token-classification model (``value_model.json`` names the suffix).

Training runs in transformers' ``Trainer`` (AdamW with linear decay, gradient clipping, bf16
autocast where :func:`aldsl.backends.torch_utils.autocast_dtype` finds native bf16) through one loss
wrapper for every family and every input kind; TRL's ``RewardTrainer`` covers only Bradley-Terry
pairs on token ids (and TRL 1.x has no process-reward trainer), so it does not fit the other
families nor training over cached states. Held-out metrics come from the 20% of train queries the
model never sees (:func:`aldsl.rewards.trained.holdout_ids`); the saved model is that fit (an LM is
too costly to train twice). The artifact is a plain model folder: ``AutoModelForTokenClassification
.from_pretrained`` loads it (a LoRA reward: ``PeftModel.from_pretrained`` on its base, in
``adapter/``), and :class:`ValueModel` scores exactly as plain transformers does.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from transformers import TrainerCallback

from aldsl.backends.torch_utils import autocast_dtype, lora_targets
from aldsl.errors import UserError
from aldsl.language.schema import TUNES
from aldsl.progress import QUIET, Reporter

if TYPE_CHECKING:
    from aldsl.rewards.base import RewardItem, Scored

DEFAULT_LR = {"top": 1e-4, "lora": 2e-4, "full": 2e-5}
DEFAULT_EPOCHS = 2
MODEL_FILE = "value_model.json"  # how the reward reads its model: base folder, adapter, text format
MAX_TOKENS = 1024  # longest (x, y) text a value model reads; longer ones lose their head
SCORE_BATCH_TOKENS = 16384  # rows x longest text per scoring batch
VERIFY = "\nIs the answer correct? Answer Yes or No:"  # what a generative verifier reads after the text
VERDICTS = (" Yes", " No")  # the tokens whose logit difference starts a generative verifier's head


@dataclass(frozen=True)
class TuneConfig:
    """How a value model is trained."""

    tune: str  # top | lora | full
    base: str  # the HF folder of the backbone's weights
    layers: int = 4
    epochs: int = DEFAULT_EPOCHS
    lr: float = 1e-4
    batch: int = 16
    seed: int = 0
    lora_rank: int = 8
    generative: bool = False

    @property
    def suffix(self) -> str:
        """What the value model reads after each (x, candidate) text."""
        return VERIFY if self.generative else ""


def text_of(x: str, candidate: str) -> str:
    """The text a reward model reads for candidate ``candidate`` of query ``x``."""
    return f"Question: {x.strip()}\nAnswer: {candidate.strip()}"


@dataclass
class Encoded:
    """One (x, candidate) text as tokens: where the answer starts and where each of its lines ends."""

    ids: list[int]
    answer_start: int
    line_ends: list[int]  # token index of the last token of each non-empty line of the candidate


def encode(tokenizer: Any, x: str, candidate: str, suffix: str = "") -> Encoded:
    """Tokens of :func:`text_of` and ``suffix`` with the token positions the families put their losses on."""
    text = text_of(x, candidate)
    start_char = len(text) - len(candidate.strip())
    text += suffix
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True, truncation=True,
                    max_length=MAX_TOKENS)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    answer_start = next((i for i, (a, b) in enumerate(offsets) if b > start_char), len(ids) - 1)
    ends, pos = [], start_char
    for line in candidate.strip().split("\n"):
        end = pos + len(line.rstrip())
        if line.strip():
            token = next((i for i, (a, b) in enumerate(offsets) if a < end <= b), None)
            ends.append(token if token is not None else len(ids) - 1)
        pos += len(line) + 1
    return Encoded(list(ids), min(answer_start, len(ids) - 1), ends or [len(ids) - 1])


# ---------------------------------------------------------------- training items
@dataclass(frozen=True)
class Point:
    """BCE targets on one text: ``labels[i]`` at token ``positions[i]`` with weight ``weights[i]``."""

    text: int
    positions: tuple[int, ...]
    labels: tuple[float, ...]
    weights: tuple[float, ...]


@dataclass(frozen=True)
class Pair:
    """Bradley-Terry: text ``chosen`` preferred to text ``rejected`` (values at their last tokens)."""

    chosen: int
    rejected: int


class _Objective(nn.Module):
    """The family losses over value logits: Eq. 8 / Math-Shepherd BCE for points, Eq. 4 for pairs."""

    def __init__(self, values: nn.Module, margin: float = 0.0, centering: float = 0.0):
        super().__init__()
        self.values = values
        self.margin, self.centering = margin, centering

    def forward(self, rows: dict[str, torch.Tensor], points: dict[str, torch.Tensor] | None = None,
                pairs: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        logits = self.values(**rows).float()  # [texts, tokens]
        losses = []
        if points is not None:
            picked = logits[points["row"], points["position"]]
            bce = nn.functional.binary_cross_entropy_with_logits(picked, points["label"], reduction="none")
            losses.append((bce * points["weight"]).sum() / points["weight"].sum().clamp(min=1e-8))
        if pairs is not None:
            last = rows["mask"].sum(-1) - 1
            r = logits[torch.arange(len(last), device=last.device), last]
            r_pos, r_neg = r[pairs["chosen"]], r[pairs["rejected"]]
            loss = -nn.functional.logsigmoid(r_pos - r_neg - self.margin)
            if self.centering:
                loss = loss + self.centering * (r_pos + r_neg) ** 2
            losses.append(loss.mean())
        return {"loss": sum(losses)}


class _TokenValues(nn.Module):
    """Value logits of a token-classification model from token ids (``lora`` and ``full``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=mask).logits[..., 0]


class _TopValues(nn.Module):
    """Value logits from the hidden states entering decoder layer ``first`` (``top``): the top layers,
    the final norm, dropout and the value head of a Llama-style token-classification model."""

    def __init__(self, model: nn.Module, first: int):
        super().__init__()
        self.model, self.first = model, first

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_causal_mask

        base = self.model.model
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        causal = create_causal_mask(config=base.config, inputs_embeds=hidden, attention_mask=mask, cache=None,
                                    position_ids=positions)
        embeddings = base.rotary_emb(hidden, position_ids=positions)
        for layer in base.layers[self.first:]:
            hidden = layer(hidden, attention_mask=causal, position_embeddings=embeddings, position_ids=positions)
        return self.model.score(self.model.dropout(base.norm(hidden)))[..., 0]


def _supports_top(model: nn.Module) -> bool:
    base = getattr(model, "model", None)
    return all(hasattr(base, a) for a in ("layers", "norm", "rotary_emb")) and hasattr(model, "score")


# ---------------------------------------------------------------- the value model
class ValueModel:
    """A trained value model, loaded from its artifact folder; :meth:`token_values` scores texts."""

    def __init__(self, folder: Path):
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        from aldsl.backends.registry import quiet_loading

        info = json.loads((folder / MODEL_FILE).read_text(encoding="utf-8"))
        self.folder = folder
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.bfloat16 if info["dtype"] == "bfloat16" else torch.float32
        with quiet_loading():
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
            if info["adapter"]:
                from peft import PeftModel

                base = AutoModelForTokenClassification.from_pretrained(info["base"], num_labels=1, dtype=self.dtype)
                self.model = PeftModel.from_pretrained(base, str(folder / "adapter")).merge_and_unload()
            else:
                self.model = AutoModelForTokenClassification.from_pretrained(str(folder), dtype=self.dtype)
        self.model.to(self.device).eval()
        self.pad = _pad_id(self.tokenizer)
        self.suffix = info.get("suffix", "")

    def encode(self, x: str, candidate: str) -> Encoded:
        return encode(self.tokenizer, x, candidate, self.suffix)

    def token_values(self, encoded: Sequence[Encoded]) -> list[np.ndarray]:
        """Per-token value logits (float64) of each text, batched by length."""
        out: list[np.ndarray] = [np.zeros(0)] * len(encoded)
        for chunk in _length_chunks([len(e.ids) for e in encoded], SCORE_BATCH_TOKENS):
            ids, mask = _right_pad([encoded[i].ids for i in chunk], self.pad, self.device)
            with torch.inference_mode():
                logits = self.model(input_ids=ids, attention_mask=mask).logits[..., 0].double().cpu().numpy()
            for row, i in enumerate(chunk):
                out[i] = logits[row, : len(encoded[i].ids)]
        return out

    def last_values(self, xs: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """r at the last token of every (x, candidate)."""
        values = self.token_values([self.encode(x, c) for x, c in zip(xs, candidates)])
        return np.array([v[-1] for v in values], dtype=np.float64)


class LMReward:
    """A reward on an LM backbone: r(x, y) at the last token (``steps = False``), or the minimum over
    the last tokens of y's lines (a process reward)."""

    def __init__(self, name: str, model: ValueModel, metrics: dict[str, float], steps: bool = False):
        self.name, self.model, self.metrics, self.steps = name, model, metrics, steps

    def rewards(self, xs: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        if not self.steps:
            return self.model.last_values(xs, candidates)
        return np.array([s.min() for s in self.step_rewards(xs, candidates)], dtype=np.float64)

    def step_rewards(self, xs: Sequence[str], candidates: Sequence[str]) -> list[np.ndarray]:
        encoded = [self.model.encode(x, c) for x, c in zip(xs, candidates)]
        return [v[e.line_ends] for v, e in zip(self.model.token_values(encoded), encoded)]

    def score(self, items: Sequence[RewardItem]) -> list[Scored]:
        from aldsl.rewards.base import Scored

        return [Scored(float(r)) for r in self.rewards([i.x for i in items], [i.candidate for i in items])]


# ---------------------------------------------------------------- training
def train_value_model(config: TuneConfig, folder: Path, texts: Sequence[tuple[str, str]],
                      points: Sequence[Point] = (), pairs: Sequence[Pair] = (), *, margin: float = 0.0,
                      centering: float = 0.0, reporter: Reporter = QUIET, label: str = "value model") -> ValueModel:
    """Fine-tune a value model on ``points`` (BCE) and ``pairs`` (Bradley-Terry) over ``texts``
    ((x, candidate), indexed by the items), save it into ``folder`` and return it loaded."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from aldsl.backends.registry import quiet_loading

    if not points and not pairs:
        raise UserError(f"{label}: nothing to train on")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with quiet_loading(new_head=True):
        tokenizer = AutoTokenizer.from_pretrained(config.base)
        model = AutoModelForTokenClassification.from_pretrained(config.base, num_labels=1, dtype=torch.float32)
    pad = _pad_id(tokenizer)
    model.config.pad_token_id = pad
    with torch.no_grad():
        if config.generative:
            model.score.weight.copy_(_verdict_rows(config.base, model, tokenizer))
        else:
            model.score.weight.zero_()
        if model.score.bias is not None:
            model.score.bias.zero_()
    encoded = [encode(tokenizer, x, c, config.suffix) for x, c in texts]
    values, states = _trainable(config, model, encoded, pad, device, reporter, label)
    trained = values.model  # the peft model of a LoRA reward (its adapter is saved), else the model itself
    items: list[Point | Pair] = [*points, *pairs]
    steps = -(-len(items) // config.batch) * config.epochs
    bf16 = autocast_dtype(device) == torch.bfloat16
    objective = _Objective(values, margin, centering).to(device)
    with tempfile.TemporaryDirectory() as tmp, reporter.task(f"{label}: {len(items)} items x {config.epochs} "
                                                            f"epochs ({config.tune})", total=steps) as advance:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=config.batch,
                                 num_train_epochs=config.epochs, learning_rate=config.lr, weight_decay=0.0,
                                 max_grad_norm=1.0, lr_scheduler_type="linear", bf16=bf16, use_cpu=device.type != "cuda",
                                 report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True,
                                 remove_unused_columns=False, seed=config.seed, data_seed=config.seed,
                                 dataloader_num_workers=0, optim="adamw_torch")
        trainer = Trainer(model=objective, args=args, train_dataset=_Items(items),
                          data_collator=_Collate(encoded, states, pad), callbacks=[_Advance(advance)])
        trainer.remove_callback(PrinterCallback)  # disable_tqdm adds it; it prints the run's metrics dict
        trainer.train()
    trained.eval()
    _save(config, trained, tokenizer, folder)
    return ValueModel(folder)


def _trainable(config: TuneConfig, model: nn.Module, encoded: Sequence[Encoded], pad: int, device: torch.device,
               reporter: Reporter, label: str) -> tuple[nn.Module, list[torch.Tensor] | None]:
    """The module whose parameters train, and (``top``) the cached lower-layer states of every text."""
    if config.tune == "full":
        return _TokenValues(model.to(device)), None
    if config.tune == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank, lora_dropout=0.0,
                          target_modules=lora_targets(model), modules_to_save=["score"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            return _TokenValues(get_peft_model(model, lora).to(device)), None
    if config.tune != "top":
        raise UserError(f"{label}: tune must be one of {', '.join(TUNES)}, got {config.tune!r}")
    if not _supports_top(model):
        raise UserError(f"{label}: tune = top needs a decoder-only model with the usual layout (model.layers, "
                        f"norm, rotary embeddings); {type(model).__name__} has another: use tune = lora or full")
    total = model.config.num_hidden_layers
    first = max(0, total - config.layers)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("score") or _layer_index(name) >= first or name.startswith("model.norm"))
    model.to(device)
    states: list[torch.Tensor] = [torch.zeros(0)] * len(encoded)
    dtype = autocast_dtype(device) or torch.float32
    with reporter.task(f"{label}: lower-layer states of {len(encoded)} texts", total=len(encoded)) as advance:
        for chunk in _length_chunks([len(e.ids) for e in encoded], SCORE_BATCH_TOKENS):
            ids, mask = _right_pad([encoded[i].ids for i in chunk], pad, device)
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                hidden = model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[first]
            for row, i in enumerate(chunk):
                states[i] = hidden[row, : len(encoded[i].ids)].to(dtype).cpu().clone()
            advance(len(chunk))
    return _TopValues(model, first), states


def _verdict_rows(base: str, model: nn.Module, tokenizer: Any) -> torch.Tensor:
    """The LM's output-layer row of " Yes" minus that of " No" (the first token of each), shape [1, hidden].
    With tied embeddings the output layer is ``model``'s input embedding; otherwise the token-classification
    model dropped it, so it is read from the causal LM of ``base``."""
    yes, no = (tokenizer(v, add_special_tokens=False)["input_ids"][0] for v in VERDICTS)
    if model.config.tie_word_embeddings:
        rows = model.get_input_embeddings().weight.detach()
    else:
        from transformers import AutoModelForCausalLM

        from aldsl.backends.registry import quiet_loading

        with quiet_loading():
            rows = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).get_output_embeddings().weight.detach()
    return (rows[yes] - rows[no]).unsqueeze(0).clone()


def _layer_index(name: str) -> int:
    parts = name.split(".")
    return int(parts[parts.index("layers") + 1]) if "layers" in parts else -1


class _Items(torch.utils.data.Dataset):
    def __init__(self, items: Sequence[Point | Pair]):
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Point | Pair:
        return self.items[i]


class _Collate:
    """A batch of items -> the texts they read (ids, or cached states) and their loss targets."""

    def __init__(self, encoded: Sequence[Encoded], states: list[torch.Tensor] | None, pad: int):
        self.encoded, self.states, self.pad = encoded, states, pad

    def __call__(self, batch: Sequence[Point | Pair]) -> dict[str, Any]:
        texts: dict[int, int] = {}

        def row(text: int) -> int:
            return texts.setdefault(text, len(texts))

        point_rows, positions, labels, weights, chosen, rejected = [], [], [], [], [], []
        for item in batch:
            if isinstance(item, Point):
                r = row(item.text)
                point_rows += [r] * len(item.positions)
                positions += item.positions
                labels += item.labels
                weights += item.weights
            else:
                chosen.append(row(item.chosen))
                rejected.append(row(item.rejected))
        order = sorted(texts, key=texts.get)
        width = max(len(self.encoded[t].ids) for t in order)
        mask = torch.zeros((len(order), width), dtype=torch.long)
        for r, t in enumerate(order):
            mask[r, : len(self.encoded[t].ids)] = 1
        if self.states is None:
            ids, _ = _right_pad([self.encoded[t].ids for t in order], self.pad, torch.device("cpu"))
            rows: dict[str, torch.Tensor] = {"ids": ids, "mask": mask}
        else:
            hidden = torch.zeros((len(order), width, self.states[order[0]].shape[-1]), dtype=self.states[order[0]].dtype)
            for r, t in enumerate(order):
                hidden[r, : len(self.encoded[t].ids)] = self.states[t]
            rows = {"hidden": hidden, "mask": mask}
        out: dict[str, Any] = {"rows": rows}
        if positions:
            out["points"] = {"row": torch.tensor(point_rows), "position": torch.tensor(positions),
                             "label": torch.tensor(labels, dtype=torch.float32),
                             "weight": torch.tensor(weights, dtype=torch.float32)}
        if chosen:
            out["pairs"] = {"chosen": torch.tensor(chosen), "rejected": torch.tensor(rejected)}
        return out


class _Advance(TrainerCallback):
    """A Trainer callback that moves a progress bar by one per optimizer step."""

    def __init__(self, advance: Callable[..., None]):
        self.advance = advance

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.advance(1)


def _save(config: TuneConfig, model: nn.Module, tokenizer: Any, folder: Path) -> None:
    from aldsl.backends.registry import quiet_loading

    with quiet_loading():
        if config.tune == "lora":
            model.save_pretrained(str(folder / "adapter"))
        else:
            model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
    dtype = "bfloat16" if autocast_dtype(next(model.parameters()).device) == torch.bfloat16 else "float32"
    info = {"base": config.base, "adapter": config.tune == "lora", "tune": config.tune, "dtype": dtype,
            "text": text_of("{x}", "{y}") + config.suffix, "suffix": config.suffix}
    (folder / MODEL_FILE).write_text(json.dumps(info, indent=1), encoding="utf-8")


# ---------------------------------------------------------------- helpers
def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    return pad if pad is not None else (tokenizer.eos_token_id or 0)


def _right_pad(seqs: Sequence[Sequence[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def _length_chunks(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Indices sorted by length, grouped so rows x longest length stays within ``budget`` tokens."""
    chunks: list[list[int]] = []
    chunk: list[int] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if chunk and (len(chunk) + 1) * max(lengths[i], 1) > budget:
            chunks.append(chunk)
            chunk = []
        chunk.append(i)
    if chunk:
        chunks.append(chunk)
    return chunks


# ---------------------------------------------------------------- what the families fit
def balanced_weights(labels: Sequence[float]) -> np.ndarray:
    """Class-balanced weights (>= 0.5 is positive) so rare positives shape the reward as much as negatives."""
    y = np.asarray(labels, dtype=np.float64) >= 0.5
    p = min(max(float(y.mean()) if len(y) else 0.5, 1e-3), 1 - 1e-3)
    return np.where(y, 0.5 / p, 0.5 / (1 - p))


def fit_points(config: TuneConfig, folder: Path, texts: Sequence[tuple[str, str]], labels: Sequence[Sequence[float]],
               held: np.ndarray, *, value: str = "last", reporter: Reporter = QUIET, label: str = "reward"
               ) -> tuple[ValueModel, list[np.ndarray]]:
    """Train on the texts outside ``held``: each text's labels sit at the last tokens of its lines (one label
    per line, a process reward), or one label at its last token (``value = last``) or on every answer
    token (``value = tokens``). Returns the model and the values at those positions for the held texts."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(config.base)
    encoded = [encode(tokenizer, x, c, config.suffix) for x, c in texts]
    train = [i for i in range(len(texts)) if not held[i]]
    weights = balanced_weights([y for i in train for y in labels[i]])
    points, w = [], iter(weights)
    for i in train:
        e, ys = encoded[i], list(labels[i])
        if len(ys) > 1:  # one label per step
            ends = _step_positions(e, len(ys))
            points.append(Point(i, tuple(ends), tuple(ys), tuple(next(w) for _ in ys)))
        elif value == "tokens":
            span = range(e.answer_start, len(e.ids))
            weight = next(w)
            points.append(Point(i, tuple(span), tuple(ys * len(span)), tuple([weight / len(span)] * len(span))))
        else:
            points.append(Point(i, (len(e.ids) - 1,), tuple(ys), (next(w),)))
    model = train_value_model(config, folder, texts, points, reporter=reporter, label=label)
    held_rows = [i for i in range(len(texts)) if held[i]]
    values = model.token_values([model.encode(*texts[i]) for i in held_rows])
    out = []
    for i, v in zip(held_rows, values):
        n = len(labels[i])
        out.append(v[_step_positions(encoded[i], n)] if n > 1 else v[-1:])
    return model, out


def fit_pairs(config: TuneConfig, folder: Path, texts: Sequence[tuple[str, str]], pairs: Sequence[tuple[int, int]],
              held: np.ndarray, *, margin: float = 0.0, centering: float = 0.0, reporter: Reporter = QUIET,
              label: str = "reward") -> tuple[ValueModel, np.ndarray, np.ndarray]:
    """Bradley-Terry on the pairs (chosen, rejected text indices) outside ``held``; the held pairs' rewards."""
    items = [Pair(a, b) for (a, b), h in zip(pairs, held) if not h]
    model = train_value_model(config, folder, texts, pairs=items, margin=margin, centering=centering,
                              reporter=reporter, label=label)
    kept = [p for p, h in zip(pairs, held) if h]
    r = model.last_values([texts[a][0] for a, _ in kept] + [texts[b][0] for _, b in kept],
                          [texts[a][1] for a, _ in kept] + [texts[b][1] for _, b in kept])
    return model, r[: len(kept)], r[len(kept):]


def _step_positions(e: Encoded, steps: int) -> list[int]:
    """The positions of ``steps`` step labels: the first ``steps - 1`` line ends and the last one (the
    process reward labels at most MAX_STEPS steps of a longer solution this way)."""
    ends = e.line_ends
    return ends[: steps - 1] + ends[-1:] if len(ends) >= steps else (ends + ends[-1:] * steps)[:steps]
