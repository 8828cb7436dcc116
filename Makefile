# ovseg3d: `make demo` and `make test` each set a fresh machine up on first use (see README).
SHELL := /bin/bash
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python


SETUP_INPUTS := tools/setup.sh tools/minkowski_cuda_patches.py setup.py setup.cfg pyproject.toml \
	$(shell find ros2_ws/src/ovseg3d_interfaces ros2_ws/fallback -type f 2>/dev/null)
TEST_ENV := HF_HUB_OFFLINE=1 ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA

.PHONY: setup demo test test-slow test-all lint clean-venv

setup: $(VENV)/.setup/complete

$(VENV)/.setup/complete: $(SETUP_INPUTS)
	@OVSEG3D_VENV=$(VENV) bash tools/setup.sh
	@touch $@

demo: setup
	@$(TEST_ENV) $(VENV)/bin/ovseg3d demo --out $(CURDIR)/demo_out

test: setup
	@$(TEST_ENV) $(PY) -m pytest

test-slow: setup
	@$(TEST_ENV) $(PY) -m pytest -m slow; rc=$$?; \
	 if [ $$rc -eq 5 ]; then echo "no slow tests collected"; rc=0; fi; exit $$rc

test-all: setup
	@$(TEST_ENV) $(PY) -m pytest -m "slow or not slow"

lint: setup
	@$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)
