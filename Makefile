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

# The main job: a GSM8K scaling sweep on the default model, then its report. Run again to resume.
RUN ?= runs/gsm8k-main
SWEEP := --task gsm8k --model qwen2.5-coder-1.5b \
  --strategies cot,self_consistency,adaptive_consistency,program_aided,hybrid_consistency --budgets 1,2,4 \
  --limit 30 --seed 0

run: setup
	$(BIN)/ponder models pull qwen2.5-coder-1.5b
	if [ -f $(RUN)/store.sqlite ]; then $(BIN)/ponder sweep --resume $(RUN); \
	else $(BIN)/ponder sweep $(SWEEP) --out $(RUN); fi
	$(BIN)/ponder report $(RUN)

test: setup
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends chromium) || echo "no chromium: the HTML render test will skip"
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
