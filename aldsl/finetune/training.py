"""The supervised training loop shared by every fine-tuning kind.

An :class:`Example` is a prompt exactly as the executor feeds it to the model (chat template
and prefill included) and the continuation to learn; the loss is on the continuation's tokens
only (plus EOS). Training is AdamW with gradient clipping over seeded, cycling batches: full
fine-tuning by default, a LoRA adapter on the attention projections as an option. Weights stay
fp32 (bf16 autocast on CUDA), so small learning rates are not lost to rounding.
"""

from __future__ import annotations

import gc
import inspect
import random
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from aldsl.backends.registry import quiet_loading
from aldsl.backends.torch_utils import autocast_dtype, lora_targets
from aldsl.errors import UserError, require_extra

MAX_TOKENS = 2048  # longest training sequence (prompt + target); longer ones lose their tail
IGNORE = -100  # label of tokens without loss (prompt, padding)


@dataclass(frozen=True)
class Example:
    """One training pair: the model sees ``prompt`` and learns to continue with ``target``."""

    prompt: str
    target: str
    eos: bool = True  # end the target with EOS (False for samples that were cut at max_tokens)


@dataclass(frozen=True)
class Settings:
    """Optimizer settings of one training run."""

    steps: int
    lr: float
    batch: int
    lora: bool = False
    lora_rank: int = 8
    seed: int = 0
    clip: float = 1.0  # max gradient norm


@dataclass
class TrainResult:
    """What a run did: the loss of every step and its cost."""

    losses: list[float]
    seconds: float
    examples: int
    target_tokens: int
    trainable: int

    def summary(self) -> dict[str, Any]:
        return {"losses": [round(x, 4) for x in self.losses], "seconds": round(self.seconds, 2),
                "seconds_per_step": round(self.seconds / max(len(self.losses), 1), 3), "examples": self.examples,
                "target_tokens": self.target_tokens, "trainable_parameters": self.trainable}


def load_trainable(folder: Path, settings: Settings, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """A fresh fp32 training copy of the model in ``folder`` (with a LoRA adapter if asked) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    if settings.lora:
        model = _add_lora(model, settings.lora_rank, settings.seed)
    return model.to(device), tokenizer


def _add_lora(model: torch.nn.Module, rank: int, seed: int) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=lora_targets(model),
                        task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft calls a transformers API deprecated for v6
        torch.manual_seed(seed)  # the adapter's random init
        return get_peft_model(model, config)


def prompt_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Prompt tokens exactly as the transformers backend makes them (special tokens, never a doubled BOS)."""
    if not texts:
        return []
    ids = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    starter = [bos if bos is not None else (tokenizer.pad_token_id or 0)]
    return [(t[1:] if bos is not None and t[:2] == [bos, bos] else t) or starter for t in ids]


def encode(tokenizer: Any, examples: Sequence[Example]) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per example; labels are IGNORE on the prompt."""
    prompts = prompt_ids(tokenizer, [e.prompt for e in examples])
    targets = tokenizer([e.target for e in examples], add_special_tokens=False)["input_ids"] if examples else []
    eos = tokenizer.eos_token_id
    out = []
    for p, t, e in zip(prompts, targets, examples):
        t = [*t, eos] if e.eos and eos is not None else list(t)
        ids, labels = (p + t)[:MAX_TOKENS], ([IGNORE] * len(p) + t)[:MAX_TOKENS]
        if any(label != IGNORE for label in labels):
            out.append((ids, labels))
    return out


def batches(n: int, size: int, steps: int, seed: int) -> Iterator[list[int]]:
    """``steps`` batches of distinct indices into ``n`` examples, cycling through seeded shuffles (epochs)."""
    size = min(size, n)
    rng = random.Random(seed)
    pending: list[int] = []
    for _ in range(steps):
        batch, pending = pending[:size], pending[size:]
        if len(batch) < size:  # the epoch ran out: a fresh shuffle fills the batch and the next ones
            fresh = list(range(n))
            rng.shuffle(fresh)
            taken = [i for i in fresh if i not in batch][: size - len(batch)]
            batch += taken
            pending = [i for i in fresh if i not in taken]
        yield batch


def _collate(rows: list[tuple[list[int], list[int]]], pad: int, device: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
        labels[i, : len(y)] = torch.tensor(y)
    return ids.to(device), mask.to(device), labels.to(device)


def train(model: torch.nn.Module, tokenizer: Any, examples: Sequence[Example], settings: Settings,
          advance: Callable[..., None] = lambda n=1, **fields: None) -> TrainResult:
    """Run ``settings.steps`` AdamW steps on ``examples`` (in place); ``advance(1, loss=...)`` after each."""
    data = encode(tokenizer, examples)
    if not data:
        raise UserError("fine-tuning has no training example with a non-empty target")
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    select = _logits_to_keep_supported(model)
    losses: list[float] = []
    start = time.perf_counter()
    model.train()
    for index in batches(len(data), settings.batch, settings.steps, settings.seed):
        ids, mask, labels = _collate([data[i] for i in index], pad, device)
        with autocast:
            loss = _target_loss(model, ids, mask, labels, select)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.clip)
        optimizer.step()
        losses.append(float(loss.detach()))
        advance(1, loss=f"{losses[-1]:.3f}")
    model.eval()
    del optimizer
    return TrainResult(losses, time.perf_counter() - start, len(data),
                       sum(sum(label != IGNORE for label in y) for _, y in data), sum(p.numel() for p in params))


def _logits_to_keep_supported(model: torch.nn.Module) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def _target_loss(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                 select: bool) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled tokens; the LM head only runs from the first
    position that predicts one (prompts are often longer than targets, and the head is costly)."""
    first = int((labels[:, 1:] != IGNORE).any(0).nonzero()[0]) if select else 0
    keep = {"logits_to_keep": torch.arange(first, ids.shape[1] - 1, device=ids.device)} if select else {}
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False, **keep).logits
    logits = logits if select else logits[:, :-1]
    targets = labels[:, first + 1:]
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             ignore_index=IGNORE)


def save(model: torch.nn.Module, tokenizer: Any, folder: Path) -> None:
    """A plain HF model folder; a LoRA model is merged into the weights and its adapter kept in ``adapter/``."""
    from peft import PeftModel

    with quiet_loading():
        if isinstance(model, PeftModel):
            model.save_pretrained(str(folder / "adapter"))
            model = model.merge_and_unload()
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))


def free_memory() -> None:
    """Return a dropped training copy's memory (call after deleting the last reference)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class Preference:
    """One DPO pair: after ``prompt`` (as the executor feeds it), ``chosen`` is preferred to ``rejected``."""

    prompt: str
    chosen: str
    rejected: str


def train_preferences(model: torch.nn.Module, tokenizer: Any, pairs: Sequence[Preference], settings: Settings,
                      beta: float, reference: torch.nn.Module | None,
                      advance: Callable[..., None] = lambda n=1, **fields: None) -> TrainResult:
    """``settings.steps`` DPO steps (TRL's DPOTrainer, sigmoid loss with ``beta``) on ``pairs`` (in place).
    ``reference`` is the frozen pi_ref (None with a LoRA model: the base without its adapter)."""
    import tempfile

    trl = require_extra("trl", "dpo", "dpo() fine-tuning (TRL's DPOTrainer)")
    Dataset = require_extra("datasets", "dpo", "dpo() fine-tuning").Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    if not pairs:
        raise UserError("preference fine-tuning has no pair to learn from")
    losses: list[float] = []

    class Record(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))
                advance(1, loss=f"{losses[-1]:.3f}")

    device = next(model.parameters()).device
    rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = trl.DPOConfig(output_dir=tmp, per_device_train_batch_size=min(settings.batch, len(rows)),
                         max_steps=settings.steps, learning_rate=settings.lr, beta=beta, max_grad_norm=settings.clip,
                         seed=settings.seed, data_seed=settings.seed, report_to=[], save_strategy="no",
                         logging_strategy="steps", logging_steps=1, disable_tqdm=True, use_cpu=device.type != "cuda",
                         bf16=autocast_dtype(device) == torch.bfloat16, max_length=MAX_TOKENS, optim="adamw_torch",
                         dataloader_num_workers=0)
        trainer = trl.DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer, callbacks=[Record()])
        trainer.remove_callback(PrinterCallback)  # disable_tqdm adds it; it prints every step's log dict
        trainer.train()
    model.eval()
    chosen_tokens = sum(len(ids) for ids in tokenizer([p.chosen for p in pairs], add_special_tokens=False)["input_ids"])
    return TrainResult(losses, time.perf_counter() - start, len(rows), chosen_tokens,
                       sum(p.numel() for p in model.parameters() if p.requires_grad))
