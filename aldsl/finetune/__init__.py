"""theta: fine-tuning a generator (SFT, rejection sampling, iterative), trained once per content."""

from aldsl.finetune.checkpoint import ensure_checkpoint

__all__ = ["ensure_checkpoint"]
