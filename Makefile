# The two commands a newcomer needs: `make lab` and `make test`.
# Both create .venv (if missing) and install labkit with its extras first.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8888
LAB_ARGS ?=
# nbval settings shared by `make test` and `make test-notebooks`
NBVAL := --nbval --nbval-current-env --nbval-cell-timeout=900 --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider
# The portability check: the notebooks re-run with the numerics of a different kind of CPU than this one
# (tests/portable_env.sh says which, and why) and are compared with outputs saved on this kind.
PORTABLE_ENV = $(shell bash tests/portable_env.sh)
NB ?= notebooks
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: lab test test-unit test-notebooks test-portable nbval-coverage test-browser install browser-deps execute execute-all clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# torch first and pinned: an unpinned torch (or bertviz before torch) pulls a multi-GB CUDA build
	$(PY) -m pip install -q -c constraints.txt torch
	$(PY) -m pip install -q -c constraints.txt -e ".[lab,test]"
	@touch $(STAMP)

install: $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --ip=127.0.0.1 --port=$(PORT) $(ROOT_FLAG) $(LAB_ARGS)

# Chromium drives the browser test of the offline bertviz views; installed when we are root with apt.
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Debian's chromium for the browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "Could not install chromium: the browser test will be skipped"; \
	  else echo "No /usr/bin/chromium and not root with apt-get: the browser test will be skipped"; fi; \
	fi

# Unit and reference tests (two workers), then the browser tests on their own (notebook 04, which they run in
# JupyterLab, times its attention loops: beside another worker's tests those timings are not the machine's),
# then every notebook under the portability check.
test: $(STAMP) browser-deps
	$(PY) -m pytest tests -q -rs -n 2 --dist loadfile -m "not browser"
	$(PY) -m pytest tests -q -rs -m browser
	@$(MAKE) --no-print-directory test-portable

test-unit: $(STAMP)
	$(PY) -m pytest tests -q -rs -n 2 --dist loadfile -m "not browser"

# The notebooks on this CPU as it is: make test-notebooks [NB=notebooks/04_multi_head_attention.ipynb]
test-notebooks: $(STAMP)
	LABKIT_PROGRESS=off $(PY) -m pytest $(NB) $(NBVAL) -q

# The notebooks as another kind of CPU computes them: make test-portable [NB=...]
test-portable: $(STAMP)
	@echo "portability check: $(PORTABLE_ENV)"
	env $(PORTABLE_ENV) LABKIT_PROGRESS=off $(PY) -m pytest $(NB) $(NBVAL) -q

# How many code cells nbval compares and how many it ignores, per notebook
nbval-coverage:
	@$(or $(wildcard $(PY)),python3) tests/nbval_coverage.py notebooks

test-browser: $(STAMP) browser-deps
	$(PY) -m pytest tests -q -m browser

# Regenerate a notebook's stored outputs (never hand-edit outputs): make execute NB=notebooks/00_start_here.ipynb
execute: $(STAMP)
	@test -n "$(NB)" || (echo "usage: make execute NB=notebooks/NN_name.ipynb" && exit 2)
	$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=900 "$(NB)"

execute-all: $(STAMP)
	for nb in notebooks/[0-9][0-9]_*.ipynb; do \
	  $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=900 "$$nb" || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache
