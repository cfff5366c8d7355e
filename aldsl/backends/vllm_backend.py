"""The vLLM backend (CUDA only): same interface, vLLM's paged batching and prefix caching.

The samples asked for a prompt go to vLLM as one request per run of consecutive indices,
with ``n`` = the run's length and seed ``Decoding.engine_seed(prompt, first)``: vLLM seeds
member ``j`` of an ``n``-request with ``seed + j``, so sample ``i`` is the same whether asked
alone or with others, and the ``n`` members share one prefill. Prefix caching also shares the
prefill between requests with a common prefix (the demonstrations of a few-shot prompt).
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Sequence

from aldsl.backends.base import (
    CAPABILITIES,
    Arrivals,
    Completion,
    Decoding,
    Finished,
    GenRequest,
    ModelSpec,
    Progress,
    consecutive_runs,
)
from aldsl.backends.base import BackendError
from aldsl.backends.registry import checkpoint_dir, model_identity, resolve_model
from aldsl.backends.chat import format_chat

INSTALL_HINT = "pip install 'aldsl[vllm]'  (needs a CUDA GPU; see docs/scaling.md)"
SAMPLES_PER_CALL = 4096  # samples per vLLM call; progress is reported and samples cached after each
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 512)


class VLLMBackend:
    """A model served in-process by ``vllm.LLM``."""

    capabilities = CAPABILITIES["vllm"]

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
        self, requests: Sequence[GenRequest], decoding: Decoding, progress: Progress | None = None,
        finished: Finished | None = None,
    ) -> list[list[Completion]]:
        """Sample completions; ``[i][j]`` is sample ``requests[i].samples[j]``."""
        decoding.check()
        arrivals = Arrivals(requests, decoding.greedy)
        runs = [(prompt, run) for prompt, samples in arrivals.wanted.items() for run in consecutive_runs(samples)]
        for chunk in _chunks(runs, SAMPLES_PER_CALL):
            params = [self._params(decoding, prompt, run) for prompt, run in chunk]
            outputs = self.llm.generate([p for p, _ in chunk], params, use_tqdm=False, lora_request=self._lora)
            fresh = [(prompt, i, _completion(o)) for (prompt, run), out in zip(chunk, outputs)
                     for i, o in zip(run, sorted(out.outputs, key=lambda o: o.index))]
            complete = arrivals.arrive(fresh)
            if finished is not None:
                finished(fresh)
            if progress is not None:
                progress(complete, sum(c.tokens for _, _, c in fresh))
        return arrivals.results()

    def _params(self, decoding: Decoding, prompt: str, run: Sequence[int]) -> Any:
        return self._vllm.SamplingParams(
            n=len(run),
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            top_k=decoding.top_k if decoding.top_k > 0 else -1,
            max_tokens=decoding.max_tokens,
            stop=list(decoding.stop) or None,
            seed=None if decoding.greedy else decoding.engine_seed(prompt, run[0]),
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

def _chunks(runs: list[tuple[str, list[int]]], limit: int) -> Iterator[list[tuple[str, list[int]]]]:
    """Groups of runs holding at most ``limit`` samples (a longer run is its own group)."""
    chunk: list[tuple[str, list[int]]] = []
    size = 0
    for prompt, run in runs:
        if chunk and size + len(run) > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append((prompt, run))
        size += len(run)
    if chunk:
        yield chunk
