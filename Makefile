# `make demo` runs the whole pipeline on synthetic data; `make test` runs the tests.
# Both create the virtual environment .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/yt8m demo $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check yt8m tests bench *.py
	$(BIN)/ruff format --check yt8m tests bench *.py
	$(BIN)/python -m pytest -n 2 tests

lint: $(STAMP)
	$(BIN)/ruff check yt8m tests bench *.py

format: $(STAMP)
	$(BIN)/ruff format yt8m tests bench *.py
	$(BIN)/ruff check --fix yt8m tests bench *.py

clean:
	rm -rf $(VENV) build *.egg-info
