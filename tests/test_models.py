"""Naming models: GGUF conversions keyed by content and stored in half precision, a Hugging Face id
that is not on disk answered with the command that fetches it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from aldsl.backends import registry
from aldsl.backends.base import ModelNotFound


def test_a_hub_id_not_on_disk_gets_the_download_command(isolated_cache):
    with pytest.raises(ModelNotFound) as error:
        registry.resolve_model("HuggingFaceTB/SmolLM2-360M-Instruct-not-here")
    message = str(error.value)
    assert "huggingface-cli download HuggingFaceTB/SmolLM2-360M-Instruct-not-here --local-dir " \
           "models/SmolLM2-360M-Instruct-not-here" in message
    assert 'model("models/SmolLM2-360M-Instruct-not-here")' in message


def test_one_conversion_per_file_content(tmp_path, isolated_cache, copying_conversion):
    """Two paths (and names) of one GGUF content share one conversion; other content gets its own
    (the conversion copies the tiny model: copying_conversion)."""
    conversions = copying_conversion
    a, b, c = tmp_path / "a.gguf", tmp_path / "copy-of-a.gguf", tmp_path / "c.gguf"
    a.write_bytes(b"GGUF" + b"\0" * 64)
    shutil.copy(a, b)
    c.write_bytes(b"GGUF" + b"\1" * 64)
    first, second, other = (registry.resolve_model(str(p)) for p in (a, b, c))
    assert len(conversions) == 2 and first.fingerprint == second.fingerprint != other.fingerprint


def test_converted_weights_are_stored_in_half_precision(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    assert {p.dtype for p in registry._half(model).parameters()} == {torch.float16}
    big = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    with torch.no_grad():
        next(big.parameters())[0, 0] = 1e6  # beyond fp16's range: bf16 keeps it
    stored = registry._half(big)
    assert {p.dtype for p in stored.parameters()} == {torch.bfloat16} and next(stored.parameters())[0, 0] == 1e6


def _starter(folder: Path, model: str, extra: str = "") -> Path:
    from aldsl.cli import main

    assert main(["init", str(folder), "--model", model]) == 0
    program = folder / "program.alp"
    text = program.read_text().replace("max_tokens = 48)", f"max_tokens = 6{extra})")
    program.write_text(text)
    return program


def test_a_lora_adapter_named_in_model(tmp_path, tiny_model_dir, isolated_cache, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    import aldsl
    from aldsl.cli import main
    from aldsl.runtime.session import Session

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    torch.manual_seed(0)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    lora.save_pretrained(str(adapter))
    plain = aldsl.compile(_starter(tmp_path / "plain", str(tiny_model_dir)))
    adapted = aldsl.compile(_starter(tmp_path / "adapted", str(tiny_model_dir), f', adapter = "{adapter}"'))
    session = Session(use_cache=False)
    gen = adapted.program_graph.spec("generate_1").generator
    assert gen.checkpoint == str(adapter.resolve())
    assert session.backend(gen).identity != session.backend(plain.program_graph.spec("generate_1").generator).identity
    assert len(adapted.answer(["Tom has 2 apples. How many?"], session=session)) == 1
    wrong = _starter(tmp_path / "wrong", str(tiny_model_dir), f', adapter = "{tmp_path}"')
    assert main(["check", str(wrong)]) == 2
    assert "is not a PEFT adapter folder" in capsys.readouterr().err
