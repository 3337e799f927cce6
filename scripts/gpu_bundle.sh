#!/usr/bin/env bash
# Packs the GPU suite and the eplb tool for a GPU machine that has a CUDA
# driver but not this build's Debian libraries (such as a lent device
# machine): test binaries (debug info stripped), their ctest files, eplb, and
# the shared libraries they need beyond glibc and libstdc++.
#
#   scripts/gpu_bundle.sh DIR          # after scripts/build.sh
#   bash DIR/run_gpu_suite.sh          # on the GPU machine: ctest -L gpu, then eplb bench
#
# NIXL goes along where scripts/setup.sh installed it (DIR/nixl).
#
# On a GPU machine with the build itself, run the suite directly:
#   ctest --test-dir build -L gpu --output-on-failure
set -euo pipefail
cd "$(dirname "$0")/.."
build=$(realpath "${EPLB_BUILD_DIR:-build}")
out=${1:?usage: scripts/gpu_bundle.sh DIR}
rm -rf "$out"
mkdir -p "$out/build" "$out/lib"
out=$(realpath "$out")
for f in "$build"/gpu_*; do
  case "$f" in
    *.cmake) cp "$f" "$out/build/" ;;
    *) strip --strip-debug -o "$out/build/$(basename "$f")" "$f" ;;
  esac
done
strip --strip-debug -o "$out/build/eplb" "$build/eplb"
# The CPU benchmarks too: the GPU host's many cores measure what the 2-core
# CI box cannot (the migration executor's commit overlapping its transfers).
for b in migration_bench gloo_bench; do
  [ -x "$build/$b" ] && strip --strip-debug -o "$out/build/$b" "$build/$b"
done
grep -E '^#|gpu_' "$build/CTestTestfile.cmake" >"$out/build/CTestTestfile.cmake"
# Shared libraries from the build machine, except the C library and the
# compiler runtime, which the GPU machine has (newer).
find "$build" -maxdepth 1 -name 'gpu_*' -type f -executable -print0 |
  xargs -0 ldd "$build/eplb" "$build/migration_bench" | awk '/=> \// {print $3}' | sort -u |
  grep -vE '/(libc|libm|libgcc_s|libstdc\+\+|libpthread|libdl|librt)\.so' |
  while read -r lib; do cp -L "$lib" "$out/lib/"; done
# NIXL, where setup installed its wheel: the libraries the nixl communicator
# loads (C API, core, UCX plugin, UCX and its CMA and CUDA modules) and what
# they link, in the wheel's own layout so detection finds it as a wheel
# (run_gpu_suite.sh points EPLB_NIXL_DIR at it). About 40 MB of the wheel's 229.
site=$(realpath -m .deps/nixl/site-packages)  # absolute: ldd then prints absolute paths
if [ -d "$site/.nixl_cu13.mesonpy.libs" ]; then
  libs="$site/.nixl_cu13.mesonpy.libs" bundled="$site/nixl_cu13.libs"
  roots=("$libs/libnixl_capi.so" "$bundled/nixl/libplugin_UCX.so")
  for m in libuct_cma libuct_cuda libucm_cuda; do roots+=("$bundled/ucx/$m.so.0.0.0"); done
  { printf '%s\n' "${roots[@]}"
    LD_LIBRARY_PATH="$libs:$bundled" ldd "${roots[@]}" | awk '/=> \//{print $3}'; } |
    grep -F "$site/" | sort -u | while read -r f; do
      rel=${f#"$site"/}
      mkdir -p "$out/nixl/site-packages/$(dirname "$rel")"
      cp -L "$f" "$out/nixl/site-packages/$rel"
    done
  for f in "${roots[@]}"; do
    rel=${f#"$site"/}
    mkdir -p "$out/nixl/site-packages/$(dirname "$rel")"
    cp -L "$f" "$out/nixl/site-packages/$rel"
  done
fi
echo "$build" >"$out/build_dir"
cp scripts/run_gpu_suite.sh "$out/"
du -sh "$out"
