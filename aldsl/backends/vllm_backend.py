"""The vLLM backend (CUDA only): same interface, vLLM's paged batching and prefix caching.

Each sample is its own request with its own seed (derived like the transformers backend's),
so sample ``i`` never depends on what else was asked; prefix caching makes the L requests
of one prompt share its prefill.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from aldsl.backends.base import Completion, Decoding, GenRequest, ModelSpec, Progress
from aldsl.backends.base import BackendError
from aldsl.backends.registry import checkpoint_dir, model_identity, resolve_model
from aldsl.backends.chat import format_chat

INSTALL_HINT = "pip install 'aldsl[vllm]'  (needs a CUDA GPU)"
REQUESTS_PER_CALL = 4096  # sample requests per vLLM call; progress is reported after each
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 512)


class VLLMBackend:
    """A model served in-process by ``vllm.LLM``."""

    def __init__(self, spec: ModelSpec) -> None:
        try:
            import vllm
        except ImportError as error:
            raise BackendError(f"The vllm backend needs the vllm package: {INSTALL_HINT}") from error
        if spec.device == "cpu":
            raise BackendError('The vllm backend runs on CUDA GPUs only; use backend = "transformers" on CPU.')
        self.spec = spec
        self.resolved = resolve_model(spec.name)
        self.identity = model_identity(self.resolved, spec.checkpoint) + "+vllm"
        model_dir, self._lora = str(self.resolved.path), None
        options: dict[str, Any] = {}
        if spec.checkpoint is not None:
            path = checkpoint_dir(spec.checkpoint)
            adapter = path / "adapter_config.json"
            if adapter.is_file():
                rank = int(json.loads(adapter.read_text()).get("r", 16))
                options = {"enable_lora": True, "max_lora_rank": next((r for r in _LORA_RANKS if r >= rank), rank)}
                from vllm.lora.request import LoRARequest

                self._lora = LoRARequest("aldsl-checkpoint", 1, str(path))
            else:
                model_dir = str(path)
        dtype = "auto" if spec.dtype == "auto" else spec.dtype
        self.llm = vllm.LLM(model=model_dir, dtype=dtype, enable_prefix_caching=True, seed=0, **options)
        self.tokenizer = self.llm.get_tokenizer()
        self._vllm = vllm

    def generate(
        self, requests: Sequence[GenRequest], decoding: Decoding, progress: Progress | None = None
    ) -> list[list[Completion]]:
        """Sample completions; ``[i][j]`` is sample ``requests[i].samples[j]``."""
        decoding.check()
        greedy = decoding.temperature <= 0
        keys = list(dict.fromkeys((r.prompt, 0 if greedy else s) for r in requests for s in r.samples))
        done: dict[tuple[str, int], Completion] = {}
        reported = 0
        for start in range(0, len(keys), REQUESTS_PER_CALL):
            chunk = keys[start : start + REQUESTS_PER_CALL]
            params = [self._params(decoding, prompt, sample) for prompt, sample in chunk]
            outputs = self.llm.generate([p for p, _ in chunk], params, use_tqdm=False, lora_request=self._lora)
            for key, output in zip(chunk, outputs):
                done[key] = _completion(output.outputs[0])
            if progress is not None:
                finished = sum(all((r.prompt, 0 if greedy else s) in done for s in r.samples) for r in requests)
                progress(finished - reported, sum(done[k].tokens for k in chunk))
                reported = finished
        return [[done[(r.prompt, 0 if greedy else s)] for s in r.samples] for r in requests]

    def _params(self, decoding: Decoding, prompt: str, sample: int) -> Any:
        return self._vllm.SamplingParams(
            n=1,
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            top_k=decoding.top_k if decoding.top_k > 0 else -1,
            max_tokens=decoding.max_tokens,
            stop=list(decoding.stop) or None,
            seed=decoding.sample_seed(prompt, sample) % (1 << 63),
        )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Not available: vLLM does not expose a causal LM's hidden states."""
        raise BackendError(
            "The vllm backend cannot compute hidden-state features (encode). Give the reward model a "
            'generator with backend = "transformers" (same model name) for its features.'
        )

    def logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Sum of log p(continuation | prompt), from vLLM's prompt log-probabilities."""
        from vllm.inputs import TokensPrompt

        if len(prompts) != len(continuations):
            raise BackendError(f"logprobs got {len(prompts)} prompts but {len(continuations)} continuations")
        heads = [self.tokenizer(p)["input_ids"] for p in prompts]
        tails = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
        params = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=0)
        inputs = [TokensPrompt(prompt_token_ids=h + t) for h, t in zip(heads, tails)]
        outputs = self.llm.generate(inputs, params, use_tqdm=False, lora_request=self._lora)
        totals = []
        for head, tail, output in zip(heads, tails, outputs):
            ids = head + tail
            entries = output.prompt_logprobs[len(head) :]
            totals.append(sum(e[t].logprob for e, t in zip(entries, ids[len(head) :]) if e is not None))
        return totals

    def format_chat(self, messages: Sequence[dict[str, str]]) -> str:
        """The tokenizer's chat template with a generation prompt (see :func:`chat.format_chat`)."""
        return format_chat(self.tokenizer, messages)


def _completion(output: Any) -> Completion:
    """A Completion from one vLLM ``CompletionOutput``."""
    if output.finish_reason == "length":
        finish = "length"
    else:
        finish = "stop" if isinstance(output.stop_reason, str) else "eos"
    return Completion(text=output.text, tokens=len(output.token_ids), finish=finish)
