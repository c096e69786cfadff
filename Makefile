# Everyday tasks. Each target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-server lint typecheck pytest bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/giftledger demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The tests run in TEST_WORKERS processes (pytest-xdist), each with its own embedded PostgreSQL
# (or its own database on DATABASE_URL's server) and its own broker; a module's tests stay in one
# process. Most of a test's time is waiting (consumer groups forming, processes starting), so on
# two cores 3 processes take a third of the time of one, and 4 as long as 3 (README, Tests).
# TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 3
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_PARALLEL)

test: lint typecheck pytest

# The tests that depend on the server, against DATABASE_URL (CI: the machine's PostgreSQL 15).
test-server: $(STAMP)
	$(BIN)/pytest -m server $(PYTEST_PARALLEL)

bench: $(STAMP)
	$(BIN)/python -m bench.ledger_bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .giftledger .cache
