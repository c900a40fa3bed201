# Two commands on a fresh machine: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fetalhc-installed
# The CPU build of torch; installed before the project so its range installs nothing more.
TORCH  ?= torch==2.13.0

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fetalhc demo

test: $(STAMP)
	$(BIN)/lint-imports  # the layering contracts in pyproject.toml ([tool.importlinter])
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/fetalhc bench

clean:
	rm -rf var/demo .pytest_cache
