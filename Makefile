# r1pipe: `make demo` runs the tiny default, `make test` the test suite. Both install into
# .venv first. torch is pinned to 2.13.0, whose CPU build is what CPU machines get.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Applies to every pip call, build environments of source packages included, so nothing can
# swap our CPU torch for the newest CUDA build.
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: install sysdeps demo test test-all test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and exactly pinned: with it installed, nothing below pulls a CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,trackers]"
	touch $(STAMP)

install: $(STAMP)

# bubblewrap isolates the programs of code tasks (r1pipe/rewards/isolation.py); its tests run
# it. Installed with apt where we are root, else named.
sysdeps:
	@command -v bwrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; \
	  else echo "note: bubblewrap (bwrap) is not installed; code tasks need it to isolate programs"; fi; }

demo: $(STAMP)
	$(BIN)/r1pipe run-all run.dir=runs/tiny

test: $(STAMP) sysdeps
	$(BIN)/python -m pytest -q -m "not extended" $(PYTEST_ARGS)

# everything, the extended stage tests too (about 5 more minutes on 2 cores)
test-all: $(STAMP) sysdeps
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP) sysdeps
	$(BIN)/python -m pytest -q -m "not slow and not extended" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check r1pipe tests scripts
	$(BIN)/ruff format --check r1pipe tests scripts

bench: $(STAMP)
	$(BIN)/pip install -q -e ".[dev,bench]"
	$(BIN)/python scripts/bench_sft.py
	$(BIN)/python scripts/bench_grpo.py

clean:
	rm -rf $(VENV) runs
