# Every target sets up its own .venv, so a fresh clone needs only Python 3.11, pip and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench soak clean tools docs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cloudtrail-adapter demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The alert and dashboard tests run the real promtool and Prometheus (Debian's package).
tools:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends prometheus >/dev/null; } || { \
	  echo "make test needs promtool and prometheus: apt-get install prometheus (as root)"; \
	  exit 1; }

test: lint tools
	$(BIN)/pytest -q

# The README's key table is made from the keys' declarations (cloudtrail_adapter/config/values.py).
docs: $(STAMP)
	$(BIN)/python -m cloudtrail_adapter.config.reference README.md

bench: $(STAMP)
	$(BIN)/python -m bench

soak: $(STAMP)
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) state .pytest_cache .mypy_cache .ruff_cache
