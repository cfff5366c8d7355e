"""Torch helpers shared by generation, reward training and fine-tuning."""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch
from torch import nn

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # attention projections (Llama, Mistral, Qwen, ...)


def lora_targets(model: nn.Module) -> list[str] | None:
    """The attention projections of ``model`` that LoRA adapts (None: peft's default for the architecture)."""
    linear = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    return [t for t in LORA_TARGETS if t in linear] or None


@lru_cache(maxsize=None)
def native_bf16(device_type: str) -> bool:
    """Whether ``device_type`` runs bf16 matrix products faster than fp32: CUDA, or a CPU with AMX.

    AVX512-BF16 alone is no gain: measured on a 2-core VM that has it without AMX (SmolLM2-135M, 16
    rows), the bf16 prefill of 128 tokens took 4.37 s against 2.97 s in fp32 and a decoding step 97 ms
    against 113 ms, so a generation of a 150-token prompt and 48 new tokens is slower in bf16."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    try:
        flags = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return False
    return any(f in flags.split() for f in _BF16_FLAGS)


_BF16_FLAGS: Sequence[str] = ("amx_bf16",)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where ``device`` computes it natively, else None (fp32)."""
    return torch.bfloat16 if native_bf16(device.type) else None
