# The two commands a newcomer needs: `make lab` and `make test`.
# Both create .venv (if missing) and install the lab first: `make lab` what the notebooks need, `make test` the
# test tools on top. Everything comes from the public package index, at the versions in constraints.txt.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8888
LAB_ARGS ?=
# Which build of PyTorch: `default` is the public index's (on Linux x86-64 the CUDA build: the lab's install then
# downloads 2.9 GB and takes 5.7 GB on disk, and it runs on a machine without a GPU too); `make lab TORCH=cpu` takes
# PyTorch's CPU-only build from PyTorch's own index (0.4 GB to download, 1.7 GB on disk; benchmarks/install_routes.py).
# macOS and Windows get their one build either way.
TORCH ?= default
TORCH_INDEX_default :=
TORCH_INDEX_cpu := --extra-index-url https://download.pytorch.org/whl/cpu
TORCH_INDEX := $(or $(TORCH_INDEX_$(TORCH)),$(if $(filter default,$(TORCH)),,$(error TORCH must be default or cpu, not '$(TORCH)')))
LAB_STAMP := $(VENV)/.installed-lab
TEST_STAMP := $(VENV)/.installed-test
# The Hugging Face hub (GPT-2 in notebooks 08 and 12) and the published classroom kit in the tests: off, so that a
# run gives the same result with or without a network and whatever a machine's caches hold (tests/test_hub.py and
# tests/test_zoo_kit.py test the online paths against local copies), and every notebook trains what it needs.
TEST_ENV := LABKIT_HUB=off LABKIT_KIT_URL=off LABKIT_PROGRESS=off
# nbval settings shared by `make test` and `make test-notebooks`
NBVAL := --nbval --nbval-current-env --nbval-cell-timeout=900 --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider
# The notebooks re-run with the numerics of a different kind of CPU than this one (tests/portable_env.sh says
# which, and why) and compared with outputs saved on this kind.
PORTABLE_ENV = $(shell bash tests/portable_env.sh)
NB ?= notebooks
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: lab test test-unit test-notebooks test-portable nbval-coverage test-browser test-gpu install install-test browser-deps \
	execute execute-all constraints check-install wheelhouse kit site site-serve clean

# `make lab`: what the notebooks need, nothing else. torch first and pinned: an unpinned torch (or a package that
# needs torch, installed before it) would take the newest build, not the tested one.
$(LAB_STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt $(TORCH_INDEX) torch
	$(PY) -m pip install -q -c constraints.txt -e ".[lab]"
	@# up to version 0.1 the lab was installed under the name labkit: an old checkout's .venv still has it
	@if $(PY) -m pip show -q labkit >/dev/null 2>&1; then $(PY) -m pip uninstall -q -y labkit; fi
	@touch $(LAB_STAMP)

# `make test`: the test runners and the references the tests compare with, on top of the lab.
$(TEST_STAMP): $(LAB_STAMP)
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	@touch $(TEST_STAMP)

install: $(LAB_STAMP)
install-test: $(TEST_STAMP)

lab: $(LAB_STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --ip=127.0.0.1 --port=$(PORT) $(ROOT_FLAG) $(LAB_ARGS)

# constraints.txt and environment.yml, regenerated from pyproject.toml (a universal resolution on the public index;
# tools/constraints.py says why torch's own pins are left out). `make constraints ARGS=--upgrade` for the newest.
constraints: $(TEST_STAMP)
	$(PY) -m pip install -q uv
	$(PY) tools/constraints.py $(ARGS)

# A classroom kit: every zoo model built (in dependency order; 10 minutes on a 2-core AMD EPYC) and packed with
# the data sets and their checksums into kit.tar (python -m labkit.zoo --help for the other commands).
kit: $(LAB_STAMP)
	$(PY) -m labkit.zoo build --all
	$(PY) -m labkit.zoo pack kit.tar

# A classroom without internet: the wheels for each platform of the room, with PyTorch's CPU build, checked to
# install from the folder alone (tools/wheelhouse.py; ARGS="--platform linux-x86_64 --python 3.12.8" for others).
wheelhouse: $(TEST_STAMP)
	$(PY) tools/wheelhouse.py $(ARGS)

# Would a learner's install resolve on the public index alone, on every platform and on Colab? (also in make test)
check-install: $(TEST_STAMP)
	$(PY) tools/check_install.py

# Chromium drives the browser test of the offline bertviz views; installed when we are root with apt.
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Debian's chromium for the browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "Could not install chromium: the browser test will be skipped"; \
	  else echo "No /usr/bin/chromium and not root with apt-get: the browser test will be skipped"; fi; \
	fi

# Unit and reference tests (two workers); the course website built from the saved notebooks; then the browser tests
# on their own (the website's pages, and notebook 04 in JupyterLab, which times its attention loops: beside another
# worker's tests those timings are not the machine's); then every notebook with the numerics of another CPU.
test: $(TEST_STAMP) browser-deps
	env $(TEST_ENV) $(PY) -m pytest tests -q -rs -n 2 --dist loadfile -m "not browser"
	$(PY) tools/build_site.py
	env $(TEST_ENV) $(PY) -m pytest tests -q -rs -m browser
	@$(MAKE) --no-print-directory test-portable

test-unit: $(TEST_STAMP)
	env $(TEST_ENV) $(PY) -m pytest tests -q -rs -n 2 --dist loadfile -m "not browser"

# The notebooks on this CPU as it is: make test-notebooks [NB=notebooks/04_multi_head_attention.ipynb]
test-notebooks: $(TEST_STAMP)
	env $(TEST_ENV) $(PY) -m pytest $(NB) $(NBVAL) -q

# The notebooks as another kind of CPU computes them: make test-portable [NB=...]
test-portable: $(TEST_STAMP)
	@echo "numerics of another CPU: $(PORTABLE_ENV)"
	env $(PORTABLE_ENV) $(TEST_ENV) $(PY) -m pytest $(NB) $(NBVAL) -q

# How many code cells nbval compares and how many it ignores, per notebook
nbval-coverage:
	@$(or $(wildcard $(PY)),python3) tests/nbval_coverage.py notebooks

test-browser: $(TEST_STAMP) browser-deps
	env $(TEST_ENV) $(PY) -m pytest tests -q -m browser

# On a machine with a CUDA GPU (not part of `make test`): every notebook on the GPU under nbval's lax mode (each cell
# and assert must run; the saved digits are the CPU's, so they are not compared) and notebook 16's GPU figures,
# recorded in benchmarks/results/gpu.json (benchmarks/gpu.py).
test-gpu: $(TEST_STAMP)
	@$(PY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'make test-gpu needs a CUDA GPU: torch.cuda.is_available() is False here')"
	env $(TEST_ENV) $(PY) benchmarks/gpu.py

# The course website from the saved notebooks (nothing re-executed): build/site/index.html (tools/build_site.py).
# `make site-serve` then serves it on http://127.0.0.1:$(PORT).
SITE_STAMP := $(VENV)/.installed-site
$(SITE_STAMP): $(LAB_STAMP)
	$(PY) -m pip install -q -c constraints.txt -e ".[site]"
	@touch $(SITE_STAMP)

site: $(SITE_STAMP)
	$(PY) tools/build_site.py

site-serve: site
	$(PY) -m http.server -d build/site -b 127.0.0.1 $(PORT)

# Regenerate a notebook's stored outputs (never hand-edit outputs): make execute NB=notebooks/00_start_here.ipynb
execute: $(TEST_STAMP)
	@test -n "$(NB)" || (echo "usage: make execute NB=notebooks/NN_name.ipynb" && exit 2)
	env $(TEST_ENV) $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=900 "$(NB)"

execute-all: $(TEST_STAMP)
	for nb in notebooks/[0-9][0-9]_*.ipynb; do \
	  env $(TEST_ENV) $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=900 "$$nb" || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache
