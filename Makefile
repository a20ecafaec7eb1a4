# Two commands for a newcomer on a fresh machine:
#   make demo   install, make sample data, preprocess → train → infer on it (offline, local)
#   make test   install, then run the whole test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo
export USER ?= spot-batch

.PHONY: install demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

demo: install
	$(BIN)/python -m steps.sample_data $(DEMO)/images --count 240
	$(BIN)/python flows/preprocess.py run --input $(DEMO)/images --output $(DEMO)/preprocessed --shard-size 64
	$(BIN)/python flows/train.py run --input $(DEMO)/images --output $(DEMO)/train
	$(BIN)/python flows/infer.py run --input $(DEMO)/images --output $(DEMO)/predictions --model latest --shard-size 64
	$(BIN)/python -m steps.verify $(DEMO)/predictions --input $(DEMO)/images
	$(BIN)/python -m steps.predictions $(DEMO)/predictions --labels $(DEMO)/images

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(DEMO) .metaflow
