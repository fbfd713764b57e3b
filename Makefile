# make test | make demo   create .venv on first use (pip wheels only, ROS 2 Jazzy included)
# make lint               ruff check, ruff format --check, mypy and vulture (configured in pyproject.toml)
# make msgs               (re)build msg/ interfaces into the venv (tools/build_msgs.sh)
# make benchmark          procedural benchmark: data, BTS/MVBTS/KDBTS training (CPU, about 1 h 20 min), evaluation
# make real               the embedded default: KDBTS on the shared real KITTI frames plus procedural streets (docs/real)
# make real-eval          held-out real frames: both embedded networks beside image-free priors -> docs/real
# make clean              remove build outputs;  make distclean  also removes .venv
# The ROS wheels are cp311: PYTHON must be a Python 3.11 with headers (python3.11-dev).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PIP := $(VENV)/bin/pip
# e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" for CPU-only torch
TORCH_PIP_ARGS ?=

.PHONY: venv msgs lint demo test benchmark real real-eval clean distclean

# Stamp target: redo the (idempotent) install whenever a requirement file or the package's metadata changes.
$(VENV)/.stamp: requirements.txt requirements-ros.txt requirements-dev.txt pyproject.toml setup.py
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	# setuptools>=77: pyproject.toml's license is an SPDX expression
	$(PIP) install -q "pip>=23" "setuptools>=77" wheel
	$(PIP) install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	$(PIP) install -q -r requirements.txt -r requirements-ros.txt -r requirements-dev.txt
	# deps come from the requirement files; no isolation: build with the venv's setuptools
	$(PIP) install -q --no-deps --no-build-isolation -e .
	VENV=$(abspath $(VENV)) tools/build_msgs.sh
	touch $@

venv: $(VENV)/.stamp

# Cheap when up to date; picks up edits to msg/*.msg.
msgs: $(VENV)/.stamp
	VENV=$(abspath $(VENV)) tools/build_msgs.sh

# The tools and their settings come from the venv and pyproject.toml; kdbts_ros/msg (rosidl output) is excluded.
lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/vulture

demo: msgs
	$(VENV)/bin/kdbts demo

test: msgs
	$(VENV)/bin/python -m pytest -q test

# Training seeds 0-23 and held-out seeds 1000-1005 never overlap; results land in docs/benchmark.
benchmark: msgs
	$(VENV)/bin/kdbts synth data/synth_train --seed-range 0 24 --frames 60
	$(VENV)/bin/kdbts synth data/synth_test --seed-range 1000 1006 --frames 40
	$(VENV)/bin/kdbts train --config config/train_bts_synth.yaml --out runs/bts --restart --max-minutes 58 & \
	$(VENV)/bin/kdbts train --config config/train_mvbts_synth.yaml --out runs/mvbts --restart --max-minutes 58; wait
	$(VENV)/bin/kdbts train --config config/train_kdbts_synth.yaml --out runs/kdbts --restart --max-minutes 14
	$(VENV)/bin/kdbts eval data/synth_test --out docs/benchmark --model BTS=runs/bts/checkpoint.safetensors \
	  MVBTS=runs/mvbts/checkpoint.safetensors KDBTS=runs/kdbts/checkpoint.safetensors

# The embedded default in two stages, the second continuing the first: the shared KITTI odometry 00/01/07
# and streets 0-11, then Depth Hints on the same frames (runs/kdbts_hints/checkpoint.safetensors is the
# default). KITTI raw 0052 and KITTI-360 are held out. Resumable: a second 'make real' continues each stage
# from runs/<stage>/state.pt (a finished stage returns at once). docs/real/README.md.
real: msgs
	test -d data/synth_real || $(VENV)/bin/kdbts synth data/synth_real --seed-range 0 12 --frames 40
	$(VENV)/bin/kdbts train --config config/train_kdbts_real.yaml --out runs/kdbts_real
	$(VENV)/bin/kdbts train --config config/train_kdbts_hints.yaml --out runs/kdbts_hints

# Depth against velodyne (KITTI raw 0052, KITTI-360 sample) and KITTI-360 occupancy, metric and median-scaled.
S := ../shared/data/kitti
RAW_0052 := $(S)/SFND_3D_Object_Tracking/images/KITTI/2011_09_26 --dataset raw \
  --calib $(S)/python_camera_library/test_data/kitti/2011_09_26_calib/2011_09_26 \
  --poses $(S)/BehindTheScenes/datasets/kitti_raw/orb-slam_poses/2011_09_26/2011_09_26_drive_0052_sync.txt
K360 := $(S)/Lidar_Object_Detection/KITTI360_sample --dataset kitti360 --sequence 2013_05_28_drive_0000_sync --occ-scans 1
MODELS := --model real=kdbts_ros/weights/kdbts_real.safetensors previous=runs/kdbts_real_previous.safetensors \
  synth=kdbts_ros/weights/kdbts_synth.safetensors
# the embedded default before issue 25 retrained it, from the history (for the tables' "previous" rows)
PREVIOUS := b7e3829
runs/kdbts_real_previous.safetensors:
	mkdir -p runs && git show $(PREVIOUS):kdbts_ros/weights/kdbts_real.safetensors > $@

real-eval: msgs runs/kdbts_real_previous.safetensors
	$(VENV)/bin/kdbts eval $(RAW_0052) $(MODELS) --priors --stride 1 --out docs/real/raw_0052
	$(VENV)/bin/kdbts eval $(RAW_0052) $(MODELS) --priors --stride 1 --median-scaling --out docs/real/raw_0052_median
	$(VENV)/bin/kdbts eval $(K360) $(MODELS) --priors --stride 1 --out docs/real/kitti360
	$(VENV)/bin/kdbts eval $(K360) $(MODELS) --priors --stride 1 --median-scaling --out docs/real/kitti360_median

clean:
	rm -rf build install log demo_out *.egg-info .ruff_cache .mypy_cache kdbts_ros/msg kdbts_ros/*_s__rosidl_typesupport_*.so
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
