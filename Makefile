# grainflow: two commands set everything up.
#   make run    create .venv if missing, install, run the default workflow, build the report,
#               print where it is and its key numbers
#   make test   the same set-up, then the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
STAMP := $(VENV)/.installed

.PHONY: run test report lint clean-results readme-figures browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip || echo "pip not upgraded; going on"
	@# a first install (torch with its CUDA libraries) fills about 6 GiB: say so before pip runs out
	@$(BIN)/python -c "import torch" 2>/dev/null || { free=$$(df -Pk . | awk 'NR==2 {print $$4}'); \
	  [ "$$free" -ge 7340032 ] 2>/dev/null || echo "warning: $$((free / 1048576)) GiB free on this disk;" \
	  "the first set-up needs about 7 GiB (free some space if pip fails)"; }
	@# a dropped connection while downloading is retried, up to three tries in all
	for try in 1 2 3; do $(BIN)/python -m pip install --quiet -e '.[test]' && break; \
	  [ $$try = 3 ] && exit 1; echo "pip install failed (try $$try of 3); retrying in 10 s"; sleep 10; done
	touch $@

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	@$(MAKE) --no-print-directory report

# the report, then where it is and the key numbers (a missing table is named, never an error)
report: $(STAMP)
	$(BIN)/snakemake --cores 1 --report results/report.html
	-@$(BIN)/python -m grainflow.report.summary results

test: $(STAMP) browser
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest

browser:  # headless Chromium for tests/test_report.py (Debian's package; needs root)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get -q -y update && DEBIAN_FRONTEND=noninteractive \
	  apt-get -q -y install --no-install-recommends chromium fonts-liberation; } || \
	  echo "no chromium: the browser tests of the report will skip"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

clean-results:
	rm -rf results logs benchmarks/rules .snakemake

# the PNGs the README shows, regenerated from a finished run
README_FIGURES := synthetic_examples overlays_grains_unet real_overlays_nist_steel anatomy_feature_hierarchy diffraction_forms
readme-figures: run
	mkdir -p docs
	for f in $(README_FIGURES); do cp results/figures/$$f.png docs/$$f.png; done
