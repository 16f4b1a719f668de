# The two set-up commands: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip "setuptools>=69" wheel  # the wheel test builds with no isolation
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/linerisk demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

# Each script prints one table; the 1M-user world is simulated once into benchmarks/out/.
bench: $(STAMP)
	$(BIN)/python benchmarks/simulate.py
	$(BIN)/python benchmarks/features.py
	$(BIN)/python benchmarks/train.py --sample-users 0.2
	$(BIN)/python benchmarks/score.py
	$(BIN)/python benchmarks/treeshap.py
	$(BIN)/python benchmarks/explain.py
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/serve.py

clean:
	rm -rf $(VENV) .linerisk
