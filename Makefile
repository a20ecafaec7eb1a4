# Two commands for a newcomer on a fresh machine:
#   make demo   install, make sample data, preprocess → train → infer on it (offline, local)
#   make test   install, then run the whole test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo
export USER ?= spot-batch
# Metaflow's local @parallel (TrainFlow --nodes K) starts the other nodes as `python` from PATH.
export PATH := $(abspath $(BIN)):$(PATH)
# A flow run starts a Python process per task and per card refresh, and the suite starts
# hundreds: each compiles what it imports unless bytecode is cached, so caching stays on here.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# --no-compile: pip would compile every module of torch & co. (~80 s); the few hundred that
# are imported compile once, on first import (~15 s).
install: $(BIN)/python
	$(BIN)/pip install --quiet --no-compile -e '.[dev]'

demo: install
	$(BIN)/spot-batch sample-data $(DEMO)/images --count 240
	$(BIN)/python flows/preprocess.py run --input $(DEMO)/images --output $(DEMO)/preprocessed --shard-size 64 --max-shards 4
	$(BIN)/python flows/train.py run --input $(DEMO)/images --output $(DEMO)/train
	# Held-out photos (another seed: new crops, scales and colours) for an honest accuracy.
	$(BIN)/spot-batch sample-data $(DEMO)/holdout --count 120 --seed 1
	$(BIN)/python flows/infer.py run --input $(DEMO)/holdout --output $(DEMO)/predictions --model latest --shard-size 64 --max-shards 4
	$(BIN)/spot-batch verify $(DEMO)/predictions --input $(DEMO)/holdout
	$(BIN)/spot-batch predictions $(DEMO)/predictions --labels $(DEMO)/holdout

# pytest: one worker per core (at most 4: a flow test's tasks hold ~800 MB each). A module goes
# whole to one worker (its tests share module-scoped runs), in collection order: the long flow
# modules (tests/deploy, faults, flows) first, the many short unit modules fill the end evenly.
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadscope --no-loadscope-reorder

clean:
	rm -rf $(DEMO) .metaflow
