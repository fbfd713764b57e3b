# make test | make demo   create .venv on first use (pip wheels only, ROS 2 Jazzy included)
# make msgs               (re)build msg/ interfaces into the venv (tools/build_msgs.sh)
# make clean              remove build outputs;  make distclean  also removes .venv
# The ROS wheels are cp311: PYTHON must be a Python 3.11 with headers (python3.11-dev).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PIP := $(VENV)/bin/pip
# e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" for CPU-only torch
TORCH_PIP_ARGS ?=

.PHONY: venv msgs demo test clean distclean

# Stamp target: redo the (idempotent) install whenever a requirement file changes.
$(VENV)/.stamp: requirements.txt requirements-ros.txt requirements-dev.txt setup.py
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "pip>=23" "setuptools>=64" wheel
	$(PIP) install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	$(PIP) install -q -r requirements.txt -r requirements-ros.txt -r requirements-dev.txt
	# deps come from the requirement files; no isolation: build with the venv's setuptools
	$(PIP) install -q --no-deps --no-build-isolation -e .
	tools/build_msgs.sh
	touch $@

venv: $(VENV)/.stamp

# Cheap when up to date; picks up edits to msg/*.msg.
msgs: $(VENV)/.stamp
	tools/build_msgs.sh

demo: msgs
	$(VENV)/bin/kdbts demo

test: msgs
	$(VENV)/bin/python -m pytest -q test

clean:
	rm -rf build install log demo_out *.egg-info kdbts_ros/msg kdbts_ros/*_s__rosidl_typesupport_*.so
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
