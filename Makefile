# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.featx-installed
DEMO ?= demo

.PHONY: demo test test-fast install bench clean-demo

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# the tests not marked slow: a quick check while working (make test before a commit)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo.sh $(DEMO)

bench: $(STAMP)
	$(PY) scripts/bench_extract.py
	$(PY) scripts/bench_heads.py
	$(PY) scripts/bench_finetune.py

clean-demo:
	rm -rf $(DEMO)
