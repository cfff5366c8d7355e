"""The executor over an OpenAI-compatible server against a plain concurrent client and a sequential one.

    python bench/serve_throughput.py [--queries 32] [--samples 2] [--tokens 32] [--concurrency 32]
                                     [--model tiny|embedded] [--write]

Starts ``transformers serve`` (continuous batching, CPU) on 127.0.0.1 with the embedded SmolLM2-135M
(or the tiny random model, whose compute is so small that HTTP and scheduling dominate), then, on the same prompts (the ones the executor rendered) and with the
same number of requests in flight:
  executor    - a zero-shot program with backend = openai, N queries x L samples, from an empty cache
  concurrent  - the official openai client, one request per (prompt, sample), an asyncio semaphore
  sequential  - the same client, one request at a time (on the first 16 requests: it is slow)
Throughput is generated tokens per second (the server's usage counts). The last line is
``executor/concurrent=<x> executor/sequential=<x>``; targets: >= 0.8 and >= 5.
``--write`` puts the figures in bench/RESULTS.md (section ``serve``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import openai  # noqa: E402

import aldsl  # noqa: E402
from aldsl.backends.cache import GenerationCache  # noqa: E402
from aldsl.runtime.session import Session  # noqa: E402
from bench.publish import machine, write_section  # noqa: E402
from servers import servable_copy, start_transformers_serve  # noqa: E402

SEQUENTIAL_REQUESTS = 16
PROGRAM = """program serve_throughput "zero-shot arithmetic over a server"
data problems = jsonl("{data}", input = "question", target = "answer", split = {{test: 1.0}})
generator g = model("{model}", backend = openai, base_url = "{url}", temperature = 0.8, max_tokens = {tokens},
                    concurrency = {concurrency})
prompter p = prompt(template = zero_shot, chat = false)
evaluator acc = numeric_match()
flow main = loop(problems, generator = g, prompter = p, samples = {samples}, answer = number, evaluator = acc)
"""


def model_dir(which: str, folder: Path) -> Path:
    if which == "tiny":
        from aldsl.backends.tiny import tiny_model_dir

        return servable_copy(tiny_model_dir(), folder / "tiny")
    from aldsl.backends.registry import resolve_model

    return servable_copy(resolve_model("smollm2-135m").path, folder / "smollm2")


async def client_run(url: str, model: str, prompts: list[str], tokens: int, concurrency: int) -> int:
    """Send every prompt once with at most ``concurrency`` in flight; returns the generated tokens."""
    gate = asyncio.Semaphore(concurrency)
    async with openai.AsyncOpenAI(base_url=url, api_key="no-key", max_retries=6, timeout=600) as client:
        async def one(prompt: str) -> int:
            async with gate:
                r = await client.completions.create(model=model, prompt=prompt, max_tokens=tokens, temperature=0.8)
            return r.usage.completion_tokens if r.usage else 0

        return sum(await asyncio.gather(*(one(p) for p in prompts)))


def timed(fn) -> tuple[float, int]:
    start = time.perf_counter()
    tokens = fn()
    return time.perf_counter() - start, tokens


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=32)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--model", choices=("tiny", "embedded"), default="embedded")
    ap.add_argument("--write", action="store_true", help="write the figures to bench/RESULTS.md")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        served = model_dir(args.model, folder)
        server = start_transformers_serve(served, folder / "serve.log", batching=True)
        try:
            data = folder / "problems.jsonl"
            data.write_text("".join(json.dumps({"question": f"Tom has {i} apples and buys {i % 7 + 2} more. How "
                                                            f"many apples does he have?", "answer": str(2 * i % 7 + i)})
                                    + "\n" for i in range(args.queries)))
            program = folder / "serve.alp"
            program.write_text(PROGRAM.format(data=data, model=served, url=server.url, tokens=args.tokens,
                                              concurrency=args.concurrency, samples=args.samples))
            compiled = aldsl.compile(program)
            asyncio.run(client_run(server.url, str(served), ["warm up"] * 4, args.tokens, 4))
            session = Session(cache=GenerationCache(folder / "generations.sqlite"))
            start = time.perf_counter()
            compiled.run(split="test", session=session)
            executor_s, executor_tokens = time.perf_counter() - start, session.stats()["generated_tokens"]
            result = compiled.run(split="test", session=Session(cache=session.cache))
            prompts = [p["prompt"] for t in result.traces for p in t.prompts for _ in range(args.samples)]
            concurrent_s, concurrent_tokens = timed(lambda: asyncio.run(
                client_run(server.url, str(served), prompts, args.tokens, args.concurrency)))
            sequential_s, sequential_tokens = timed(lambda: asyncio.run(
                client_run(server.url, str(served), prompts[:SEQUENTIAL_REQUESTS], args.tokens, 1)))
        finally:
            server.kill()
    rates = {"executor": executor_tokens / executor_s, "concurrent": concurrent_tokens / concurrent_s,
             "sequential": sequential_tokens / sequential_s}
    vs_concurrent, vs_sequential = rates["executor"] / rates["concurrent"], rates["executor"] / rates["sequential"]
    table = ["| client | requests | tokens | seconds | tokens/s |", "|---|---|---|---|---|",
             f"| executor (backend = openai, concurrency {args.concurrency}) | {len(prompts)} | {executor_tokens} | "
             f"{executor_s:.1f} | {rates['executor']:.1f} |",
             f"| plain concurrent client (openai, {args.concurrency} in flight) | {len(prompts)} | {concurrent_tokens} |"
             f" {concurrent_s:.1f} | {rates['concurrent']:.1f} |",
             f"| sequential client (one request at a time) | {SEQUENTIAL_REQUESTS} | {sequential_tokens} | "
             f"{sequential_s:.1f} | {rates['sequential']:.1f} |"]
    last = f"executor/concurrent={vs_concurrent:.2f} executor/sequential={vs_sequential:.2f}"
    print("\n".join(table))
    if args.write:
        body = (f"## Executor over a server (`python bench/serve_throughput.py --write`)\n\n"
                f"`transformers serve --continuous-batching` on 127.0.0.1, {args.model} model, {args.queries} queries "
                f"x L = {args.samples} samples x {args.tokens} new tokens, zero-shot, same prompts and concurrency "
                f"for each client. Machine: {machine()}.\n\n" + "\n".join(table) +
                f"\n\n```\n{last}\n```\n\nTargets: executor/concurrent >= 0.8, executor/sequential >= 5.")
        write_section(ROOT / "bench" / "RESULTS.md", "serve", body)
    print(last)
    return 0


if __name__ == "__main__":
    sys.exit(main())
