# Two commands do everything on a fresh Debian/Ubuntu machine with Python 3.11:
#   make demo   -> set-up into .venv, then `tamis demo` (writes tamis-demo/index.html)
#   make test   -> same set-up, then the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tamis-installed
CONSTRAINTS := $(VENV)/constraints.txt
TORCH_VERSION ?= 2.13.0

.PHONY: setup demo test lint bench-env clean data

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# torch first: an unpinned torch pulled by another package would be a multi-GB CUDA build.
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	@$(BIN)/python -c "import torch; print('torch==' + torch.__version__.split('+')[0])" 2>/dev/null > $(CONSTRAINTS)
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[all]'
	@$(MAKE) --no-print-directory data
	@touch $(STAMP)

# Fashion-MNIST from Debian's archive where we are root; the loader falls back
# to scikit-learn's digits (with a notice) when it is missing.
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
	  || echo "notice: could not install dataset-fashion-mnist; the demo falls back to sklearn digits"; \
	fi

demo: $(STAMP)
	$(BIN)/tamis demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

# Competing libraries for benchmarks/ (never needed by demo or tests).
bench-env: $(STAMP)
	$(BIN)/pip install -c $(CONSTRAINTS) -e '.[bench]'

clean:
	rm -rf $(VENV) tamis-demo .pytest_cache
