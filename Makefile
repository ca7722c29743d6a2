# The two entry points: `make book` builds the book, `make test` runs every test.
# Both create the virtual environment on first use: torch (pinned, CPU) first, then everything else.

PYTHON ?= python3
VENV ?= .venv
PROFILE ?= quick
# Real data sets to score beside the embedded ones: DATA=adapter=folder[,adapter=folder] (see README)
DATA ?=
# Where models train and explain: auto (CUDA when torch sees a GPU), cpu or cuda
DEVICE ?= auto
BIN := $(VENV)/bin
STAMP := $(VENV)/.medlit-installed

.PHONY: book test unit nbval clean-results clean

book: $(STAMP)
	$(BIN)/medlit book --profile $(PROFILE) --device $(DEVICE) $(if $(DATA),--data "$(DATA)")

test: $(STAMP)
	$(BIN)/python -m pytest tests chapters --nbval-lax -q

unit: $(STAMP)
	$(BIN)/python -m pytest tests -q

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

clean-results:
	rm -rf results _build

clean: clean-results
	rm -rf $(VENV)
