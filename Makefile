# The two entry points: `make book` builds the book, `make test` runs every test.
# Both create the virtual environment on first use: torch (pinned, CPU) first, then everything else.

PYTHON ?= python3
VENV ?= .venv
PROFILE ?= quick
# Real data sets to score beside the embedded ones: DATA=adapter=folder[,adapter=folder] (see README)
DATA ?=
# Where models train and explain: auto (CUDA when torch sees a GPU), cpu or cuda
DEVICE ?= auto
# Where chapters score their shards: empty (in the chapter's process), local:N or a Dask scheduler's address
SCHEDULER ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.medlit-installed
# The maths renderer ships with the book (npm registry, at install time): the pages load nothing from the network.
MATHJAX_VERSION := 3.2.2
MATHJAX := $(VENV)/mathjax/node_modules/mathjax/es5/tex-chtml.js

.PHONY: book test unit browser-check clean-results clean

book: $(STAMP) $(MATHJAX)
	$(BIN)/medlit book --profile $(PROFILE) --device $(DEVICE) $(if $(DATA),--data "$(DATA)") \
		$(if $(SCHEDULER),--scheduler $(SCHEDULER))

# Unit tests in parallel workers (one thread each: most are too small to use two), then the chapters under nbval:
# the first (it trains the default models the others use), the method chapters side by side, and the comparison
# chapter last (it reads the cubes the method chapters write).
CHAPTERS := $(sort $(wildcard chapters/*.ipynb))
FIRST_CHAPTER := $(firstword $(CHAPTERS))
LAST_CHAPTER := $(lastword $(CHAPTERS))
METHOD_CHAPTERS := $(filter-out $(FIRST_CHAPTER) $(LAST_CHAPTER),$(CHAPTERS))

test: $(STAMP) $(MATHJAX)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests -q --ignore=tests/browser -n auto --maxprocesses 4 --dist loadfile
	$(BIN)/python -m pytest $(FIRST_CHAPTER) --nbval-lax -q
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(METHOD_CHAPTERS) --nbval-lax -q -n 3 --dist loadfile
	$(BIN)/python -m pytest $(LAST_CHAPTER) --nbval-lax -q

# The book as a reader meets it: build the smoke-profile book, open every page in headless Chromium, offline
# (needs the chromium and chromium-driver system packages; .ci/run installs them).
browser-check: $(STAMP) $(MATHJAX)
	$(BIN)/medlit book --profile smoke --device cpu
	$(BIN)/python -m pytest tests/browser -q

unit: $(STAMP)
	$(BIN)/python -m pytest tests -q --ignore=tests/browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

$(MATHJAX):
	npm install --silent --no-save --no-audit --no-fund --prefix $(VENV)/mathjax mathjax@$(MATHJAX_VERSION)
	test -f $(MATHJAX)

clean-results:
	rm -rf results _build

clean: clean-results
	rm -rf $(VENV)
