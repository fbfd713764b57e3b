#!/usr/bin/env bash
# Build msg/*.msg with rosidl from the pip-installed ROS 2 Jazzy wheels in the venv
# (no system ROS) and make `from kdbts_ros.msg import DensityGrid` work in that
# venv next to the hand-written, editable-installed kdbts_ros package.
# Idempotent; an up-to-date run takes a few seconds.   Usage: tools/build_msgs.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PY=$VENV/bin/python
B=$ROOT/build/msgs
[ -x "$PY" ] || { echo "build_msgs: no venv at $VENV (run: make .venv/.stamp)" >&2; exit 1; }

# 1. The wheels' exported CMake targets name include dirs of the container they were
#    built in (/opt/python/cp311-cp311/{include/python3.11, .../numpy/_core/include});
#    CMake refuses to generate if they are missing. The venv is ours, so its copies of
#    those files are rewritten to this Python's headers and this venv's numpy: no root,
#    nothing written outside the checkout and the venv, and colcon builds in the venv work too.
PY_INC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
NP_INC=$("$PY" -c 'import numpy; print(numpy.get_include())')
[ -f "$PY_INC/Python.h" ] || { echo "build_msgs: Python.h not in $PY_INC (install the python3.11-dev package)" >&2; exit 1; }
mapfile -t built_elsewhere < <(grep -rlE '/opt/python/' "$VENV"/share/*/cmake 2>/dev/null || true)
if [ ${#built_elsewhere[@]} -gt 0 ]; then
  sed -i -E -e "s#/opt/python/[^;\" ]*/numpy/_core/include#$NP_INC#g" \
            -e "s#/opt/python/[^;\" ]*/include/python3\.[0-9]+#$PY_INC#g" "${built_elsewhere[@]}"
  if grep -rnE '/opt/python/' "${built_elsewhere[@]}" >&2; then
    echo "build_msgs: the wheels' CMake files name other paths under /opt/python (above); see tools/build_msgs.sh" >&2
    exit 1
  fi
fi

# 2. Configure from the checkout itself (CMakeLists.txt keeps the venv's include dirs, which
#    may lie inside it, out of the exported targets); from scratch if the cache belongs to
#    another checkout location.
export AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV PATH=$VENV/bin:$PATH
mkdir -p "$B"
grep -qs "^CMAKE_HOME_DIRECTORY:INTERNAL=$ROOT\$" "$B/build/CMakeCache.txt" || rm -rf "$B/build"
if [ ! -f "$B/build/CMakeCache.txt" ]; then
  cmake -S "$ROOT" -B "$B/build" -DKDBTS_MSGS_ONLY=ON -DBUILD_TESTING=OFF \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$B/install" \
    -DPython3_EXECUTABLE="$PY" -DPYTHON_EXECUTABLE="$PY" >"$B/configure.log" \
    || { cat "$B/configure.log"; exit 1; }
fi
cmake --build "$B/build" -j"$(nproc)" >"$B/build.log" || { tail -50 "$B/build.log"; exit 1; }
cmake --install "$B/build" >"$B/install.log"

# 3. Merge into the editable source tree: generated msg/ subpackage and the Python
#    extension modules (kdbts_ros_s__rosidl_typesupport_*.so) go into kdbts_ros/
#    (both gitignored); our own kdbts_ros/__init__.py is kept.
GEN=$B/install/lib/python$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')/site-packages/kdbts_ros
mkdir -p "$ROOT/kdbts_ros/msg"
cp -p "$GEN"/msg/*.py "$ROOT/kdbts_ros/msg/"
# `install` replaces a library by a new file, never rewriting one a running process has mapped
install -p -m 755 "$GEN"/kdbts_ros_s__rosidl_typesupport_*.so "$ROOT/kdbts_ros/"

# 4. The C libraries (libkdbts_ros__rosidl_*.so) go into $VENV/lib, where the
#    ros-jazzy wheels keep all their message libraries: the wheels' startup hook
#    (ros_wheels_bootstrapper.pth) re-execs Python with $VENV/lib on
#    LD_LIBRARY_PATH. An rpath (patchelf) is NOT enough: at publisher/subscription
#    creation rosidl_typesupport_c dlopen()s libkdbts_ros__rosidl_typesupport_fastrtps_c.so
#    by bare name from librcutils, which only LD_LIBRARY_PATH reaches (tested:
#    "Could not load library ... cannot open shared object file").
install -p -m 755 "$B"/install/lib/libkdbts_ros__*.so "$VENV/lib/"

# 5. tf2_msgs is not on PyPI, but the node subscribes to /tf with its TFMessage type:
#    build that one type (real definition, so DDS matches real ROS) straight into the
#    venv when no tf2_msgs is importable. A ROS install's own tf2_msgs wins.
if ! "$PY" -c 'import tf2_msgs.msg' 2>/dev/null; then
  T=$ROOT/build/tf2_msgs
  mkdir -p "$T" && rm -rf "$T/src" && cp -rp "$ROOT/tools/interfaces/tf2_msgs" "$T/src"
  cmake -S "$T/src" -B "$T/build" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$T/install" -DPython3_EXECUTABLE="$PY" -DPYTHON_EXECUTABLE="$PY" \
    >"$T/configure.log" || { cat "$T/configure.log"; exit 1; }
  cmake --build "$T/build" -j"$(nproc)" >"$T/build.log" || { tail -50 "$T/build.log"; exit 1; }
  cmake --install "$T/build" >"$T/install.log"
  SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  rm -rf "$SITE/tf2_msgs" && cp -rp "$T"/install/lib/python*/site-packages/tf2_msgs "$SITE/"
  install -p -m 755 "$T"/install/lib/libtf2_msgs__*.so "$VENV/lib/"
  echo "build_msgs: built stand-in tf2_msgs (TFMessage) into the venv"
fi

echo "build_msgs: kdbts_ros msgs up to date ($B)"
