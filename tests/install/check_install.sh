#!/usr/bin/env bash
# Installs the build in BUILD_DIR into a temporary prefix, builds the
# consumer in tests/install/consumer against it twice -- with CMake's
# find_package(eplb) and with pkg-config -- runs both, and checks that
# libeplb.so exports only eplb's symbols (and the C++ runtime's: std::
# template instances). Exit 0 when all hold.
set -euo pipefail
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/eplb-install-XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"

cmake --install "$build" --prefix "$prefix" >/dev/null
lib=$(find "$prefix" -name 'libeplb.so' | head -1)
[ -n "$lib" ] || { echo "check_install: no libeplb.so under $prefix" >&2; exit 1; }
for f in include/eplb/balancer.h include/eplb/export.h bin/eplb; do
  [ -e "$prefix/$f" ] || { echo "check_install: $f not installed" >&2; exit 1; }
done

# 1. CMake package.
cmake -S "$here/consumer" -B "$work/cmake-build" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cmake-build" >/dev/null
LD_LIBRARY_PATH="$(dirname "$lib")" "$work/cmake-build/consumer" | tee "$work/out.txt"
grep -q "consumer: OK" "$work/out.txt"

# 2. pkg-config.
pc_dir=$(dirname "$(find "$prefix" -name eplb.pc | head -1)")
flags=$(PKG_CONFIG_PATH="$pc_dir" pkg-config --cflags --libs eplb)
# shellcheck disable=SC2086
g++ "$here/consumer/main.cc" -o "$work/consumer-pc" $flags
LD_LIBRARY_PATH="$(dirname "$lib")" "$work/consumer-pc" | grep -q "consumer: OK"

# 3. Exports: every defined dynamic symbol is eplb's or the C++ runtime's.
foreign=$(nm -D --defined-only "$lib" | awk '{print $3}' | c++filt |
  grep -vE '^(eplb::|typeinfo for eplb::|typeinfo name for eplb::|vtable for eplb::|VTT for eplb::|non-virtual thunk to eplb::|virtual thunk to eplb::|guard variable for eplb::)' |
  grep -vE '^([a-z ]+ )?(std::|__gnu_cxx::)|^(typeinfo for std::|typeinfo name for std::|vtable for std::|VTT for std::|guard variable for std::|__gnu_cxx::|operator (new|delete))' |
  grep -vE '^(_init|_fini|_edata|_end|__bss_start)$' || true)
if [ -n "$foreign" ]; then
  echo "check_install: libeplb.so exports symbols that are not eplb's:" >&2
  echo "$foreign" | head -20 >&2
  exit 1
fi
echo "check_install: OK ($(nm -D --defined-only "$lib" | wc -l) exported symbols, all eplb's or std::)"
