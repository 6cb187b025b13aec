# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: install run test lint typecheck pytest bench bench-scale clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

install: $(STAMP)

run: install
	$(BIN)/statecast serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

test: lint typecheck pytest

# The reference comparison: poll vs push vs floor at S = 0 and 12, P = 5 (about 2.5 minutes).
bench: install
	$(BIN)/statecast bench --modes poll,push,floor --agents 8 --rate 5 --spectators 0,12 --poll-hz 5 --duration 15 --warmup 3 --json bench-results.json --report bench-report

# The collapse curve: poll vs push vs the raw floor from 10 to 10,000 spectators, one room of
# 8 agents x 5 actions/s (about 6 minutes; report and plots in bench-scale-report/).
bench-scale: install
	$(BIN)/statecast bench --modes poll,push,raw --agents 8 --rate 5 --spectators 10,100,1000,3000,10000 --poll-hz 5 --duration 10 --warmup 3 --no-live --json bench-scale.json --report bench-scale-report

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
