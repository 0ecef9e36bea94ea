# Two commands do all set-up on a fresh machine: `make demo` and `make test` (`make docs` builds the site).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.featx-installed
DEMO ?= demo

.PHONY: demo test test-fast install docs bench clean-demo chromium

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# headless Chromium for the report's browser test: installed (Debian's chromium) when absent and root, else skipped
chromium:
	@bash scripts/ensure_chromium.sh

test: $(STAMP) chromium
	$(PY) -m pytest -q

# the tests not marked slow (under a minute on 2 cores): a quick check while working (make test before a commit)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# the documentation site into site/ (the dev extra includes the docs extra); any warning fails the build
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

demo: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo.sh $(DEMO)

bench: $(STAMP)
	$(PY) scripts/bench_extract.py
	$(PY) scripts/bench_heads.py
	$(PY) scripts/bench_finetune.py

clean-demo:
	rm -rf $(DEMO)
