#!/usr/bin/env bash
# The packaging path end to end, as the README gives it: a venv over Debian's
# python3 (--system-site-packages: python3-torch, python3-numpy, python3-pytest),
# scikit-build-core pinned from PyPI without dependencies, then
# `pip install --no-deps --no-build-isolation .` from this checkout. The venv
# and the wheel's build folder live under BUILD_DIR and are reused, so a
# second run rebuilds only what changed. Then, outside the checkout, the
# installed package: its files, what its extension exports, its vLLM entry
# point, and the policy, vLLM, SGLang and bad-input suites against it.
#
#   tests/python/check_pip_install.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/../.." && pwd)
venv="$build/python-venv"
if [ ! -x "$venv/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
py="$venv/bin/python"
if ! "$py" -c 'import scikit_build_core' 2>/dev/null; then
  "$py" -m pip install -q --no-deps scikit-build-core==0.10.7
fi
"$py" -m pip install -q --no-deps --no-build-isolation --config-settings=build-dir="$build/python-wheel" "$src"

cd "$(mktemp -d "${TMPDIR:-/tmp}/eplb-pip-XXXXXX")"
trap 'rm -rf "$PWD"' EXIT
pkg=$("$py" -c 'import eplb, os; print(os.path.dirname(eplb.__file__))')
case "$pkg" in
  "$venv"/*) ;;
  *) echo "check_pip_install: eplb imported from $pkg, not from the venv" >&2; exit 1 ;;
esac
for f in __init__.py vllm.py sglang.py balancer.py _eplb.pyi py.typed; do
  [ -e "$pkg/$f" ] || { echo "check_pip_install: $f not installed" >&2; exit 1; }
done
ext=$(ls "$pkg"/_eplb*.so)
exports=$(nm -D --defined-only "$ext" | awk '{print $3}')
if [ "$exports" != "PyInit__eplb" ]; then
  echo "check_pip_install: the extension exports more than PyInit__eplb:" >&2
  echo "$exports" | head >&2
  exit 1
fi
"$py" - <<'PY'
import importlib.metadata as md
eps = [ep for ep in md.entry_points(group="vllm.general_plugins") if ep.name == "eplb"]
assert len(eps) == 1 and eps[0].value == "eplb.vllm:register", eps
import eplb
assert eplb.policies()[0] == "deepseek"
print(f"check_pip_install: eplb {eplb.__version__} installed (CUDA: {eplb.built_with_cuda})")
PY
EPLB_SOURCE_DIR="$src" "$py" -m pytest -q -p no:cacheprovider "$src/tests/python/test_policy.py" \
  "$src/tests/python/test_vllm.py" "$src/tests/python/test_sglang.py" "$src/tests/python/test_bad_input.py"
