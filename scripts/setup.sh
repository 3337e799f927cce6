#!/usr/bin/env bash
# Installs every Debian package eplb's build, tests, fuzzing and demo need.
# Idempotent and quick when everything is there (no apt-get at all then).
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libgloo-dev libhiredis-dev redis-server libssl-dev
  libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  pybind11-dev python3-dev python3-numpy
  python3-torch python3-venv python3-pytest python3-packaging python3-pathspec
  clang libclang-rt-14-dev
  python3-pip libssl3 zlib1g
  iproute2 util-linux
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# NIXL from its wheel (project-local, see the script); carries on without it.
bash "$(dirname "$0")/install_nixl.sh"
