"""A tiny randomly initialised Llama model with the real SmolLM2 tokenizer, for fast tests.

Loads like any other model: ``ModelSpec(name=str(tiny_model_dir()))``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from aldsl.store.hashing import content_hash
from aldsl.backends.registry import SOURCE_FILE, converted_dir, embedded_gguf, quiet_loading
from aldsl.store.paths import atomic_dir, cache_dir

TINY_CONFIG: dict[str, int | float | bool] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "initializer_range": 0.2,  # peaked logits: varied text and no near-ties under greedy decoding
    "tie_word_embeddings": True,
}
_TOKENIZER_MODEL = "smollm2-135m"


def tiny_model_dir(seed: int = 0) -> Path:
    """Build (once, cached under ``cache_dir()/models``) a tiny random model; return its directory."""
    target = cache_dir() / "models" / f"tiny-llama-s{seed}-{content_hash(TINY_CONFIG)[:8]}"
    if (target / "config.json").is_file():
        return target
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _smollm2_tokenizer()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad,
        **TINY_CONFIG,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    with atomic_dir(target) as tmp, quiet_loading():
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
    return target


def _smollm2_tokenizer():  # -> PreTrainedTokenizerBase
    """The SmolLM2 tokenizer: from the converted embedded model if present, else from the GGUF."""
    from transformers import AutoTokenizer

    gguf = embedded_gguf(_TOKENIZER_MODEL)
    converted = converted_dir(gguf)
    if (converted / SOURCE_FILE).is_file():
        return AutoTokenizer.from_pretrained(str(converted))
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
