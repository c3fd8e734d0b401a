# The two commands of the README: `make run` (the main job) and `make test` (the tests).
# Each sets itself up on a fresh machine: a .venv, the project with its extras, llama-cpp-python built once
# and kept as a wheel in $(PONDER_HOME)/wheels, and the embedded models it needs.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export PONDER_HOME ?= $(HOME)/.cache/ponder
WHEELS := $(PONDER_HOME)/wheels
LLAMA := llama-cpp-python==0.3.36

.PHONY: setup run test lint bench clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel
	mkdir -p $(WHEELS)
	ls $(WHEELS)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || \
	  $(BIN)/pip wheel --no-deps "$(LLAMA)" -w $(WHEELS)
	$(BIN)/pip install -q --find-links $(WHEELS) -e ".[all,dev]" "llama-cpp-python[server]==0.3.36"
	$(BIN)/ponder data pull
	touch $@

run: setup
	$(BIN)/ponder models pull qwen2.5-coder-1.5b
	$(BIN)/ponder ask --model qwen2.5-coder-1.5b --n 8 \
	  "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?"

test: setup
	$(BIN)/ponder models pull smollm2-135m
	$(BIN)/ponder models pull qwen2.5-coder-0.5b
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench: setup
	$(BIN)/ponder models pull qwen2.5-coder-0.5b
	$(BIN)/ponder bench engine

clean-venv:
	rm -rf $(VENV)
