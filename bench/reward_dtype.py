"""fp32 against bf16 for the LM-backbone rewards, and the frozen-feature reward's prefix sharing.

    python bench/reward_dtype.py [--texts 192] [--epochs 2]

On the embedded model (SmolLM2-135M-Instruct), in one process:
  fit     - an outcome reward (``fit_points``: tune = top, 4 layers, BCE at the last token) on
            ``--texts`` worked solutions of train problems, half of them with one equation's result
            made wrong, 20% of the problems held out: once with bf16 autocast (what ``autocast_dtype``
            picks on this machine) and once in fp32. Seconds for the fit (lower-layer states and
            training) and the held-out AUC of each: the accuracy the dtype must not cost.
  score   - each fitted model's forward passes over all the texts (``ValueModel.token_values``; the bf16
            fit is saved and scored in bf16, the fp32 fit in fp32).
  encode  - the frozen-feature reward's pooled hidden states of 16 solutions and their step prefixes:
            one ``encode`` call (a prefix is read from its solution's pass) against one call per step
            depth (no text in a call begins another), in the generator's chosen dtype.
The last line: ``fit_bf16_speedup=<x> score_bf16_speedup=<x> auc_fp32=<x> auc_bf16=<x>
encode_sharing_speedup=<x> native_bf16=<bool>``. On a CPU without native bf16 both arms are fp32.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aldsl.backends import load_backend  # noqa: E402
from aldsl.backends.registry import resolve_model  # noqa: E402
from aldsl.backends.base import ModelSpec  # noqa: E402
from aldsl.backends.torch_utils import native_bf16  # noqa: E402
from aldsl.rewards import backbone  # noqa: E402

RESULT = re.compile(r"= (\d+)")


def problems(n: int, seed: int = 0) -> tuple[list[tuple[str, str]], list[float]]:
    """(question, solution) texts of ``n`` problems, one each, and their labels (1: the golden solution,
    0: one equation's result off by 1-9): every second problem is corrupted."""
    rows = [json.loads(line) for line in (ROOT / "programs" / "data" / "arith.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("solution") and RESULT.search(r["solution"])][:n]
    rng = random.Random(seed)
    texts, labels = [], []
    for i, r in enumerate(rows):
        solution = r["solution"]
        if i % 2:
            hits = list(RESULT.finditer(solution))
            hit = rng.choice(hits)
            wrong = int(hit.group(1)) + rng.choice([-1, 1]) * rng.randint(1, 9)
            solution = solution[:hit.start(1)] + str(abs(wrong)) + solution[hit.end(1):]
        texts.append((r["question"], solution))
        labels.append(float(i % 2 == 0))
    return texts, labels


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def fit(texts, labels, held, epochs: int, bf16: bool, folder: Path) -> tuple[float, float, backbone.ValueModel]:
    """Seconds and held-out AUC of one outcome fit; without ``bf16`` autocast (and the saved dtype) is fp32."""
    config = backbone.TuneConfig("top", str(resolve_model("smollm2-135m").path), layers=4, epochs=epochs, lr=1e-4)
    start = time.perf_counter()
    # the fp32 arm: the fit asks autocast_dtype() which dtype this hardware computes natively
    with mock.patch.object(backbone, "autocast_dtype", backbone.autocast_dtype if bf16 else lambda device: None):
        model, values = backbone.fit_points(config, folder, texts, [[y] for y in labels], held)
    seconds = time.perf_counter() - start
    held_labels = np.array([y for y, h in zip(labels, held) if h])
    return seconds, auc(np.array([v[-1] for v in values]), held_labels), model


def score_seconds(model: backbone.ValueModel, texts) -> float:
    encoded = [model.encode(x, c) for x, c in texts]
    model.token_values(encoded[:8])  # warm-up
    start = time.perf_counter()
    model.token_values(encoded)
    return time.perf_counter() - start


def encode_sharing(texts) -> tuple[float, float, int]:
    """Seconds of one encode call over 16 solutions and their line prefixes, against one call per depth."""
    backend = load_backend(ModelSpec(name="smollm2-135m"))
    by_depth: dict[int, list[str]] = {}
    for x, c in texts[:16]:
        lines = c.split("\n")
        for d in range(1, len(lines) + 1):
            by_depth.setdefault(d, []).append(backbone.text_of(x, "\n".join(lines[:d])))
    every = [t for d in sorted(by_depth) for t in by_depth[d]]
    backend.encode(every[:4])  # warm-up
    start = time.perf_counter()
    shared = backend.encode(every)
    one_call = time.perf_counter() - start
    start = time.perf_counter()
    separate = np.concatenate([backend.encode(by_depth[d]) for d in sorted(by_depth)])
    per_depth = time.perf_counter() - start
    # equal up to rounding: in bf16, batching the same text with other texts moves its features as much
    cosine = (shared * separate).sum(1) / np.linalg.norm(shared, axis=1) / np.linalg.norm(separate, axis=1)
    assert cosine.min() > 0.999, f"shared and separate features differ (cosine {cosine.min():.5f})"
    return one_call, per_depth, len(every)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=int, default=192, help="texts the rewards are fitted and scored on")
    ap.add_argument("--epochs", type=int, default=2, help="passes of each fit")
    args = ap.parse_args()
    import torch

    native = native_bf16("cuda" if torch.cuda.is_available() else "cpu")
    texts, labels = problems(args.texts)
    held = np.arange(len(texts)) % 5 == 0  # a fifth of the problems, both labels
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for name, bf16 in (("bf16", True), ("fp32", False)):
            seconds, held_auc, model = fit(texts, labels, held, args.epochs, bf16, Path(tmp) / name)
            results[name] = {"fit_s": seconds, "auc": held_auc, "score_s": score_seconds(model, texts),
                             "saved_dtype": json.loads((Path(tmp) / name / backbone.MODEL_FILE).read_text())["dtype"]}
            print(f"{name}: fit {seconds:.1f} s, held-out AUC {held_auc:.3f}, scoring {len(texts)} texts "
                  f"{results[name]['score_s']:.1f} s (saved {results[name]['saved_dtype']})", flush=True)
    one_call, per_depth, n = encode_sharing(texts)
    print(f"encode: {n} texts (16 solutions and their line prefixes) in one call {one_call:.2f} s, "
          f"one call per depth {per_depth:.2f} s")
    print(f"fit_bf16_speedup={results['fp32']['fit_s'] / results['bf16']['fit_s']:.2f} "
          f"score_bf16_speedup={results['fp32']['score_s'] / results['bf16']['score_s']:.2f} "
          f"auc_fp32={results['fp32']['auc']:.3f} auc_bf16={results['bf16']['auc']:.3f} "
          f"encode_sharing_speedup={per_depth / one_call:.2f} native_bf16={native}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
