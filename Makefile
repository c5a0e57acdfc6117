# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs pinned versions (constraints.txt) first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test,bench,rl,lora,tensorboard,wandb,mlflow,embeddings,meteor,serve,ray,trl,verifiers]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rftkit demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	$(BIN)/mypy
	$(BIN)/ruff check schemas graders rl tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/grader_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info
