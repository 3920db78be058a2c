# grainflow: two commands set everything up.
#   make run    create .venv if missing, install, run the default workflow, build the report
#   make test   the same set-up, then the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
STAMP := $(VENV)/.installed

.PHONY: run test report lint clean-results readme-figures

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	$(MAKE) report

report: $(STAMP)
	$(BIN)/snakemake --cores 1 --report results/report.html
	@echo "report: results/report.html"

test: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

clean-results:
	rm -rf results logs benchmarks/rules .snakemake

# the PNGs the README shows, regenerated from a finished run
README_FIGURES := synthetic_examples overlays_grains_unet real_overlays_nist_steel anatomy_feature_hierarchy
readme-figures: run
	mkdir -p docs
	for f in $(README_FIGURES); do cp results/figures/$$f.png docs/$$f.png; done
