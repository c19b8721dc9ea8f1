# vhp-lightning developer commands. Every target installs into .venv first if needed.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.install-stamp
PYTEST  := $(BIN)/python -m pytest

.PHONY: install train test test-all lint format bench sweep clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## VHP + REWO on the built-in pendulum data (outputs/<date>/<time>/).
train: $(STAMP)
	$(BIN)/python -m vhp_lightning.train $(ARGS)

## The fast suite (what CI runs). Exit code 5 (no tests collected) fails.
test: $(STAMP)
	$(PYTEST) -m "not slow" -q $(ARGS)

## Everything, slow tests included.
test-all: $(STAMP)
	$(PYTEST) -q $(ARGS)

## Benchmarks (bench/): writes bench/RESULTS.md. Needs the bench extra (pythae).
bench: $(STAMP)
	$(BIN)/python -m pip install -e '.[bench]' -q
	$(BIN)/python bench/run_all.py $(ARGS)

## A small local Hydra multirun sweep (two kappa values, a short budget).
sweep: $(STAMP)
	$(BIN)/python -m vhp_lightning.train -m optim.kappa=0.02,0.05 trainer.max_steps=200 \
		test=false $(ARGS)

## ruff, then mypy over the package as it installs: `callbacks/` and `datamodules/` are
## `vhp_lightning.callbacks` / `.datamodules` (pyproject package-dir), which mypy cannot map by
## itself, so it checks a tree of links in that layout (build/typecheck/).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf build/typecheck && mkdir -p build/typecheck/vhp_lightning
	for p in vhp_lightning/* callbacks datamodules; do ln -s "$(CURDIR)/$$p" build/typecheck/vhp_lightning/; done
	cd build/typecheck && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p vhp_lightning

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf outputs multirun .pytest_cache build/typecheck
