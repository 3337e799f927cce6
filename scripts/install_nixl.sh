#!/usr/bin/env bash
# Installs NIXL, the default communicator's library, from its PyPI wheel into
# a project-local prefix that git ignores: .deps/nixl/site-packages (the
# wheel's own layout: .nixl_cu13.mesonpy.libs/ holds libnixl_capi.so and
# libnixl.so, nixl_cu13.libs/ holds UCX, the UCX plugin under nixl/ and UCX's
# modules under ucx/). eplb finds it there at run time without loading it.
#
# Only the wheel is downloaded (pip download --no-deps): its declared
# dependencies are torch and numpy, which eplb does not need and must never
# pull. The wheel is pinned by version and checked by its sha256. Where PyPI
# cannot be reached, this says so and returns 0: the communicator rule then
# picks gloo, as it should where NIXL is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."

version=1.5.1
wheel=nixl_cu13-${version}-cp311-cp311-manylinux_2_28_x86_64.whl
sha256=6279834382eeabab60bfc2fe62c2363cda3bf520278bbd4a007932cc76073de5
prefix=${EPLB_NIXL_PREFIX:-.deps/nixl}
site=$prefix/site-packages
stamp=$site/.eplb-installed-$version

if [ -f "$stamp" ]; then exit 0; fi
if [ "$(uname -m)" != x86_64 ]; then
  echo "install_nixl: no pinned NIXL wheel for $(uname -m); the rule will pick gloo" >&2
  exit 0
fi

python=/usr/bin/python3
[ -x "$python" ] || python=python3
download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
echo "install_nixl: downloading nixl-cu13 $version (wheel only, no dependencies)"
if ! timeout 600 "$python" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp --platform manylinux_2_28_x86_64 \
    --dest "$download" "nixl-cu13==$version" >"$download/pip.log" 2>&1; then
  echo "install_nixl: could not download nixl-cu13 $version from PyPI; NIXL is not installed" \
       "and the communicator rule will pick gloo. pip said:" >&2
  tail -n 3 "$download/pip.log" >&2
  exit 0
fi
got=$(sha256sum "$download/$wheel" | cut -d' ' -f1)
if [ "$got" != "$sha256" ]; then
  echo "install_nixl: $wheel has sha256 $got, expected $sha256; not installed" >&2
  exit 1
fi

# Unpack beside the final folder, then rename: never a half-unpacked prefix.
mkdir -p "$prefix"
staging=$(mktemp -d "$prefix/.unpack.XXXXXX")
trap 'rm -rf "$download" "$staging"' EXIT  # an unpack that fails leaves nothing behind
"$python" -m zipfile -e "$download/$wheel" "$staging"
# The UCX plugin finds NIXL's own libraries because libnixl.so is loaded
# before it: give ldd the same view.
for lib in "$staging"/.nixl_cu13.mesonpy.libs/libnixl_capi.so \
           "$staging"/nixl_cu13.libs/nixl/libplugin_UCX.so; do
  if missing=$(LD_LIBRARY_PATH="$staging/.nixl_cu13.mesonpy.libs" ldd "$lib" | grep "not found"); then
    echo "install_nixl: $lib needs libraries this machine lacks:" >&2
    echo "$missing" >&2
    rm -rf "$staging"
    exit 1
  fi
done
touch "$staging/.eplb-installed-$version"
rm -rf "$site"
mv "$staging" "$site"
echo "install_nixl: NIXL $version in $site"
