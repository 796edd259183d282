# relabel-rl: `make demo` and `make test` are all a new user types; both run `setup` when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
export PATH := $(CURDIR)/$(VENV)/bin:/usr/games:$(PATH)
# Tests and demos never reach a model hub.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo experiment test test-slow bench lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml examples/plugin_verifier/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# torch first, pinned: it takes the machine's local CPU wheel instead of gigabytes of CUDA.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	@# The example verifier plugin, so its entry-point discovery is tested for real.
	$(PY) -m pip install -q --no-deps -e examples/plugin_verifier
	@if ! command -v gnugo >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing gnugo (Debian package, into /usr/games)"; \
	    (apt-get install -y -qq gnugo >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq gnugo >/dev/null)) \
	      || echo "warning: could not install gnugo; GnuGo tests will be skipped"; \
	  else \
	    echo "warning: gnugo not found and not root; run 'sudo apt-get install gnugo' for the GnuGo tests"; \
	  fi; \
	fi
	@# bubblewrap isolates python_code's model-written code (docs/sandbox.md); without it a weaker fallback runs.
	@if ! command -v bwrap >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing bubblewrap (Debian package, the python_code sandbox)"; \
	    (apt-get install -y -qq bubblewrap >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null)) \
	      || echo "warning: could not install bubblewrap; python_code will use the weaker rlimit fallback sandbox"; \
	  else \
	    echo "warning: bubblewrap (bwrap) not found and not root; run 'sudo apt-get install bubblewrap', or python_code uses the weaker rlimit fallback sandbox"; \
	  fi; \
	fi
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/llm-rl compare recipes/quickstart.yaml
	@echo "The report is runs/quickstart/report.md (figures, tables/, summary.json and per-run logs beside it)."

# The length sweep (recipes/experiment.yaml): 5 seeds x 3 lengths x both feedback settings, then the variance probe
# and the report. `compare` runs its runs and the probe's shards in one process per core (--workers auto: the tiny
# model runs one torch thread). Resumable: run it again after an interruption (finished runs are skipped); more
# seeds: llm-rl compare recipes/experiment.yaml --compare.seeds "[0, 1, ..., 9]".
experiment: setup
	$(VENV)/bin/llm-rl compare recipes/experiment.yaml
	@echo "The report is runs/experiment/report.md (headline.png/.pdf, tables/ as md/csv/tex beside it)."

test: setup
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

bench: setup
	@# search speed vs OpenSpiel's MCTS (and vs the code before the speed work), and the share of wall time
	@# outside a batched network evaluator
	$(PY) benchmarks/bench_tree_search.py
	@# 5x5 AlphaZero self-play positions/s vs the code before the speed work, and where the time goes
	OMP_NUM_THREADS=1 $(PY) benchmarks/bench_go_selfplay.py
	@# tree-expansion sampling (one shared prefill, K candidates) vs model.generate as GRPO samples
	OMP_NUM_THREADS=1 $(PY) benchmarks/bench_generation.py
	@# generation backends through the interface the arms call (vLLM row skipped without a GPU)
	OMP_NUM_THREADS=1 $(PY) benchmarks/bench_backends.py

lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
