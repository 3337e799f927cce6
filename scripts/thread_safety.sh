#!/usr/bin/env bash
# Compiles the library's sources that use the annotated locks (util/mutex.h,
# directly or through a header of src/) with clang's thread-safety analysis,
# warnings as errors, syntax only (no objects): a member GUARDED_BY a mutex
# touched without it, a function that REQUIRES a lock or a thread's role
# called without it, fail here. Flags come from the build's
# compile_commands.json (CMAKE_EXPORT_COMPILE_COMMANDS is on).
#
#   scripts/thread_safety.sh [BUILD_DIR]      (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
if ! command -v clang++ >/dev/null; then
  echo "thread_safety: clang++ not found (scripts/setup.sh installs clang)" >&2
  exit 2
fi
if [ ! -f "$build/compile_commands.json" ]; then
  echo "thread_safety: no $build/compile_commands.json (configure the build first)" >&2
  exit 2
fi
/usr/bin/python3 - "$build/compile_commands.json" "${EPLB_JOBS:-2}" <<'PY'
import json, os, re, shlex, subprocess, sys
from concurrent.futures import ThreadPoolExecutor

commands, jobs = sys.argv[1], int(sys.argv[2])
root = os.getcwd()
src = os.path.join(root, "src")
include = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
memo = {}

def uses_annotations(path, seen=()):
    """True if the file includes util/mutex.h, itself or through src/ headers."""
    if path in memo:
        return memo[path]
    memo[path] = False  # include cycles end here
    try:
        text = open(path, encoding="utf-8").read()
    except OSError:
        return False
    found = False
    for name in include.findall(text):
        if name in ("util/mutex.h", "util/thread_annotations.h"):
            found = True
            break
        header = os.path.join(src, name)
        if os.path.isfile(header) and uses_annotations(header):
            found = True
            break
    memo[path] = found
    return found

entries = []
for e in json.load(open(commands)):
    f = os.path.abspath(os.path.join(e["directory"], e["file"]))
    if not f.startswith(src + os.sep) or not f.endswith(".cc") or not uses_annotations(f):
        continue
    args = e["arguments"] if "arguments" in e else shlex.split(e["command"])
    flags, skip = [], False
    for a in args[1:]:
        if skip:
            skip = False
        elif a in ("-o", "-MF", "-MT", "-MQ"):
            skip = True
        elif a in ("-c", f, e["file"]) or a.startswith("-MD") or a.startswith("-MMD"):
            continue
        else:
            flags.append(a)
    cmd = ["clang++", *flags, "-fsyntax-only", "-Wno-unknown-warning-option",
           "-Wthread-safety", "-Werror=thread-safety", f]
    entries.append((os.path.relpath(f, root), e["directory"], cmd))

def check(entry):
    name, directory, cmd = entry
    r = subprocess.run(cmd, cwd=directory, capture_output=True, text=True)
    return name, r.returncode, r.stderr

failed = 0
with ThreadPoolExecutor(max(1, jobs)) as pool:
    for name, rc, err in pool.map(check, entries):
        if rc != 0:
            failed += 1
            sys.stderr.write(f"thread_safety: {name}:\n{err}")
print(f"thread_safety: {len(entries)} annotated sources, {failed} failing")
sys.exit(1 if failed or not entries else 0)
PY
