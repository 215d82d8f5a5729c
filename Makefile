# Every target creates or reuses .venv; nothing needs installing by hand.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# Browser tests use Debian's /usr/bin/chromium (`make browser`); playwright never downloads one.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
# Bytecode caches on, whatever the calling shell says: with PYTHONDONTWRITEBYTECODE every pytest
# run re-compiles and re-rewrites ~450 modules (18 s of collection) and every `python -m clipembed`
# a test starts compiles clipembed again.
unexport PYTHONDONTWRITEBYTECODE
# `make test-fast`: the tests that need no PostgreSQL, no process of their own, no browser and no
# local model (markers set by tests/conftest.py). It has no database on purpose: a test that
# reaches for one unmarked fails here instead of slowing the loop down.
FAST := not db and not subprocess and not browser and not local_model and not slow
NO_DATABASE := postgresql://test-fast-has-no-database@127.0.0.1:9/none

.PHONY: install browser bench-tools demo test test-fast lint format bench clean

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: this machine ships a CPU build of 2.13.0; anything else pulls CUDA.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[local,dev]'
	-@$(MAKE) --no-print-directory browser
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium for the browser tests (tests/plugins/browser.py), when missing and we may
# install it (root, apt-get). Never fails: without it the browser tests skip with the reason.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "browser: /usr/bin/chromium missing and apt-get unusable here; browser tests will skip"; \
	else \
	  echo "browser: installing Debian's chromium"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq chromium >/dev/null 2>&1 \
	  || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; } \
	  || echo "browser: could not install chromium; browser tests will skip"; \
	fi

# Debian's wrk for the overload benchmark (bench/wrk_driver.py): a load generator in C, so that
# the client does not take the cores it measures. Benchmarks only; the tests never need it.
bench-tools:
	@command -v wrk >/dev/null 2>&1 || { export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq wrk >/dev/null 2>&1 \
	  || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk >/dev/null 2>&1; }; }
	@command -v wrk >/dev/null 2>&1 && echo "wrk: $$(command -v wrk)"

demo: $(STAMP)
	$(BIN)/python -m clipembed.demo

# Test processes (pytest-xdist): each has its own PostgreSQL cluster, fake provider and browser;
# `worksteal` moves queued tests to whichever process is free (the acceptance tests are long).
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal

test-fast: $(STAMP)
	CLIPEMBED_TEST_DATABASE_URL=$(NO_DATABASE) $(BIN)/pytest -q -p no:cacheprovider -m "$(FAST)" tests/unit tests/integration

lint: $(STAMP)
	$(BIN)/ruff check clipembed tests bench
	$(BIN)/ruff format --check clipembed tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff format clipembed tests bench
	$(BIN)/ruff check --fix clipembed tests bench

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
