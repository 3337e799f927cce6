#!/usr/bin/env bash
# Packs the Python module eplb for a machine that has Python and torch but
# not this build's Debian libraries (such as a lent GPU machine: Python 3.12,
# torch 2.11, no Gloo, spdlog or fmt): the package built here for that
# machine's Python version (CUDA parts included where nvcc is here), its
# dist-info (the vLLM entry point), and the shared libraries it needs beyond
# glibc and libstdc++.
#
#   scripts/python_bundle.sh DIR [PYTHON]     # PYTHON: an interpreter of the target's version
#                                             # (headers needed; default: python3.12 on PATH or pyenv's)
#   source DIR/env.sh                         # on the target: PYTHONPATH and LD_LIBRARY_PATH
#   python3 -c 'import eplb; print(eplb.policies(), eplb.built_with_cuda)'
#
# The build folder is build-py<version> (EPLB_PY_BUNDLE_BUILD), Release.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/python_bundle.sh DIR [PYTHON]}
py=${2:-}
if [ -z "$py" ]; then  # the first python3.12 that runs (a pyenv shim may not)
  for candidate in $(command -v python3.12 || true) "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3; do
    if [ -x "$candidate" ] && "$candidate" -c '' 2>/dev/null; then py=$candidate; break; fi
  done
fi
if [ -z "$py" ] || ! "$py" -c '' 2>/dev/null; then
  echo "python_bundle: no Python interpreter to build for (give one: scripts/python_bundle.sh DIR PYTHON)" >&2
  exit 2
fi
version=$("$py" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
build=${EPLB_PY_BUNDLE_BUILD:-build-py$version}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$py" >/dev/null
cmake --build "$build" --target eplb_python
ext=$(ls "$build"/python/eplb/_eplb.cpython-"$version"-*.so)
rm -rf "$out"
mkdir -p "$out/site" "$out/lib"
out=$(realpath "$out")
cp -r "$build/python/eplb" "$build"/python/eplb-*.dist-info "$out/site/"
strip --strip-debug "$out/site/eplb/$(basename "$ext")"
ldd "$ext" | awk '/=> \// {print $3}' | sort -u |
  grep -vE '/(libc|libm|libgcc_s|libstdc\+\+|libpthread|libdl|librt)\.so' |
  while read -r lib; do cp -L "$lib" "$out/lib/"; done
cat >"$out/env.sh" <<'ENV'
# Source on the target: eplb on the path, its libraries found.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PYTHONPATH="$here/site${PYTHONPATH:+:$PYTHONPATH}"
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ENV
echo "python_bundle: eplb for Python ${version:0:1}.${version:1} in $out ($(du -sh "$out" | cut -f1))"
