#!/usr/bin/env bash
# Developer build: compiles fcmlc._core in place (python/fcmlc/_core*.so) so that
# `PYTHONPATH=python pytest` uses the working tree. Serialised with flock so that
# several shells can call it at once.
set -euo pipefail
cd "$(dirname "$0")/.."
exec 9>/tmp/fcmlc-devbuild.lock
flock 9
if [ ! -f build/dev/build.ninja ]; then
  cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" \
    -DPython_EXECUTABLE="$(command -v python)" >/dev/null
fi
cmake --build build/dev
# Replace the module atomically (copy, then rename): overwriting a loaded .so in place
# crashes processes that have it mapped (tests running in another shell).
for so in build/dev/_core*.so; do
  cp -f "$so" "python/fcmlc/.$(basename "$so").tmp"
  mv -f "python/fcmlc/.$(basename "$so").tmp" "python/fcmlc/$(basename "$so")"
done
