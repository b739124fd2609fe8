# Quickstart: `make demo` and `make test` work on a fresh machine: each creates .venv if missing and
# installs the package (editable, with the dev extra) before it runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.alignbench-installed

.PHONY: install demo lint test test-fast bench example-db clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstalled when pyproject.toml changes; pip takes torch/torchvision from this machine's disk.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default (efficientnet_lite0, real ImageNet weights, on the embedded
# `sample` dataset; offline), its DCLS conversion (from-dense), the same command again (answered from
# the store), the same default model on `scene-sample` (ten NUS scenes with real human eye-tracking
# fixations: alignment with where people looked), then a DCLS model whose positions `alignbench train` moved (on the same ten images; an
# earlier ./demo-train is resumed: finished, it is only recorded again), its score, the comparisons — DCLS vs
# baseline, where from-dense is identical and the trained positions are not, and trained vs parent —
# the report of what is stored in ./alignbench.db, then the same report as a static HTML page with
# the galleries of maps (its path is printed last).
DEMO_TRAIN := demo-train
demo: install
	$(BIN)/alignbench models
	$(BIN)/alignbench score
	$(BIN)/alignbench score efficientnet_lite0 --dcls
	$(BIN)/alignbench score
	$(BIN)/alignbench score --dataset scene-sample
	$(BIN)/alignbench score efficientnet_lite0 --dcls --dataset scene-sample
	$(BIN)/alignbench train efficientnet_lite0 --dcls --data sample \
		--out $(DEMO_TRAIN) --tag lite0-dcls-demo --steps 8 --batch-size 10 --positions-lr 0.05 \
		$$(test -f $(DEMO_TRAIN)/last.pt && echo --resume $(DEMO_TRAIN)/last.pt)
	$(BIN)/alignbench score --trained lite0-dcls-demo
	$(BIN)/alignbench compare
	$(BIN)/alignbench compare --against parent
	$(BIN)/alignbench report
	$(BIN)/alignbench report --html alignbench-report

# ruff (configured in pyproject.toml): the lint rules, and the formatter's check (no file is changed).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The whole suite, after the lint. The store tests run against PostgreSQL too and the HTML report
# opens in headless Chromium: both are Debian packages, installed here where missing
# (scripts/system_packages.sh).
test: lint
	scripts/system_packages.sh
	$(BIN)/python -m pytest -q

# The suite without the tests that need a PostgreSQL server, Chromium, several torchrun processes,
# or minutes (markers in pyproject.toml, set in tests/conftest.py): no Debian packages installed.
FAST := not postgres and not browser and not ddp and not slow
test-fast: install
	$(BIN)/python -m pytest -q -m "$(FAST)"

bench: install
	for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

# Rebuild alignbench.db.example with the project's own commands (run after a schema change).
example-db: install
	rm -f alignbench.db.example
	ALIGNBENCH_DB=sqlite:///alignbench.db.example $(BIN)/alignbench score
	ALIGNBENCH_DB=sqlite:///alignbench.db.example $(BIN)/alignbench score --explainer gradcam
	$(BIN)/python -c "import sqlite3; c = sqlite3.connect('alignbench.db.example'); c.execute('PRAGMA wal_checkpoint(TRUNCATE)'); c.execute('PRAGMA journal_mode=DELETE'); c.close()"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
