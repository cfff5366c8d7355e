"""Executor throughput against the backend's ceiling and a naive per-request client.

    python bench/throughput.py [--quick] [--device cpu|cuda] [--backend transformers|vllm]

In one process, on the embedded model (N = 64 queries, L = 4, 32 new tokens; --quick: 16 x 4):
  executor  - the batch executor running a zero-shot program (one generate node for all N x L)
  raw       - one `model.generate(..., num_return_sequences=L)` call on the same prompts (the ceiling)
  naive     - one `generate` call per (query, sample), as a thread-per-request client does
  rerun     - the executor again on the same program: every generation comes from the cache
  fp32      - the executor again with dtype = float32, beside the chosen dtype (dtype = auto); when auto
              chooses float32 the two are one run
  matmul    - the rate of the model's own linear layers at the executor's batch rows in the chosen dtype,
              and the roofline it implies: rate / (2 x linear weights) tokens/s
Tokens are generated tokens up to and including EOS (padding after EOS is not counted).
The last line is `executor/raw=<x> executor/naive=<x> rerun_speedup=<x> matmul_gflops=<x> roofline_tok_s=<x>
roofline_fraction=<x> dtype=<chosen> executor_fp32_tok_s=<x> executor_chosen_tok_s=<x> dtype_speedup=<x>
peak_rss_mb=<n>` (one line).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aldsl  # noqa: E402
from aldsl.backends import load_backend  # noqa: E402
from aldsl.backends.cache import GenerationCache  # noqa: E402
from aldsl.runtime.executor import Executor  # noqa: E402
from aldsl.program import CompiledProgram  # noqa: E402
from aldsl.runtime.session import Session  # noqa: E402

PROGRAM = """program throughput "zero-shot arithmetic, L samples"
data problems = jsonl("{data}", input = "question", target = "answer")
generator g = model("smollm2-135m", backend = {backend}, device = "{device}", dtype = "{dtype}", temperature = 0.8, max_tokens = {tokens})
prompter p = prompt(template = zero_shot)
evaluator acc = numeric_match()
flow main = loop(problems, generator = g, prompter = p, samples = {samples}, answer = number, evaluator = acc)
"""


def counted(sequences: torch.Tensor, eos: set[int], pad: int) -> int:
    """Generated tokens up to and including the first EOS in each row."""
    total = 0
    for row in sequences.tolist():
        n = 0
        for tok in row:
            n += 1
            if tok in eos:
                break
        total += n
    return total


def run_executor(args: argparse.Namespace, n: int, dtype: str,
                 tmp: str) -> tuple[Session, CompiledProgram, dict]:
    """The executor on a fresh cache with generator ``dtype``: its tokens/s over the prompt and generate nodes."""
    source = PROGRAM.format(data=ROOT / "programs" / "data" / "arith.jsonl", backend=args.backend,
                            device=args.device, dtype=dtype, tokens=args.tokens, samples=args.samples)
    prog = aldsl.compile(source)
    session = Session(cache=GenerationCache(Path(tmp) / f"generations-{dtype}.sqlite"))
    executor = Executor(prog.program_graph, session)
    records = executor.records("test", n)
    gen = prog.program_graph.spec("generate_1").generator
    session.backend(gen, prog.program_graph)  # load (and convert) before timing
    t0 = time.perf_counter()
    result = executor.run(records, "test")
    seconds = result.stats["node_seconds"]["generate_1"] + result.stats["node_seconds"]["prompt_1"]
    return session, prog, {"result": result, "records": records, "total": time.perf_counter() - t0,
                           "tok_s": result.stats["generated_tokens"] / seconds}


def matmul_rate(model: torch.nn.Module, rows: int, repeats: int = 3) -> tuple[float, float]:
    """(GFLOP/s of the model's linear layers on ``rows`` input rows in the model's dtype, GFLOP per token).

    Every nn.Linear of the model (attention and MLP projections of each layer, the LM head) runs once on
    a random input of ``rows`` rows, the best of ``repeats`` passes; a token costs 2 x in x out per layer."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    param = next(model.parameters())
    inputs = {m.in_features: torch.randn(rows, m.in_features, dtype=param.dtype, device=param.device) for m in linears}
    flops_per_token = sum(2.0 * m.in_features * m.out_features for m in linears)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first pass warms the kernels up
            if param.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for m in linears:
                torch.nn.functional.linear(inputs[m.in_features], m.weight)
            if param.device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    return rows * flops_per_token / best / 1e9, flops_per_token / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="16 queries instead of 64")
    ap.add_argument("--queries", type=int)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--backend", default="transformers")
    ap.add_argument("--skip-naive", action="store_true", help="skip the slow per-request loop")
    args = ap.parse_args()
    n = args.queries or (16 if args.quick else 64)
    L, T = args.samples, args.tokens

    with tempfile.TemporaryDirectory() as tmp:
        session, prog, first = run_executor(args, n, "auto", tmp)
        gen = prog.program_graph.spec("generate_1").generator
        chosen_backend = load_backend(session.model_spec(gen, prog.program_graph))
        model_dtype = getattr(getattr(chosen_backend, "model", None), "dtype", "")
        chosen = str(getattr(chosen_backend, "dtype", None) or model_dtype).removeprefix("torch.")
        print(f"executor ({chosen}): {first['tok_s']:.1f} tok/s", file=sys.stderr, flush=True)
        fp32 = first if chosen == "float32" else run_executor(args, n, "float32", tmp)[2]
        records, exec_total, exec_tokens = first["records"], first["total"], first["result"].stats["generated_tokens"]

        t0 = time.perf_counter()
        again = Executor(prog.program_graph, session).run(records, "test")
        rerun_total = time.perf_counter() - t0
        assert again.stats["misses"] == 0, again.stats

        prompts = [t.prompts[0]["prompt"] for t in first["result"].traces]
        results: dict[str, float] = {"executor_tok_s": first["tok_s"], "executor_fp32_tok_s": fp32["tok_s"]}
        if args.backend == "transformers":
            model, tok = chosen_backend.model, chosen_backend.tokenizer  # type: ignore[attr-defined]
            results["matmul_gflops"], gflop_per_token = matmul_rate(model, len(prompts) * L)
            results["roofline_tok_s"] = results["matmul_gflops"] / gflop_per_token
            configured = model.generation_config.eos_token_id
            eos = {tok.eos_token_id} | set(configured if isinstance(configured, list) else [configured])
            pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
            tok.padding_side = "left"
            device = chosen_backend.device  # type: ignore[attr-defined]

            def generate(batch: list[str], n_return: int) -> int:
                enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                with torch.inference_mode():
                    out = model.generate(**enc, do_sample=True, temperature=0.8, top_p=1.0, top_k=0,
                                         max_new_tokens=T, num_return_sequences=n_return, pad_token_id=pad)
                return counted(out[:, enc["input_ids"].shape[1]:], eos, pad)

            generate(prompts[:2], 1)  # warm up
            t0 = time.perf_counter()
            raw_tokens = generate(prompts, L)
            raw_s = time.perf_counter() - t0
            results["raw_tok_s"] = raw_tokens / raw_s
            if not args.skip_naive:
                t0 = time.perf_counter()
                naive_tokens = sum(generate([p], 1) for p in prompts for _ in range(L))
                naive_s = time.perf_counter() - t0
                results["naive_tok_s"] = naive_tokens / naive_s

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    device = "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    print(json.dumps({"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                      "cores": torch.get_num_threads(), "device": device, "torch": torch.__version__,
                      "backend": args.backend, "dtype": chosen, "queries": n, "samples": L, "new_tokens": T,
                      "executor_generated_tokens": exec_tokens, "executor_seconds": round(exec_total, 2),
                      "rerun_seconds": round(rerun_total, 3),
                      **{k: round(v, 1) for k, v in results.items()}}, indent=1))
    parts = []
    if "raw_tok_s" in results:
        parts.append(f"executor/raw={results['executor_tok_s'] / results['raw_tok_s']:.2f}")
    if "naive_tok_s" in results:
        parts.append(f"executor/naive={results['executor_tok_s'] / results['naive_tok_s']:.2f}")
    parts.append(f"rerun_speedup={exec_total / rerun_total:.1f}")
    if "roofline_tok_s" in results:
        parts += [f"matmul_gflops={results['matmul_gflops']:.1f}", f"roofline_tok_s={results['roofline_tok_s']:.0f}",
                  f"roofline_fraction={results['executor_tok_s'] / results['roofline_tok_s']:.3f}"]
    parts += [f"dtype={chosen}", f"executor_fp32_tok_s={results['executor_fp32_tok_s']:.1f}",
              f"executor_chosen_tok_s={results['executor_tok_s']:.1f}",
              f"dtype_speedup={results['executor_tok_s'] / results['executor_fp32_tok_s']:.2f}"]
    parts.append(f"peak_rss_mb={rss_mb:.0f}")
    print(" ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
