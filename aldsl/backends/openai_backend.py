"""``backend = openai``: a model behind an OpenAI-compatible HTTP server (vLLM serve, SGLang,
llama.cpp's server, Ollama, TGI, ``transformers serve``) or a hosted API.

The official ``openai`` client does the HTTP: bounded concurrency is an asyncio semaphore, and
retries on 429, 5xx, timeouts and dropped connections are the client's own (exponential
backoff with jitter, ``Retry-After`` honoured). The samples of a prompt go out as runs of
consecutive indices, one request with ``n`` each and seed ``Decoding.engine_seed(prompt,
first)``; a server that answers fewer choices than ``n`` is asked once per remaining sample
from then on. Every finished sample is handed to ``finished`` (the generation cache) as its
response arrives, so a run killed or failed mid-batch resumes without repeating work.

The cache identity is the served model's entry in ``/models`` (its id, owner, root weights
and context length), not the URL: every replica of a fleet shares one cache, and a different
model behind the same URL does not reuse it. The API key is read from the environment variable
``api_key_env`` names and kept only inside the HTTP client: it is in no spec, identity, error
message, cache entry or file.

Servers have no hidden states and no trainable weights (capabilities: ``logprobs`` only);
log-probabilities come from the server's top next tokens, see :meth:`OpenAIBackend.logprobs`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from typing import Any, Awaitable, Callable, Iterable, Sequence, TypeVar

import openai

from aldsl.backends.base import (
    CAPABILITIES,
    Arrivals,
    BackendError,
    Completion,
    Decoding,
    Finished,
    GenRequest,
    ModelSpec,
    Progress,
    ServerSpec,
    consecutive_runs,
)
from aldsl.backends.chat import decode_messages, encode_messages, format_chat
from aldsl.store.hashing import content_hash

T = TypeVar("T")
TOP_LOGPROBS = 20  # next-token alternatives asked for when scoring (the OpenAI API's maximum)
IDENTITY_FIELDS = ("id", "owned_by", "root", "parent", "max_model_len")  # stable across server restarts
_NO_KEY = "no-key"  # local servers ignore the key; the client insists on one


class OpenAIBackend:
    """A served model, driven through the official ``openai`` client."""

    capabilities = CAPABILITIES["openai"]

    def __init__(self, spec: ModelSpec) -> None:
        if spec.server is None:
            raise BackendError(f"backend = openai needs base_url (model {spec.name!r})")
        self.spec = spec
        self.server: ServerSpec = spec.server
        self.model = spec.name
        self._key = _api_key(self.server)
        self._n_ok = True  # until the server answers fewer choices than it was asked for
        entry = self._served_entry()
        kept = {k: entry[k] for k in IDENTITY_FIELDS if entry.get(k) is not None}
        self.identity = f"openai:{self.model}:{content_hash(kept, self.server.api)[:16]}"

    # ---------------------------------------------------------------- generation
    def generate(
        self, requests: Sequence[GenRequest], decoding: Decoding, progress: Progress | None = None,
        finished: Finished | None = None,
    ) -> list[list[Completion]]:
        """Sample completions; ``[i][j]`` is sample ``requests[i].samples[j]``."""
        decoding.check()
        arrivals = Arrivals(requests, decoding.greedy)

        def arrived(prompt: str, samples: Sequence[int], completions: Sequence[Completion]) -> None:
            items = [(prompt, s, c) for s, c in zip(samples, completions)]
            complete = arrivals.arrive(items)
            if finished is not None:
                finished(items)
            if progress is not None:
                progress(complete, sum(c.tokens for c in completions))

        jobs = [(prompt, run) for prompt, samples in arrivals.wanted.items() for run in consecutive_runs(samples)]
        _run(lambda client, gate: _all(self._sample(client, gate, p, run, decoding, arrived) for p, run in jobs), self)
        return arrivals.results()

    async def _sample(self, client: openai.AsyncOpenAI, gate: asyncio.Semaphore, prompt: str, run: list[int],
                      decoding: Decoding, arrived: Callable[[str, Sequence[int], Sequence[Completion]], None]) -> None:
        """Samples ``run`` of ``prompt``: one request with ``n`` while the server honours it, else one each."""
        if len(run) > 1 and not self._n_ok:
            await _all(self._sample(client, gate, prompt, [s], decoding, arrived) for s in run)
            return
        async with gate:
            completions = await self._request(client, prompt, decoding, first=run[0], n=len(run))
        if len(completions) < len(run):
            self._n_ok = False
        arrived(prompt, run[: len(completions)], completions[: len(run)])
        if len(completions) < len(run):
            await self._sample(client, gate, prompt, run[len(completions):], decoding, arrived)

    async def _request(self, client: openai.AsyncOpenAI, prompt: str, decoding: Decoding, first: int,
                       n: int) -> list[Completion]:
        args: dict[str, Any] = {"model": self.model, "max_tokens": decoding.max_tokens,
                                "temperature": decoding.temperature}
        if not decoding.greedy:
            args["seed"] = decoding.engine_seed(prompt, first) % (1 << 63)
            if decoding.top_p < 1.0:
                args["top_p"] = decoding.top_p
        if n > 1:
            args["n"] = n
        if decoding.stop:
            args["stop"] = list(decoding.stop)
        extra: dict[str, Any] = {"top_k": decoding.top_k} if decoding.top_k > 0 and not decoding.greedy else {}
        if self.server.api == "chat":
            messages, extra_chat = _chat_messages(prompt)
            response = await _call(client.chat.completions.create(messages=messages, extra_body=extra | extra_chat
                                                                  or None, **args), self.server, prompt_kind="chat")
            texts = [(c.message.content or "", c.finish_reason) for c in sorted(response.choices, key=_index)]
        else:
            response = await _call(client.completions.create(prompt=prompt, extra_body=extra or None, **args),
                                   self.server, prompt_kind="completions")
            texts = [(c.text or "", c.finish_reason) for c in sorted(response.choices, key=_index)]
        usage = getattr(response, "usage", None)
        total = getattr(usage, "completion_tokens", None)
        return [_completion(text, reason, decoding, _share(total, len(texts), i, text))
                for i, (text, reason) in enumerate(texts)]

    # ---------------------------------------------------------------- scores
    def logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """log p(continuation | prompt), read from the server's top next tokens after ``prompt``.

        Exact for a continuation that is one token among the server's ``TOP_LOGPROBS`` most likely
        next tokens (the Yes/No words of critics and judges); any other gets the least likely listed
        token's log-probability, an upper bound. One request per distinct prompt.
        """
        if len(prompts) != len(continuations):
            raise BackendError(f"logprobs got {len(prompts)} prompts but {len(continuations)} continuations")
        distinct = list(dict.fromkeys(prompts))
        tops: dict[str, dict[str, float]] = {}

        async def one(client: openai.AsyncOpenAI, gate: asyncio.Semaphore, prompt: str) -> None:
            async with gate:
                tops[prompt] = await self._top_tokens(client, prompt)

        _run(lambda client, gate: _all(one(client, gate, p) for p in distinct), self)
        out = []
        for prompt, continuation in zip(prompts, continuations):
            top = tops[prompt]
            out.append(top.get(continuation, min(top.values())))
        return out

    async def _top_tokens(self, client: openai.AsyncOpenAI, prompt: str) -> dict[str, float]:
        args: dict[str, Any] = {"model": self.model, "max_tokens": 1, "temperature": 0.0}
        if self.server.api == "chat":
            messages, extra = _chat_messages(prompt)
            response = await _call(client.chat.completions.create(messages=messages, logprobs=True,
                                                                  top_logprobs=TOP_LOGPROBS, extra_body=extra or None,
                                                                  **args), self.server, prompt_kind="chat")
            content = getattr(response.choices[0].logprobs, "content", None) if response.choices else None
            top = {t.token: t.logprob for t in content[0].top_logprobs} if content else {}
        else:
            response = await _call(client.completions.create(prompt=prompt, logprobs=TOP_LOGPROBS, **args),
                                   self.server, prompt_kind="completions")
            lp = response.choices[0].logprobs if response.choices else None
            top = dict(lp.top_logprobs[0]) if lp is not None and lp.top_logprobs else {}
        if not top:
            raise BackendError(
                f"the server at {self.server.base_url} returned no log-probabilities for {self.model!r}. LLM critics "
                "and judges need them (P(yes) from the next-token distribution): serve the model with an engine that "
                "returns logprobs (vLLM, SGLang, llama.cpp's server), or give the critic/judge a generator with "
                "backend = transformers on a local copy of the weights.")
        return top

    def format_chat(self, messages: Sequence[dict[str, str]]) -> str:
        """api = chat: the messages themselves, sent as such (the server applies its chat template);
        api = completions: plain ``Role: content`` lines ending in ``Assistant:``."""
        if self.server.api == "chat":
            return encode_messages(messages)
        return format_chat(None, messages)

    # ---------------------------------------------------------------- the server
    def _served_entry(self) -> dict[str, Any]:
        """This model's entry in the server's ``/models`` list."""
        async def listing(client: openai.AsyncOpenAI, gate: asyncio.Semaphore) -> list[dict[str, Any]]:
            page = await _call(client.models.list(), self.server, prompt_kind="models")
            return [m.model_dump() for m in page.data]

        served = _run(listing, self)
        entry = next((m for m in served if m.get("id") == self.model), None)
        if entry is None:
            names = ", ".join(str(m.get("id")) for m in served) or "none"
            raise BackendError(f"the server at {self.server.base_url} does not serve {self.model!r}; it serves: "
                               f"{names}. Name one of them in model(\"...\").")
        return entry

    def client(self) -> openai.AsyncOpenAI:
        """A client for the current event loop (clients hold connections bound to one loop)."""
        return openai.AsyncOpenAI(base_url=self.server.base_url, api_key=self._key or _NO_KEY,
                                  max_retries=self.server.retries, timeout=self.server.timeout)


def _run(work: Callable[[openai.AsyncOpenAI, asyncio.Semaphore], Awaitable[T]], backend: OpenAIBackend) -> T:
    """Run ``work(client, gate)`` to completion on a fresh event loop (in a helper thread when the
    caller is itself inside one); ``gate`` bounds the requests in flight to ``concurrency``."""
    async def main() -> T:
        async with backend.client() as client:
            return await work(client, asyncio.Semaphore(backend.server.concurrency))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


async def _all(work: Iterable[Awaitable[Any]]) -> None:
    """Await every coroutine; the first failure cancels the rest and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in work:
                group.create_task(coroutine)
    except BaseExceptionGroup as failures:
        raise _first_leaf(failures) from None


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def _call(request: Awaitable[T], server: ServerSpec, prompt_kind: str) -> T:
    """Await one API call (the client has already retried); failures become a BackendError that
    says what happened and that finished samples are kept."""
    try:
        return await request
    except openai.AuthenticationError:
        where = f"the key in ${server.api_key_env}" if server.api_key_env else "no API key (set api_key_env)"
        raise BackendError(f"the server at {server.base_url} refused {where}: check the key") from None
    except openai.NotFoundError as e:
        raise BackendError(f"the server at {server.base_url} has no {prompt_kind} endpoint or model ({_brief(e)}); "
                           + ("try api = chat" if prompt_kind == "completions" else
                              "check base_url (it usually ends in /v1)")) from None
    except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
        raise BackendError(f"the server at {server.base_url} rejected a {prompt_kind} request: {_brief(e)}. A server "
                           "that does not take top_k, n or stop strings, or (api = chat) an assistant prefill, needs "
                           "those left out of the generator (or api = completions)") from None
    except (openai.APIConnectionError, openai.APIStatusError) as e:
        raise BackendError(
            f"the server at {server.base_url} failed after {server.retries} retries ({type(e).__name__}: "
            f"{_brief(e)}). Every sample finished before is in the generation cache: start the server again (or "
            "raise retries/timeout in model(...)) and rerun to resume") from None


def _brief(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def _chat_messages(prompt: str) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The chat messages of a prompt: encoded messages, then any text the answer starts with
    (a prefill, or a partial thought to continue) as an assistant message the server continues
    (vLLM's and SGLang's ``continue_final_message``). A plain string is one user message."""
    messages, prefix = decode_messages(prompt)
    if messages is None:
        return [{"role": "user", "content": prompt}], {}
    if not prefix:
        return messages, {}
    return [*messages, {"role": "assistant", "content": prefix}], {"continue_final_message": True,
                                                                    "add_generation_prompt": False}


def _index(choice: Any) -> int:
    return int(getattr(choice, "index", 0) or 0)


def _share(total: int | None, n: int, i: int, text: str) -> int:
    """Tokens of choice ``i``: the server's completion tokens split evenly among its ``n`` choices
    (usage is per response); a server that reports no usage: about four characters a token."""
    if total is None:
        return max(1, len(text) // 4)
    return total // n + (i < total % n)


def _completion(text: str, reason: str | None, decoding: Decoding, tokens: int) -> Completion:
    """A Completion cut at the first stop string (servers differ in whether they keep it)."""
    cuts = [i for i in (text.find(s) for s in decoding.stop) if i >= 0]
    if cuts:
        return Completion(text=text[: min(cuts)], tokens=tokens, finish="stop")
    return Completion(text=text, tokens=tokens, finish="length" if reason == "length" else "eos")


def _api_key(server: ServerSpec) -> str | None:
    """The key from the named environment variable (never stored anywhere else)."""
    if server.api_key_env is None:
        return None
    key = os.environ.get(server.api_key_env)
    if not key:
        raise BackendError(f"api_key_env = \"{server.api_key_env}\" names an environment variable that is not set: "
                           f"export {server.api_key_env}=... before the run (aldsl reads the key from there and never "
                           "writes it anywhere)")
    return key
